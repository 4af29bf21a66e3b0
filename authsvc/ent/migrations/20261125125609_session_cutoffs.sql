-- Create "session_cutoffs" table
CREATE TABLE "session_cutoffs" ("id" character varying NOT NULL, "ended_before" timestamptz NOT NULL, PRIMARY KEY ("id"));
