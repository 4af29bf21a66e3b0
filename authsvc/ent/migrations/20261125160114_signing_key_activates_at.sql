-- Modify "signing_keys" table
ALTER TABLE "signing_keys" ADD COLUMN "activates_at" timestamptz NULL;
