-- Modify "audit_log" table. Edited by hand: NOT VALID, so that adding the
-- check takes no scan of the whole log under an exclusive lock (Record
-- would wait for it) and does not fail on rows already there. New rows are
-- checked; VerifyChain finds a row below sequence 1 already there.
ALTER TABLE "audit_log" ADD CONSTRAINT "audit_log_sequence_positive" CHECK (sequence > 0) NOT VALID;
