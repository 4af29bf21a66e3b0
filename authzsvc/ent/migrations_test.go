package ent_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"portcullis.dev/authzsvc/ent"
	"portcullis.dev/authzsvc/ent/migrate"
	"portcullis.dev/kernel/database"
	"portcullis.dev/kernel/kerneltest"
)

// The committed migrations must lead exactly to the Ent schema; otherwise
// `go tool task generate` (with MIGRATION_NAME) was not run after a change.
func TestMigrationsMatchTheEntSchema(t *testing.T) {
	t.Parallel()
	dsn, _ := kerneltest.Postgres(t)
	require.NoError(t, database.CheckMigrations(t.Context(), dsn, ent.Migrations(), migrate.Tables))
}
