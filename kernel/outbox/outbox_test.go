package outbox_test

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"entgo.io/ent/dialect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/authn"
	"portcullis.dev/kernel/config"
	"portcullis.dev/kernel/database"
	"portcullis.dev/kernel/internal/testent"
	"portcullis.dev/kernel/kerneltest"
	"portcullis.dev/kernel/logging"
	"portcullis.dev/kernel/outbox"
	"portcullis.dev/kernel/rpc"
	auditv1 "portcullis.dev/proto/audit/v1"
	"portcullis.dev/proto/audit/v1/auditv1connect"
)

// auditLog stands in for the Audit service's storage in the kernel's own
// tests (auditsvc tests the relay against the real service): it records
// each idempotency key once, in arrival order.
type auditLog struct {
	auditv1connect.UnimplementedAuditServiceHandler
	mu       sync.Mutex
	keys     []string
	seen     map[string]int
	actions  []string
	requests int
}

func (a *auditLog) Record(_ context.Context, req *connect.Request[auditv1.RecordRequest]) (*connect.Response[auditv1.RecordResponse], error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.requests++
	resp := &auditv1.RecordResponse{}
	for _, ev := range req.Msg.GetEvents() {
		a.seen[ev.GetIdempotencyKey()]++
		dup := a.seen[ev.GetIdempotencyKey()] > 1
		if !dup {
			a.keys = append(a.keys, ev.GetIdempotencyKey())
			a.actions = append(a.actions, ev.GetAction())
		}
		resp.Results = append(resp.Results, &auditv1.RecordResult{IdempotencyKey: ev.GetIdempotencyKey(), Duplicate: dup})
	}
	return connect.NewResponse(resp), nil
}

func (a *auditLog) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.keys)
}

// serveAudit serves log on ln until the test ends.
func serveAudit(t *testing.T, log *auditLog, ln net.Listener) {
	mux := http.NewServeMux()
	mux.Handle(auditv1connect.NewAuditServiceHandler(log))
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
}

func openDB(t *testing.T) (*database.Client[*testent.Client], database.Config) {
	t.Helper()
	dsn, _ := kerneltest.Postgres(t)
	cfg := database.Config{DSN: config.DSN(dsn), Schema: kerneltest.SchemaName(t)}
	db, err := database.NewEntClient(t.Context(), cfg, testent.Migrations(), func(d dialect.Driver) *testent.Client {
		return testent.NewClient(testent.Driver(d))
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close(context.Background()) })
	return db, cfg
}

// change makes one audited change: an item and its event, in one
// transaction that commits or rolls back.
func change(t *testing.T, db *database.Client[*testent.Client], name string, commit bool) {
	t.Helper()
	ctx := t.Context()
	tx, err := db.Ent.Tx(ctx)
	require.NoError(t, err)
	_, err = tx.Item.Create().SetName(name).SetCreatedAt(time.Now()).Save(ctx)
	require.NoError(t, err)
	require.NoError(t, outbox.Enqueue(ctx, tx, outbox.NewEvent(ctx, "test.item.created", name, auditv1.Outcome_OUTCOME_SUCCESS, nil)))
	if commit {
		require.NoError(t, tx.Commit())
	} else {
		require.NoError(t, tx.Rollback())
	}
}

func runRelay(t *testing.T, relay *outbox.Relay) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
}

func TestNothingIsLostWhileAuditIsDown(t *testing.T) {
	t.Parallel()
	db, cfg := openDB(t)

	// Audit's address is known but nothing answers there yet.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	client := auditv1connect.NewAuditServiceClient(http.DefaultClient, "http://"+addr)
	relay := outbox.NewRelay(db.DB, cfg, client, outbox.Config{MaxBackoff: 300 * time.Millisecond, PollInterval: time.Hour}, nil)
	runRelay(t, relay)

	const changes = 1000
	for i := range changes {
		change(t, db, "item-"+strconv.Itoa(i), true)
	}
	change(t, db, "rolled-back", false) // its event must never arrive
	require.Eventually(t, func() bool { return relay.Backlog() == changes }, 5*time.Second, 20*time.Millisecond,
		"backlog %d, want %d", relay.Backlog(), changes)

	// Audit comes up on the same address: everything arrives, once, in order.
	ln, err = net.Listen("tcp", addr)
	require.NoError(t, err)
	log := &auditLog{seen: map[string]int{}}
	serveAudit(t, log, ln)
	require.Eventually(t, func() bool { return log.count() == changes && relay.Backlog() == 0 }, 20*time.Second, 20*time.Millisecond,
		"%d of %d events arrived", log.count(), changes)
	time.Sleep(200 * time.Millisecond) // nothing more comes

	log.mu.Lock()
	defer log.mu.Unlock()
	assert.Len(t, log.keys, changes)
	for key, n := range log.seen {
		assert.Equal(t, 1, n, "event %s sent %d times", key, n)
	}
	// In order: the i-th event is the i-th change.
	var names []string
	rows, err := db.DB.QueryContext(t.Context(), `SELECT idempotency_key FROM outbox_events ORDER BY id`)
	require.NoError(t, err)
	for rows.Next() {
		var k string
		require.NoError(t, rows.Scan(&k))
		names = append(names, k)
	}
	require.NoError(t, rows.Err())
	assert.Equal(t, names, log.keys, "events arrived out of order")
	assert.Less(t, log.requests, changes/10, "events were not batched")
}

func TestANotificationWakesTheRelay(t *testing.T) {
	t.Parallel()
	db, cfg := openDB(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	log := &auditLog{seen: map[string]int{}}
	serveAudit(t, log, ln)
	client := auditv1connect.NewAuditServiceClient(http.DefaultClient, "http://"+ln.Addr().String())
	// With an hour between polls, only LISTEN/NOTIFY can deliver in time.
	runRelay(t, outbox.NewRelay(db.DB, cfg, client, outbox.Config{PollInterval: time.Hour}, nil))
	time.Sleep(300 * time.Millisecond) // the relay's first look finds nothing and it waits

	change(t, db, "one", true)
	require.Eventually(t, func() bool { return log.count() == 1 }, 2*time.Second, 10*time.Millisecond)
	assert.Equal(t, []string{"test.item.created"}, log.actions)
}

// TestEnqueueManyInOrder: events enqueued together arrive in the order
// given, each once, after one statement rather than one per event (a
// cascading delete records an event per row it removed).
func TestEnqueueManyInOrder(t *testing.T) {
	t.Parallel()
	db, cfg := openDB(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	log := &auditLog{seen: map[string]int{}}
	serveAudit(t, log, ln)
	client := auditv1connect.NewAuditServiceClient(http.DefaultClient, "http://"+ln.Addr().String())
	runRelay(t, outbox.NewRelay(db.DB, cfg, client, outbox.Config{PollInterval: time.Hour}, nil))

	const n = 500
	evs := make([]*auditv1.NewEvent, n)
	want := make([]string, n)
	for i := range evs {
		evs[i] = outbox.NewEvent(t.Context(), "test.item.deleted", "item:"+strconv.Itoa(i), auditv1.Outcome_OUTCOME_SUCCESS, nil)
		want[i] = evs[i].GetIdempotencyKey()
	}
	tx, err := db.DB.BeginTx(t.Context(), nil)
	require.NoError(t, err)
	require.NoError(t, outbox.Enqueue(t.Context(), tx, evs...))
	require.NoError(t, outbox.Enqueue(t.Context(), tx)) // nothing to enqueue: no error, no row
	require.NoError(t, tx.Commit())

	require.Eventually(t, func() bool { return log.count() == n }, 10*time.Second, 10*time.Millisecond, "%d of %d arrived", log.count(), n)
	log.mu.Lock()
	defer log.mu.Unlock()
	assert.Equal(t, want, log.keys, "in the order given")
}

func TestNewEventNamesTheCaller(t *testing.T) {
	t.Parallel()
	ctx := authn.NewContext(context.Background(), authn.Principal{Kind: authn.KindUser, Subject: "u1"})
	ctx = logging.WithRequestID(ctx, "req-1")
	ev := outbox.NewEvent(ctx, "identity.user.updated", "user:u2", auditv1.Outcome_OUTCOME_SUCCESS, map[string]string{"field": "email"})
	assert.Equal(t, auditv1.ActorType_ACTOR_TYPE_USER, ev.GetActor().GetType())
	assert.Equal(t, "u1", ev.GetActor().GetId())
	assert.Equal(t, "req-1", ev.GetRequestId())

	assert.NotEmpty(t, ev.GetIdempotencyKey())
	assert.NotNil(t, ev.GetTime())

	anon := outbox.NewEvent(context.Background(), "identity.user.created", "user:u3", auditv1.Outcome_OUTCOME_SUCCESS, nil)
	assert.Equal(t, auditv1.ActorType_ACTOR_TYPE_ANONYMOUS, anon.GetActor().GetType())
	assert.NotEqual(t, ev.GetIdempotencyKey(), anon.GetIdempotencyKey())
}

// TestNewEventNamesTheClient: an event written while a service serves a
// request the gateway passed on carries the client's address and
// User-Agent, as the server took them from the request.
func TestNewEventNamesTheClient(t *testing.T) {
	t.Parallel()
	srv := rpc.NewServer("outboxtest", "test", rpc.Config{}, rpc.WithAccessPolicy(&rpc.AccessPolicy{}))
	events := make(chan *auditv1.NewEvent, 1)
	srv.HandleHTTP("POST /x", http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		events <- outbox.NewEvent(r.Context(), "auth.login.succeeded", "user:u1", auditv1.Outcome_OUTCOME_SUCCESS, nil)
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	serving, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(serving, ln) }()
	t.Cleanup(func() { stop(); <-done })
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+ln.Addr().String()+"/x", nil)
	require.NoError(t, err)
	req.Header.Set(rpc.ClientIPHeader, "203.0.113.7")
	req.Header.Set("User-Agent", "curl/8.5")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = res.Body.Close()
	fromGateway := <-events
	assert.Equal(t, "curl/8.5", fromGateway.GetUserAgent())
	assert.Equal(t, "203.0.113.7", fromGateway.GetSourceIp())
}
