-- Modify "totp_credentials" table
ALTER TABLE "totp_credentials" ADD COLUMN "failed_attempts" bigint NOT NULL DEFAULT 0, ADD COLUMN "failure_window_start" timestamptz NULL, ADD COLUMN "locked_until" timestamptz NULL;
