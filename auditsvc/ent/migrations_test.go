package ent_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"portcullis.dev/auditsvc/ent"
	"portcullis.dev/auditsvc/ent/migrate"
	"portcullis.dev/kernel/database"
	"portcullis.dev/kernel/kerneltest"
)

// TestMigrationsMatchSchema replays the migrations, the hand-written
// append-only trigger included, and compares the result with the Ent
// schema: CI fails when someone changes one without the other.
func TestMigrationsMatchSchema(t *testing.T) {
	t.Parallel()
	url, _ := kerneltest.Postgres(t)
	require.NoError(t, database.CheckMigrations(context.Background(), url, ent.Migrations(), migrate.Tables))
}
