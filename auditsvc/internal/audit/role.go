package audit

import (
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"

	"entgo.io/ent/dialect"
	"github.com/lib/pq"

	"portcullis.dev/kernel/database"
	"portcullis.dev/kernel/logging"

	"portcullis.dev/auditsvc/ent"
)

// Open is the service's start-up on its database: it opens the pool on
// cfg.Schema, applies the migrations and then [RestrictOwnRole], so the role
// the service runs as can never change the log it has just created. The
// caller closes the returned client.
func Open(ctx context.Context, cfg database.Config, logger *slog.Logger) (*database.Client[*ent.Client], error) {
	db, err := database.NewEntClient(ctx, cfg, ent.Migrations(),
		func(d dialect.Driver) *ent.Client { return ent.NewClient(ent.Driver(d)) }, database.WithLogger(logger))
	if err != nil {
		return nil, err
	}
	if err := RestrictOwnRole(ctx, db.DB, db.Schema, logger); err != nil {
		_ = db.Close(ctx)
		return nil, err
	}
	return db, nil
}

// changePrivileges are what the service's role must not hold on the log.
var changePrivileges = []string{"UPDATE", "DELETE", "TRUNCATE"}

// RestrictOwnRole takes UPDATE, DELETE and TRUNCATE on schema's audit log
// from the role db connects as (CURRENT_USER), leaving it INSERT and SELECT.
// The platform makes each service's role the owner of its schema, and so of
// the table its migrations create; an owner may revoke its own privileges,
// so no administrator has to run anything after a deployment. It is safe to
// run again, and by several replicas starting at once.
//
// A superuser bypasses privileges: then the REVOKE changes nothing that
// matters, and it says so at info level; only the append-only trigger
// protects the log. Privileges the role still holds afterwards through
// another role (a grant to PUBLIC or to a role it is a member of) are
// logged as a warning: only whoever granted them can take them back.
//
// The owner could grant itself the privileges again and disable the
// trigger, which is why the chain exists: VerifyChain and `auditsvc verify`
// find what was changed, up to an anchor kept outside the database.
func RestrictOwnRole(ctx context.Context, db *sql.DB, schema string, logger *slog.Logger) error {
	logger = logging.OrDiscard(logger)
	table := pq.QuoteIdentifier(schema) + ".audit_log"
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("restrict own role on %s.audit_log: begin: %w", schema, err)
	}
	defer func() { _ = tx.Rollback() }() // a no-op after Commit
	// Concurrent GRANT or REVOKE on one table can fail with "tuple
	// concurrently updated"; replicas starting together take turns.
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, restrictLockKey(schema)); err != nil {
		return fmt.Errorf("restrict own role on %s.audit_log: lock: %w", schema, err)
	}
	var (
		role      string
		superuser bool
	)
	if err := tx.QueryRowContext(ctx, `SELECT current_user, current_setting('is_superuser') = 'on'`).Scan(&role, &superuser); err != nil {
		return fmt.Errorf("restrict own role on %s.audit_log: who am I: %w", schema, err)
	}
	if _, err := tx.ExecContext(ctx, `REVOKE `+strings.Join(changePrivileges, ", ")+` ON TABLE `+table+` FROM CURRENT_USER`); err != nil {
		return fmt.Errorf("restrict role %q on %s.audit_log: %w", role, schema, err)
	}
	if superuser {
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("restrict role %q on %s.audit_log: commit: %w", role, schema, err)
		}
		logger.InfoContext(ctx, "the audit service runs as a superuser, which bypasses privileges: only the append-only trigger protects the log; run it as its own role",
			"role", role, "schema", schema)
		return nil
	}
	var kept []string
	for _, priv := range changePrivileges {
		var has bool
		if err := tx.QueryRowContext(ctx, `SELECT has_table_privilege(current_user, $1, $2)`, table, priv).Scan(&has); err != nil {
			return fmt.Errorf("restrict role %q on %s.audit_log: check %s: %w", role, schema, priv, err)
		}
		if has {
			kept = append(kept, priv)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("restrict role %q on %s.audit_log: commit: %w", role, schema, err)
	}
	if len(kept) > 0 {
		logger.WarnContext(ctx, "the audit service's role may still change the log through another role's grant; only the append-only trigger stops it",
			"role", role, "schema", schema, "privileges", strings.Join(kept, ","))
	}
	return nil
}

// restrictLockKey serialises RestrictOwnRole per schema, apart from the
// chain's lock so appends never wait for it.
func restrictLockKey(schema string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("portcullis:audit:restrict:" + schema))
	return int64(h.Sum64())
}
