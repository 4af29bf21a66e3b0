-- ListUsers' text filters need pg_trgm (trigram GIN indexes for substrings).
-- It goes into public, not this service's schema, and the operator class is
-- named with that schema because the service's search_path holds only its own.
-- A role that owns only its schema may not create an extension: the platform
-- creates it beforehand as the database's administrator, and IF NOT EXISTS
-- then checks no privilege. The advisory lock serialises schemas migrating
-- at once on one database (tests do), which IF NOT EXISTS alone does not:
-- the loser of that race fails on pg_extension's unique index.
SELECT pg_advisory_xact_lock(hashtext('portcullis:create extension pg_trgm'));
CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;
-- Create index "user_display_name_trgm" to table: "users"
CREATE INDEX "user_display_name_trgm" ON "users" USING gin ("display_name" public.gin_trgm_ops) WHERE (deleted_at IS NULL);
-- Create index "user_email_prefix" to table: "users"
CREATE INDEX "user_email_prefix" ON "users" ("email" varchar_pattern_ops) WHERE (deleted_at IS NULL);
-- Create index "user_email_trgm" to table: "users"
CREATE INDEX "user_email_trgm" ON "users" USING gin ("email" public.gin_trgm_ops) WHERE (deleted_at IS NULL);
