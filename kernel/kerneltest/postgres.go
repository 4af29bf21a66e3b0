package kerneltest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"
)

// Postgres returns the test database URL after checking that it answers,
// and an admin pool on it that is closed when the test ends. A database that
// does not answer within a few seconds makes the test [Unavailable].
func Postgres(t testing.TB) (url string, admin *sql.DB) {
	t.Helper()
	url = DatabaseURL()
	connector, err := pq.NewConnector(url)
	if err != nil {
		t.Fatalf("PORTCULLIS_TEST_DATABASE_URL is not a valid DSN: %v", err)
	}
	admin = sql.OpenDB(connector)
	t.Cleanup(func() { _ = admin.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := admin.PingContext(ctx); err != nil {
		Unavailable(t, "PostgreSQL at PORTCULLIS_TEST_DATABASE_URL (default %s) does not answer: %v", DefaultDatabaseURL, err)
	}
	return url, admin
}

// SchemaName returns a schema name no other test uses, and drops that
// schema (and everything in it) when the test ends.
func SchemaName(t testing.TB) string {
	t.Helper()
	_, admin := Postgres(t)
	name := "test_" + strings.ToLower(rand.Text()[:16])
	t.Cleanup(func() {
		_, _ = admin.Exec("DROP SCHEMA IF EXISTS " + pq.QuoteIdentifier(name) + " CASCADE")
	})
	return name
}

// RoleName returns a role name no other test uses, and drops the role when
// the test ends (after the schemas it owns are dropped: cleanups run last
// registered first, so call it before [SchemaName]).
func RoleName(t testing.TB) string {
	t.Helper()
	_, admin := Postgres(t)
	name := "test_role_" + strings.ToLower(rand.Text()[:12])
	t.Cleanup(func() {
		_, _ = admin.Exec("DROP OWNED BY " + pq.QuoteIdentifier(name) + " CASCADE")
		_, _ = admin.Exec("DROP ROLE IF EXISTS " + pq.QuoteIdentifier(name))
	})
	return name
}

// WithApplicationName returns dsn, a postgres:// URL, with its sessions
// named name in pg_stat_activity, so that a test can find them, and end
// them, without touching another test's.
func WithApplicationName(t testing.TB, dsn, name string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("parse DSN: %v", err)
	}
	q := u.Query()
	q.Set("application_name", name)
	u.RawQuery = q.Encode()
	return u.String()
}
