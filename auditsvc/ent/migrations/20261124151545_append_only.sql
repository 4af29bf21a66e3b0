-- Hand-written (Ent cannot describe triggers): make audit_log append-only.
-- Any UPDATE, DELETE or TRUNCATE fails, whoever runs it, including the
-- table's owner; only someone allowed to ALTER TABLE ... DISABLE TRIGGER
-- (the owner or a superuser) could get around it, and VerifyChain then
-- finds what they changed. After editing this file run `go run ./rehash`.
CREATE FUNCTION "audit_log_refuse_change"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END;
$$;
-- Refuse UPDATE and DELETE of any row.
CREATE TRIGGER "audit_log_append_only" BEFORE UPDATE OR DELETE ON "audit_log"
  FOR EACH ROW EXECUTE FUNCTION "audit_log_refuse_change"();
-- Refuse TRUNCATE, which row triggers do not see.
CREATE TRIGGER "audit_log_no_truncate" BEFORE TRUNCATE ON "audit_log"
  FOR EACH STATEMENT EXECUTE FUNCTION "audit_log_refuse_change"();
