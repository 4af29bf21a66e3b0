-- Create "audit_log" table
CREATE TABLE "audit_log" ("id" uuid NOT NULL, "sequence" bigint NOT NULL, "time" timestamptz NOT NULL, "record_time" timestamptz NOT NULL, "actor_type" smallint NOT NULL, "actor_id" character varying NOT NULL, "action" character varying NOT NULL, "target" character varying NOT NULL, "outcome" smallint NOT NULL, "source_ip" character varying NOT NULL, "user_agent" character varying NOT NULL, "request_id" character varying NOT NULL, "metadata" jsonb NOT NULL, "idempotency_key" character varying NOT NULL, "previous_hash" bytea NOT NULL, "hash" bytea NOT NULL, PRIMARY KEY ("id"));
-- Create index "auditlog_action" to table: "audit_log"
CREATE INDEX "auditlog_action" ON "audit_log" ("action" text_pattern_ops);
-- Create index "auditlog_actor_id_sequence" to table: "audit_log"
CREATE INDEX "auditlog_actor_id_sequence" ON "audit_log" ("actor_id", "sequence");
-- Create index "auditlog_idempotency_key" to table: "audit_log"
CREATE UNIQUE INDEX "auditlog_idempotency_key" ON "audit_log" ("idempotency_key");
-- Create index "auditlog_request_id_sequence" to table: "audit_log"
CREATE INDEX "auditlog_request_id_sequence" ON "audit_log" ("request_id", "sequence");
-- Create index "auditlog_sequence" to table: "audit_log"
CREATE UNIQUE INDEX "auditlog_sequence" ON "audit_log" ("sequence");
-- Create index "auditlog_target_sequence" to table: "audit_log"
CREATE INDEX "auditlog_target_sequence" ON "audit_log" ("target", "sequence");
-- Create index "auditlog_time" to table: "audit_log"
CREATE INDEX "auditlog_time" ON "audit_log" ("time");
