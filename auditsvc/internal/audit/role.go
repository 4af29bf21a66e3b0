package audit

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/lib/pq"
)

// RestrictRole takes UPDATE, DELETE and TRUNCATE on schema's audit log from
// role (the service's own PostgreSQL role), leaving it INSERT and SELECT.
// admin must own the table or be a superuser; `up` calls it after the
// service's migrations ran. It is safe to run again.
//
// The table's owner can grant itself the privileges back, which is why the
// append-only trigger exists too: it refuses the change whoever asks.
func RestrictRole(ctx context.Context, admin *sql.DB, role, schema string) error {
	stmt := "REVOKE UPDATE, DELETE, TRUNCATE ON TABLE " + pq.QuoteIdentifier(schema) + ".audit_log FROM " + pq.QuoteIdentifier(role)
	if _, err := admin.ExecContext(ctx, stmt); err != nil {
		return fmt.Errorf("restrict role %q on %s.audit_log: %w", role, schema, err)
	}
	return nil
}
