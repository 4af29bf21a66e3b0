package audit_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"entgo.io/ent/dialect"
	"github.com/stretchr/testify/require"

	"portcullis.dev/auditsvc/ent"
	"portcullis.dev/auditsvc/internal/audit"
	kconfig "portcullis.dev/kernel/config"
	"portcullis.dev/kernel/database"
	"portcullis.dev/kernel/kerneltest"
)

// store is one test's audit log: a fresh schema with the migrations applied.
type store struct {
	url    string
	admin  *sql.DB
	schema string
	db     *database.Client[*ent.Client]
	svc    *audit.Service
}

func newStore(t testing.TB, opts ...audit.Option) *store {
	t.Helper()
	url, admin := kerneltest.Postgres(t)
	schema := kerneltest.SchemaName(t)
	s := &store{url: url, admin: admin, schema: schema}
	s.db = openClient(t, url, schema)
	s.svc = audit.NewService(s.db.DB, s.db.Ent, schema, opts...)
	return s
}

// openClient opens a pool of its own on schema, migrating it if needed: what
// one replica of the service does at start.
func openClient(t testing.TB, url, schema string) *database.Client[*ent.Client] {
	t.Helper()
	db, err := database.NewEntClient(context.Background(), database.Config{DSN: kconfig.DSN(url), Schema: schema, MaxOpenConns: 8},
		ent.Migrations(), func(d dialect.Driver) *ent.Client { return ent.NewClient(ent.Driver(d)) })
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close(context.Background()) })
	return db
}

var epoch = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

// newEvent returns a valid event keyed key, i seconds after epoch.
func newEvent(key string, i int) audit.NewEvent {
	return audit.NewEvent{
		IdempotencyKey: key,
		Time:           epoch.Add(time.Duration(i) * time.Second),
		ActorType:      audit.ActorUser,
		ActorID:        fmt.Sprintf("user-%d", i%3),
		Action:         []string{"auth.login.succeeded", "auth.login.failed", "identity.user.created"}[i%3],
		Target:         fmt.Sprintf("user:%d", i%5),
		Outcome:        audit.Outcome(1 + i%3),
		SourceIP:       "192.0.2.1",
		UserAgent:      "test/1.0",
		RequestID:      fmt.Sprintf("req-%d", i%7),
		Metadata:       map[string]string{"reason": "test", "n": fmt.Sprint(i)},
	}
}

func batch(prefix string, from, n int) []audit.NewEvent {
	evs := make([]audit.NewEvent, n)
	for i := range evs {
		evs[i] = newEvent(fmt.Sprintf("%s:%d", prefix, from+i), from+i)
	}
	return evs
}

func (s *store) count(t testing.TB) (n, maxSeq int64) {
	t.Helper()
	require.NoError(t, s.admin.QueryRow(`SELECT count(*), coalesce(max(sequence), 0) FROM `+s.schema+`.audit_log`).Scan(&n, &maxSeq))
	return n, maxSeq
}
