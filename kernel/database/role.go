package database

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/lib/pq"
)

// EnsureRole makes role a login role with password that owns schema and can
// use nothing else: the least privilege a service needs to run its own
// migrations and queries. It creates the role and the schema when missing,
// updates the password otherwise, and is safe to run again. admin must be a
// connection with the right to create roles (`up` and the tests use the
// local superuser).
//
// Other services' schemas are not readable by the role, because Portcullis
// creates every schema without granting USAGE to PUBLIC.
func EnsureRole(ctx context.Context, admin *sql.DB, role, password, schema string) error {
	for what, name := range map[string]string{"role": role, "schema": schema} {
		if !schemaName.MatchString(name) {
			return fmt.Errorf("ensure role %q: %s %q is not a lower-case identifier", role, what, name)
		}
	}
	quotedRole := pq.QuoteIdentifier(role)
	var exists bool
	if err := admin.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, role).Scan(&exists); err != nil {
		return fmt.Errorf("ensure role %q: %w", role, err)
	}
	verb := "CREATE"
	if exists {
		verb = "ALTER"
	}
	// Passwords cannot be bind parameters in CREATE ROLE; quote them as a
	// literal so no character can end the statement.
	stmts := []string{
		verb + " ROLE " + quotedRole + " LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD " + pq.QuoteLiteral(password),
		"CREATE SCHEMA IF NOT EXISTS " + pq.QuoteIdentifier(schema) + " AUTHORIZATION " + quotedRole,
		"ALTER SCHEMA " + pq.QuoteIdentifier(schema) + " OWNER TO " + quotedRole,
		"REVOKE ALL ON SCHEMA public FROM " + quotedRole,
	}
	for _, stmt := range stmts {
		if _, err := admin.ExecContext(ctx, stmt); err != nil {
			// The statement holds the password; name only the operation.
			return fmt.Errorf("ensure role %q for schema %q: %w", role, schema, err)
		}
	}
	return nil
}
