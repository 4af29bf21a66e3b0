-- Drop index "user_created_at_id" from table: "users"
DROP INDEX "user_created_at_id";
-- Drop index "user_status" from table: "users"
DROP INDEX "user_status";
-- Create index "user_created_at_id" to table: "users"
CREATE INDEX "user_created_at_id" ON "users" ("created_at", "id") WHERE (deleted_at IS NULL);
-- Create index "user_status_created_at_id" to table: "users"
CREATE INDEX "user_status_created_at_id" ON "users" ("status", "created_at", "id") WHERE (deleted_at IS NULL);
