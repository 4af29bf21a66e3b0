package database_test

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"entgo.io/ent/dialect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/config"
	"portcullis.dev/kernel/database"
	"portcullis.dev/kernel/internal/testent"
	"portcullis.dev/kernel/internal/testent/item"
	"portcullis.dev/kernel/internal/testent/migrate"
	"portcullis.dev/kernel/kerneltest"
)

func newEnt(d dialect.Driver) *testent.Client { return testent.NewClient(testent.Driver(d)) }

func testConfig(t *testing.T) database.Config {
	t.Helper()
	dsn, _ := kerneltest.Postgres(t)
	return database.Config{DSN: config.DSN(dsn), Schema: kerneltest.SchemaName(t)}
}

func openClient(t *testing.T, cfg database.Config) *database.Client[*testent.Client] {
	t.Helper()
	c, err := database.NewEntClient(t.Context(), cfg, testent.Migrations(), newEnt)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func TestSchemasAreIsolated(t *testing.T) {
	t.Parallel()
	a := openClient(t, testConfig(t))
	b := openClient(t, testConfig(t))
	ctx := t.Context()

	_, err := a.Ent.Item.Create().SetName("only in a").SetCreatedAt(time.Now()).Save(ctx)
	require.NoError(t, err)

	names, err := b.Ent.Item.Query().Select(item.FieldName).Strings(ctx)
	require.NoError(t, err)
	assert.Empty(t, names, "schema b sees a row written through schema a")
	n, err := a.Ent.Item.Query().Count(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n)

	var searchPath string
	require.NoError(t, b.DB.QueryRowContext(ctx, "SHOW search_path").Scan(&searchPath))
	assert.Equal(t, b.Schema, searchPath)
}

func TestRoleIsLimitedToItsSchema(t *testing.T) {
	t.Parallel()
	dsn, admin := kerneltest.Postgres(t)
	ctx := t.Context()
	role := kerneltest.RoleName(t)
	own, other := kerneltest.SchemaName(t), kerneltest.SchemaName(t)

	// Another service's schema, with a table, made by the admin.
	openClient(t, database.Config{DSN: config.DSN(dsn), Schema: other})

	const password = "s3cret-'quoted\"-pass"
	require.NoError(t, database.EnsureRole(ctx, admin, role, password, own))
	require.NoError(t, database.EnsureRole(ctx, admin, role, password, own), "EnsureRole is not idempotent")

	u, err := url.Parse(dsn)
	require.NoError(t, err)
	u.User = url.UserPassword(role, password)
	u.Host = "127.0.0.1:" + portOf(u)
	limited := openClient(t, database.Config{DSN: config.DSN(u.String()), Schema: own})

	_, err = limited.Ent.Item.Create().SetName("mine").SetCreatedAt(time.Now()).Save(ctx)
	require.NoError(t, err, "the role cannot use its own schema")

	_, err = limited.DB.ExecContext(ctx, fmt.Sprintf("SELECT * FROM %s.items", other))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "permission denied")
	_, err = limited.DB.ExecContext(ctx, "CREATE TABLE public.sneaky (id int)")
	require.Error(t, err, "the role can create tables in public")
}

func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	return "5432"
}

func TestConcurrentMigrationsApplyOnce(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	ctx := t.Context()

	const replicas = 10
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		applied [][]string
		errs    []error
	)
	for range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db, err := database.Open(ctx, cfg)
			if err == nil {
				defer db.Close()
				var versions []string
				versions, err = database.Migrate(ctx, db, cfg.Schema, testent.Migrations())
				mu.Lock()
				applied = append(applied, versions)
				mu.Unlock()
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	require.Empty(t, errs)

	files, err := fs.Glob(testent.Migrations(), "*.sql")
	require.NoError(t, err)
	total := 0
	for _, v := range applied {
		total += len(v)
	}
	assert.Equal(t, len(files), total, "%d migrations applied %d times in all: %v", len(files), total, applied)

	c := openClient(t, cfg)
	var revisions int
	require.NoError(t, c.DB.QueryRowContext(ctx, "SELECT count(*) FROM atlas_schema_revisions").Scan(&revisions))
	assert.Equal(t, len(files), revisions)
}

func TestTamperedMigrationsStopStartUp(t *testing.T) {
	t.Parallel()
	original := readAll(t)
	tests := []struct {
		name   string
		before bool // apply the original migrations first
		tamper func(fstest.MapFS)
	}{
		{
			name: "file changed after atlas.sum",
			tamper: func(m fstest.MapFS) {
				for name, f := range m {
					if name != "atlas.sum" {
						f.Data = append(f.Data, []byte("\nDROP TABLE items;\n")...)
					}
				}
			},
		},
		{
			name:   "applied file changed with atlas.sum rewritten",
			before: true,
			tamper: func(m fstest.MapFS) {
				// Swap in a different first migration, and a matching
				// atlas.sum, as someone editing history would.
				for name, f := range m {
					if name != "atlas.sum" {
						m[name] = &fstest.MapFile{Data: append(f.Data, []byte("\nCREATE TABLE extra (id int);\n")...)}
					}
				}
				m["atlas.sum"] = &fstest.MapFile{Data: rehash(t, m)}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t)
			if tt.before {
				openClient(t, cfg)
			}
			files := clone(original)
			tt.tamper(files)
			_, err := database.NewEntClient(t.Context(), cfg, files, newEnt)
			require.ErrorIs(t, err, database.ErrMigrationsTampered)
			assert.Contains(t, err.Error(), cfg.Schema)
		})
	}
}

// TestMigrationWaitingForALockGivesWay: a migration that must wait for a
// table another transaction uses (an older replica's, in a rolling
// deploy) gives up after its lock timeout and tries again, instead of
// waiting while every query on the table queues behind it.
func TestMigrationWaitingForALockGivesWay(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	openClient(t, cfg) // the table exists
	db, err := database.Open(t.Context(), cfg)
	require.NoError(t, err)
	defer db.Close()

	holder, err := db.BeginTx(t.Context(), nil)
	require.NoError(t, err)
	defer func() { _ = holder.Rollback() }()
	_, err = holder.ExecContext(t.Context(), `SELECT count(*) FROM items`)
	require.NoError(t, err)

	files := readAll(t)
	files["99991231000000_note.sql"] = &fstest.MapFile{Data: []byte("ALTER TABLE \"items\" ADD COLUMN \"note\" text;\n")}
	files["atlas.sum"] = &fstest.MapFile{Data: rehash(t, files)}
	migrated := make(chan error, 1)
	go func() {
		applied, err := database.Migrate(t.Context(), db, cfg.Schema, files, database.WithLockTimeout(100*time.Millisecond))
		if err == nil && !assert.Equal(t, []string{"99991231000000"}, applied) {
			err = fmt.Errorf("applied %v", applied)
		}
		migrated <- err
	}()

	time.Sleep(300 * time.Millisecond) // the migration's first try waits, and gives up
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	start := time.Now()
	var n int
	assert.NoError(t, db.QueryRowContext(ctx, `SELECT count(*) FROM items`).Scan(&n), "a query waited behind the migration")
	assert.Less(t, time.Since(start), 500*time.Millisecond, "a query waited behind the migration")

	require.NoError(t, holder.Commit())
	select {
	case err := <-migrated:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the migration never ran")
	}
}

func TestPoolSettingsAreApplied(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.MaxOpenConns = 3
	cfg.MaxIdleConns = 1
	db, err := database.Open(t.Context(), cfg)
	require.NoError(t, err)
	defer db.Close()

	// Hold more connections than the pool allows: the fourth must wait.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var conns []*sql.Conn
	for range 3 {
		c, err := db.Conn(ctx)
		require.NoError(t, err)
		conns = append(conns, c)
	}
	waitCtx, cancelWait := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err = db.Conn(waitCtx)
	cancelWait()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	for _, c := range conns {
		require.NoError(t, c.Close())
	}

	stats := db.Stats()
	assert.Equal(t, 3, stats.MaxOpenConnections)
	assert.Equal(t, 1, stats.Idle, "idle connections beyond max_idle_conns were kept")
	assert.GreaterOrEqual(t, stats.WaitCount, int64(1))
}

// conn_max_idle_time and conn_max_lifetime reach the pool: connections
// past them are closed, which db.Stats counts.
func TestPoolLifetimesAreApplied(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		set    func(*database.Config)
		closed func(sql.DBStats) int64
	}{
		{"idle time", func(c *database.Config) { c.ConnMaxIdleTime = 50 * time.Millisecond }, func(s sql.DBStats) int64 { return s.MaxIdleTimeClosed }},
		{"lifetime", func(c *database.Config) { c.ConnMaxLifetime = 50 * time.Millisecond }, func(s sql.DBStats) int64 { return s.MaxLifetimeClosed }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t)
			tt.set(&cfg)
			db, err := database.Open(t.Context(), cfg)
			require.NoError(t, err)
			defer db.Close()
			require.NoError(t, db.PingContext(t.Context()))
			// database/sql closes expired connections from a cleaner that
			// runs about once a second; the idle connection must stay idle.
			assert.Eventually(t, func() bool { return tt.closed(db.Stats()) > 0 }, 5*time.Second, 100*time.Millisecond)
		})
	}
}

func TestCloseWaitsForInFlightQuery(t *testing.T) {
	t.Parallel()
	c := openClient(t, testConfig(t))
	started := make(chan struct{})
	queryDone := make(chan error, 1)
	go func() {
		conn, err := c.DB.Conn(context.Background())
		if err != nil {
			queryDone <- err
			return
		}
		close(started)
		_, err = conn.ExecContext(context.Background(), "SELECT pg_sleep(0.5)")
		_ = conn.Close()
		queryDone <- err
	}()
	<-started
	time.Sleep(50 * time.Millisecond) // the query is on the server now

	begin := time.Now()
	require.NoError(t, c.Close(t.Context()))
	assert.GreaterOrEqual(t, time.Since(begin), 300*time.Millisecond, "Close returned before the query finished")
	require.NoError(t, <-queryDone, "the in-flight query was cut off")

	// A deadline shorter than the query: Close gives up and says so.
	c2 := openClient(t, testConfig(t))
	go func() { _, _ = c2.DB.ExecContext(context.Background(), "SELECT pg_sleep(1)") }()
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, c2.Close(ctx), context.DeadlineExceeded)
}

func TestUnreachableDatabaseIsRetriedThenFails(t *testing.T) {
	t.Parallel()
	addr := kerneltest.RefusingAddr(t)

	const password = "hunter2-do-not-print"
	cfg := database.Config{
		DSN:            config.DSN("postgres://svc:" + password + "@" + addr + "/portcullis?sslmode=disable"),
		Schema:         "identity",
		ConnectTimeout: 700 * time.Millisecond,
	}
	begin := time.Now()
	_, err := database.Open(t.Context(), cfg)
	require.Error(t, err)
	assert.GreaterOrEqual(t, time.Since(begin), 600*time.Millisecond, "gave up without retrying")
	assert.Contains(t, err.Error(), `schema "identity"`)
	assert.Contains(t, err.Error(), "gave up after")
	assert.NotContains(t, err.Error(), password)
	assert.NotContains(t, fmt.Sprintf("%+v", cfg), password)
}

// TestStoppedWhileConnectingSaysSo: a service stopped (SIGTERM) while it
// waits for its database says it was stopped, not that it gave up after
// its connect timeout.
func TestStoppedWhileConnectingSaysSo(t *testing.T) {
	t.Parallel()
	cfg := database.Config{
		DSN:            config.DSN("postgres://svc@" + kerneltest.RefusingAddr(t) + "/portcullis?sslmode=disable"),
		Schema:         "identity",
		ConnectTimeout: time.Minute,
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err := database.Open(ctx, cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "stopped after")
	assert.NotContains(t, err.Error(), "gave up")
}

func TestInvalidConfigIsRefused(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		cfg    database.Config
		wantIn string
	}{
		{"no schema", database.Config{DSN: "postgres://x@127.0.0.1/db"}, "database.schema"},
		{"schema with a quote", database.Config{DSN: "postgres://x@127.0.0.1/db", Schema: `a"; DROP`}, "database.schema"},
		{"shared schema", database.Config{DSN: "postgres://x@127.0.0.1/db", Schema: "public"}, "database.schema"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := database.Open(t.Context(), tt.cfg)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantIn)
		})
	}
}

func TestMigrationsMatchTheEntSchema(t *testing.T) {
	t.Parallel()
	dsn, _ := kerneltest.Postgres(t)
	require.NoError(t, database.CheckMigrations(t.Context(), dsn, testent.Migrations(), migrate.Tables))

	// Without the migrations the schema is all missing, and the error shows
	// the SQL that would fix it.
	empty := fstest.MapFS{"atlas.sum": &fstest.MapFile{Data: rehash(t, fstest.MapFS{})}}
	err := database.CheckMigrations(t.Context(), dsn, empty, migrate.Tables)
	require.ErrorIs(t, err, database.ErrMigrationMissing)
	assert.Contains(t, err.Error(), `CREATE TABLE "items"`)
}

func TestReadyReportsADownDatabase(t *testing.T) {
	t.Parallel()
	c, err := database.NewEntClient(t.Context(), testConfig(t), testent.Migrations(), newEnt)
	require.NoError(t, err)
	require.NoError(t, c.Ready(t.Context()))
	require.NoError(t, c.Close(t.Context()))
	err = c.Ready(t.Context())
	require.Error(t, err)
	assert.Contains(t, err.Error(), c.Schema, "the error does not name the schema")
}

// TestReadyAfterTheServerEndedThePoolsSessions: once PostgreSQL has ended
// every session of the pool (a restart, pg_terminate_backend), the next
// readiness check finds the database up, however many dead connections the
// pool kept.
func TestReadyAfterTheServerEndedThePoolsSessions(t *testing.T) {
	t.Parallel()
	_, admin := kerneltest.Postgres(t)
	cfg := testConfig(t)
	cfg.DSN = config.DSN(kerneltest.WithApplicationName(t, cfg.DSN.Value(), cfg.Schema))
	cfg.MaxOpenConns, cfg.MaxIdleConns = 4, 4
	c, err := database.NewEntClient(t.Context(), cfg, testent.Migrations(), newEnt)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	ctx := t.Context()
	// Four connections at once, so the pool keeps four.
	conns := make([]*sql.Conn, 4)
	for i := range conns {
		conns[i], err = c.DB.Conn(ctx)
		require.NoError(t, err)
	}
	for _, conn := range conns {
		require.NoError(t, conn.Close())
	}
	require.Equal(t, 4, c.DB.Stats().Idle)
	var ended int
	require.NoError(t, admin.QueryRowContext(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, cfg.Schema).Scan(&ended))
	require.Equal(t, 4, ended)
	assert.NoError(t, c.Ready(ctx), "a healthy database looked down")
}

// TestOpenGivesUpOnASilentServer: a server that accepts connections and
// says nothing (one that hangs, a proxy in front of a dead one) does not
// hold Open, or a query, for ever.
func TestOpenGivesUpOnASilentServer(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = conn.Close() })
		}
	}()
	done := make(chan error, 1)
	go func() {
		_, err := database.Open(context.Background(), database.Config{
			DSN:            config.DSN("postgres://postgres@" + ln.Addr().String() + "/postgres?sslmode=disable"),
			Schema:         "silent",
			ConnectTimeout: time.Second,
		})
		done <- err
	}()
	select {
	case err := <-done:
		assert.Error(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("Open still waits on a server that says nothing")
	}
}

// TestMigrationStoppedWhileItWaitsSaysSo: a replica stopped while it waits
// for another's migrations says that it was stopped, for its exit code,
// not only the server's "canceling statement".
func TestMigrationStoppedWhileItWaitsSaysSo(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	db, err := database.Open(t.Context(), cfg)
	require.NoError(t, err)
	defer db.Close()
	holder, err := db.BeginTx(t.Context(), nil)
	require.NoError(t, err)
	defer func() { _ = holder.Rollback() }()
	_, err = holder.ExecContext(t.Context(), `SELECT pg_advisory_xact_lock($1)`, database.MigrationLockKey(cfg.Schema))
	require.NoError(t, err)

	ctx, stop := context.WithCancel(t.Context())
	time.AfterFunc(200*time.Millisecond, stop)
	_, err = database.Migrate(ctx, db, cfg.Schema, readAll(t))
	require.Error(t, err)
	assert.ErrorIs(t, err, context.Canceled)
}
