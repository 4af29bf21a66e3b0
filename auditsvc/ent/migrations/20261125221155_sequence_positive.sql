-- Modify "audit_log" table
ALTER TABLE "audit_log" ADD CONSTRAINT "audit_log_sequence_positive" CHECK (sequence > 0);
