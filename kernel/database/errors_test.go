package database_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/lib/pq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/database"
	"portcullis.dev/kernel/kerneltest"
)

// TestIsConflict makes PostgreSQL break a real deadlock between two
// transactions, and checks that the one it aborts is a conflict.
func TestIsConflict(t *testing.T) {
	t.Parallel()
	_, admin := kerneltest.Postgres(t)
	ctx := t.Context()
	schema := pq.QuoteIdentifier(kerneltest.SchemaName(t))
	table := schema + ".rows"
	_, err := admin.ExecContext(ctx, `CREATE SCHEMA `+schema+`;
		CREATE TABLE `+table+` (id int PRIMARY KEY); INSERT INTO `+table+` VALUES (1), (2)`)
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = admin.ExecContext(context.Background(), `DROP SCHEMA `+schema+` CASCADE`)
	})

	a, err := admin.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = a.Rollback() }()
	b, err := admin.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer func() { _ = b.Rollback() }()
	_, err = a.ExecContext(ctx, `SELECT 1 FROM `+table+` WHERE id = 1 FOR UPDATE`)
	require.NoError(t, err)
	_, err = b.ExecContext(ctx, `SELECT 1 FROM `+table+` WHERE id = 2 FOR UPDATE`)
	require.NoError(t, err)
	errs := make(chan error, 2)
	go func() {
		_, err := a.ExecContext(ctx, `SELECT 1 FROM `+table+` WHERE id = 2 FOR UPDATE`)
		errs <- err
	}()
	go func() {
		_, err := b.ExecContext(ctx, `SELECT 1 FROM `+table+` WHERE id = 1 FOR UPDATE`)
		errs <- err
	}()
	// PostgreSQL aborts one of the two, and the other then gets its lock.
	first := <-errs
	if first == nil {
		first = <-errs
	}
	require.Error(t, first)
	assert.True(t, database.IsConflict(fmt.Errorf("use token: %w", first)), "%v", first)

	assert.False(t, database.IsConflict(&pq.Error{Code: "23505"}), "a unique violation")
	assert.False(t, database.IsConflict(errors.New("deadlock detected")))
}
