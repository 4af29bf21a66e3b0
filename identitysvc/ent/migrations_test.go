package ent_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"portcullis.dev/identitysvc/ent"
	"portcullis.dev/identitysvc/ent/migrate"
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
