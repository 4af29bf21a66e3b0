package ent_test

import (
	"net/url"
	"testing"

	"entgo.io/ent/dialect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/identitysvc/ent"
	"portcullis.dev/identitysvc/ent/migrate"
	"portcullis.dev/identitysvc/ent/user"
	"portcullis.dev/kernel/config"
	"portcullis.dev/kernel/database"
	"portcullis.dev/kernel/kerneltest"
)

// TestMigrationsMatchSchema replays the migrations into an empty schema and
// compares the result with the Ent schema: CI fails when someone changes
// one without the other.
func TestMigrationsMatchSchema(t *testing.T) {
	t.Parallel()
	url, _ := kerneltest.Postgres(t)
	require.NoError(t, database.CheckMigrations(t.Context(), url, ent.Migrations(), migrate.Tables))
}

// TestMigrationsRunAsServiceRole migrates a schema the way the platform
// runs the service: as a role that owns only that schema, may not create
// extensions and has no search_path beyond its schema, once the
// administrator has created pg_trgm (as the platform does before starting
// the services).
func TestMigrationsRunAsServiceRole(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL, admin := kerneltest.Postgres(t)
	// The migration's own statement, run as the administrator, under the
	// migration's lock so that it cannot race a migration of another test.
	tx, err := admin.BeginTx(ctx, nil)
	require.NoError(t, err)
	_, err = tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext('portcullis:create extension pg_trgm'))`)
	require.NoError(t, err)
	_, err = tx.ExecContext(ctx, `CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public`)
	require.NoError(t, err)
	require.NoError(t, tx.Commit())

	role := kerneltest.RoleName(t) // before SchemaName: the schema is dropped first
	schema := kerneltest.SchemaName(t)
	require.NoError(t, database.EnsureRole(ctx, admin, role, "pw-"+role, schema))
	var super, createDB bool
	require.NoError(t, admin.QueryRowContext(ctx, `SELECT rolsuper, has_database_privilege($1, current_database(), 'CREATE') FROM pg_roles WHERE rolname = $1`, role).Scan(&super, &createDB))
	require.False(t, super)
	require.False(t, createDB, "the role could create the extension itself")

	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	u.User = url.UserPassword(role, "pw-"+role)
	db, err := database.NewEntClient(ctx, database.Config{DSN: config.DSN(u.String()), Schema: schema},
		ent.Migrations(), func(d dialect.Driver) *ent.Client { return ent.NewClient(ent.Driver(d)) })
	require.NoError(t, err, "the service's role cannot run the migrations")
	t.Cleanup(func() { _ = db.Close(t.Context()) })

	// The trigram indexes are there and usable by the role.
	var indexes []string
	// Not pg_indexes: it may read the definition of every index in the
	// database before filtering by schema, and other tests drop theirs
	// meanwhile ("could not open relation with OID"). This schema's
	// indexes are found first, and only theirs are read.
	rows, err := admin.QueryContext(ctx, `
		WITH own AS MATERIALIZED (
			SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relkind = 'i')
		SELECT relname FROM own WHERE pg_get_indexdef(oid) LIKE '%gin_trgm_ops%' ORDER BY 1`, schema)
	require.NoError(t, err)
	for rows.Next() {
		var name string
		require.NoError(t, rows.Scan(&name))
		indexes = append(indexes, name)
	}
	require.NoError(t, rows.Err())
	assert.Equal(t, []string{"user_display_name_trgm", "user_email_trgm"}, indexes)
	_, err = db.Ent.User.Query().Where(user.DisplayNameContainsFold("ann"), user.EmailHasPrefix("a")).All(ctx)
	require.NoError(t, err)
}
