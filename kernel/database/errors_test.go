package database_test

import (
	"context"
	"database/sql"
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

// TestIsUnavailable: a database that refuses connections, or whose
// connection broke under a query, is unavailable; a query the database
// refuses for what it asks is not.
func TestIsUnavailable(t *testing.T) {
	t.Parallel()
	_, admin := kerneltest.Postgres(t)
	ctx := t.Context()

	// Nothing listens on port 1.
	refused, err := sql.Open("postgres", "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=2")
	require.NoError(t, err)
	t.Cleanup(func() { _ = refused.Close() })
	_, err = refused.ExecContext(ctx, `SELECT 1`)
	require.Error(t, err)
	assert.True(t, database.IsUnavailable(fmt.Errorf("get user: %w", err)), "refused: %v", err)

	// A connection the server ends under its session (pg_terminate_backend,
	// a restart).
	conn, err := admin.Conn(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	var pid int
	require.NoError(t, conn.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	_, err = admin.ExecContext(ctx, `SELECT pg_terminate_backend($1)`, pid)
	require.NoError(t, err)
	_, err = conn.ExecContext(ctx, `SELECT 1`)
	require.Error(t, err)
	assert.True(t, database.IsUnavailable(err), "terminated: %v", err)

	_, err = admin.ExecContext(ctx, `SELECT 1/0`)
	require.Error(t, err)
	assert.False(t, database.IsUnavailable(err), "a division by zero: %v", err)
	assert.False(t, database.IsUnavailable(&pq.Error{Code: "23505"}), "a unique violation")
	assert.False(t, database.IsUnavailable(errors.New("disk full")))
	assert.False(t, database.IsUnavailable(nil))
}
