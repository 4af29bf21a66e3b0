package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/config"
	"portcullis.dev/kernel/kerneltest"
	"portcullis.dev/kernel/outbox"
	auditv1 "portcullis.dev/proto/audit/v1"
	"portcullis.dev/proto/audit/v1/auditv1connect"
)

// refusingLog stands in for an Audit service that finds some events
// invalid: like the real one, it refuses the whole batch when any event in
// it is invalid, and records the batch otherwise.
type refusingLog struct {
	*auditLog
	refuse func(*auditv1.NewEvent) bool
}

func (a *refusingLog) Record(ctx context.Context, req *connect.Request[auditv1.RecordRequest]) (*connect.Response[auditv1.RecordResponse], error) {
	for i, ev := range req.Msg.GetEvents() {
		if a.refuse(ev) {
			a.mu.Lock()
			a.requests++
			a.mu.Unlock()
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("event %d: metadata is larger than 8192 bytes", i))
		}
	}
	return a.auditLog.Record(ctx, req)
}

// serveHandler serves h on a new address until the test ends and returns a
// client for it.
func serveHandler(t *testing.T, h auditv1connect.AuditServiceHandler) auditv1connect.AuditServiceClient {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle(auditv1connect.NewAuditServiceHandler(h))
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return auditv1connect.NewAuditServiceClient(http.DefaultClient, "http://"+ln.Addr().String())
}

// outboxKeys returns the idempotency keys of the outbox rows that match
// where, in delivery order, with their ids.
func outboxKeys(t *testing.T, db *sql.DB, where string) (keys []string, ids []int64) {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), `SELECT id, idempotency_key FROM outbox_events WHERE `+where+` ORDER BY id`)
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		var (
			id  int64
			key string
		)
		require.NoError(t, rows.Scan(&id, &key))
		keys, ids = append(keys, key), append(ids, id)
	}
	require.NoError(t, rows.Err())
	return keys, ids
}

// TestRelayIsolatesRefusedEvents checks that events Audit refuses as
// invalid do not hold up the others: every other event arrives, once and in
// order, and each refused one is set aside, logged and counted, and not
// sent again.
func TestRelayIsolatesRefusedEvents(t *testing.T) {
	t.Parallel()
	const n = 20
	tests := []struct {
		name        string
		bad         []int // changes whose events Audit refuses
		undecodable []int // changes after which a row that is no event is written
	}{
		{name: "first", bad: []int{0}},
		{name: "middle", bad: []int{9}},
		{name: "last", bad: []int{n - 1}},
		{name: "several", bad: []int{2, 3, 11, 17}},
		{name: "all", bad: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19}},
		{name: "undecodable payload", undecodable: []int{4}},
		{name: "refused and undecodable", bad: []int{5}, undecodable: []int{12}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db, cfg := openDB(t)
			for i := range n {
				name := "item-" + strconv.Itoa(i)
				if slices.Contains(tt.bad, i) {
					name = "bad-" + strconv.Itoa(i)
				}
				change(t, db, name, true)
				if slices.Contains(tt.undecodable, i) {
					_, err := db.DB.ExecContext(t.Context(), `INSERT INTO outbox_events (idempotency_key, payload, created_at) VALUES ($1, '\xffff', now())`,
						"garbage-"+strconv.Itoa(i))
					require.NoError(t, err)
				}
			}
			wantRejected := len(tt.bad) + len(tt.undecodable)
			wantDelivered := n - len(tt.bad)

			log := &refusingLog{auditLog: &auditLog{seen: map[string]int{}}, refuse: func(ev *auditv1.NewEvent) bool {
				return len(ev.GetTarget()) > 4 && ev.GetTarget()[:4] == "bad-"
			}}
			var logs kerneltest.Buffer
			relay := outbox.NewRelay(db.DB, cfg, serveHandler(t, log),
				outbox.Config{PollInterval: time.Hour, MaxBackoff: 200 * time.Millisecond}, slog.New(slog.NewTextHandler(&logs, nil)))
			runRelay(t, relay)
			require.Eventually(t, func() bool {
				return log.count() == wantDelivered && relay.Backlog() == 0 && relay.Rejected() == int64(wantRejected)
			}, 10*time.Second, 10*time.Millisecond, "%d of %d delivered, %d of %d rejected, backlog %d",
				log.count(), wantDelivered, relay.Rejected(), wantRejected, relay.Backlog())

			// Events behind the refused ones keep flowing.
			change(t, db, "after", true)
			// Delivered means recorded and marked in the outbox, which the
			// relay does after Record returns.
			var deliveredKeys []string
			require.Eventually(t, func() bool {
				deliveredKeys, _ = outboxKeys(t, db.DB, `delivered_at > 'epoch'`)
				return log.count() == wantDelivered+1 && len(deliveredKeys) == wantDelivered+1
			}, 5*time.Second, 10*time.Millisecond)
			time.Sleep(100 * time.Millisecond) // nothing more comes
			assert.Equal(t, int64(wantRejected), relay.Rejected(), "a refused event was sent again")

			rejectedKeys, rejectedIDs := outboxKeys(t, db.DB, `delivered_at = 'epoch'`)
			assert.Len(t, rejectedKeys, wantRejected)
			log.mu.Lock()
			assert.Equal(t, deliveredKeys, log.keys, "not every accepted event arrived, once, in order")
			for key, times := range log.seen {
				assert.Equal(t, 1, times, "event %s sent %d times", key, times)
			}
			log.mu.Unlock()

			out := logs.String()
			for _, id := range rejectedIDs {
				assert.Regexp(t, `level=ERROR msg="audit event refused[^\n]*outbox_id=`+strconv.FormatInt(id, 10)+` [^\n]*reason=`, out)
			}
			if len(tt.bad) > 0 {
				assert.Contains(t, out, "metadata is larger than 8192 bytes", "the log does not say why")
			}
		})
	}
}

// sizeLimitedLog stands in for an Audit service whose max_request_bytes a
// batch of more than max events exceeds.
type sizeLimitedLog struct {
	*auditLog
	max int
}

func (a *sizeLimitedLog) Record(ctx context.Context, req *connect.Request[auditv1.RecordRequest]) (*connect.Response[auditv1.RecordResponse], error) {
	if len(req.Msg.GetEvents()) > a.max {
		return nil, connect.NewError(connect.CodeResourceExhausted, errors.New("message size exceeds the maximum"))
	}
	return a.auditLog.Record(ctx, req)
}

// TestRelaySplitsBatchesTooLargeForAudit: a batch Audit refuses as too
// large is sent in halves, in order; nothing is set aside.
func TestRelaySplitsBatchesTooLargeForAudit(t *testing.T) {
	t.Parallel()
	db, cfg := openDB(t)
	const n = 20
	for i := range n {
		change(t, db, "item-"+strconv.Itoa(i), true)
	}
	log := &sizeLimitedLog{auditLog: &auditLog{seen: map[string]int{}}, max: 3}
	relay := outbox.NewRelay(db.DB, cfg, serveHandler(t, log),
		outbox.Config{PollInterval: time.Hour, MaxBackoff: 200 * time.Millisecond}, nil)
	runRelay(t, relay)
	// Delivered means recorded by Audit and marked in the outbox, which
	// the relay does after Record returns.
	var deliveredKeys []string
	require.Eventually(t, func() bool {
		deliveredKeys, _ = outboxKeys(t, db.DB, `delivered_at > 'epoch'`)
		return log.count() == n && len(deliveredKeys) == n
	}, 10*time.Second, 10*time.Millisecond, "%d of %d recorded, %d marked delivered", log.count(), n, len(deliveredKeys))
	assert.Zero(t, relay.Rejected())
	log.mu.Lock()
	defer log.mu.Unlock()
	assert.Equal(t, deliveredKeys, log.keys, "not every event arrived, once, in order")
}

// TestStandbyRelayKeepsItsBacklogCurrent runs a relay that never gets the
// relay lock, as a standby replica: its backlog still follows the table.
func TestStandbyRelayKeepsItsBacklogCurrent(t *testing.T) {
	t.Parallel()
	db, cfg := openDB(t)
	log := &auditLog{seen: map[string]int{}}
	relay := outbox.NewRelay(db.DB, cfg, serveHandler(t, log), outbox.Config{PollInterval: 50 * time.Millisecond}, nil)
	conn := holdRelayLock(t, db.DB, relay) // the test is the replica relaying
	runRelay(t, relay)

	for i := range 5 {
		change(t, db, "item-"+strconv.Itoa(i), true)
	}
	require.Eventually(t, func() bool { return relay.Backlog() == 5 }, 5*time.Second, 10*time.Millisecond,
		"standby backlog %d, want 5", relay.Backlog())
	assert.Zero(t, log.count(), "the standby delivered")

	// The other replica delivers them.
	_, err := conn.ExecContext(t.Context(), `UPDATE outbox_events SET delivered_at = now()`)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return relay.Backlog() == 0 }, 5*time.Second, 10*time.Millisecond,
		"standby backlog %d, want 0", relay.Backlog())
}

// TestBatchSizeIsCappedAtAuditsLimit: Audit's Record takes at most 500
// events, so a larger batch could never be delivered.
func TestBatchSizeIsCappedAtAuditsLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		batchSize int
		wantErr   bool
	}{
		{0, false},
		{1, false},
		{500, false},
		{501, true},
		{1000, true},
		{-1, true},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.batchSize), func(t *testing.T) {
			t.Parallel()
			_, err := config.Load[struct {
				Outbox outbox.Config `koanf:"outbox"`
			}]([]byte(fmt.Sprintf("outbox:\n  batch_size: %d\n", tt.batchSize)), config.WithArgs(nil), config.WithLookupEnv(nil))
			if tt.wantErr {
				require.Error(t, err)
				assert.Contains(t, err.Error(), "outbox.batch_size")
				return
			}
			require.NoError(t, err)
		})
	}
}

// TestRelayPollsWhileItCannotListen: the relay's listener has a connection
// of its own, which can fail while the pool works (a connection limit
// reached, say). The relay then delivers by polling, and stops when asked.
func TestRelayPollsWhileItCannotListen(t *testing.T) {
	t.Parallel()
	db, cfg := openDB(t)
	listenerCfg := cfg
	listenerCfg.DSN = config.DSN(fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable&connect_timeout=1", kerneltest.RefusingAddr(t)))

	log := &auditLog{seen: map[string]int{}}
	relay := outbox.NewRelay(db.DB, listenerCfg, serveHandler(t, log), outbox.Config{PollInterval: 50 * time.Millisecond}, nil)
	runRelay(t, relay) // its cleanup fails the test if Run does not return
	for i := range 3 {
		change(t, db, "item-"+strconv.Itoa(i), true)
	}
	require.Eventually(t, func() bool { return log.count() == 3 }, 10*time.Second, 10*time.Millisecond,
		"%d of 3 delivered without notifications", log.count())
}

// TestStandbyRelayPolls: every audited write notifies every replica, and a
// standby that looked each time would take a transaction and count the
// backlog on every write. It looks at its poll interval only: with an
// hour's, notified writes leave its backlog as it was.
func TestStandbyRelayPolls(t *testing.T) {
	t.Parallel()
	db, cfg := openDB(t)
	relay := outbox.NewRelay(db.DB, cfg, serveHandler(t, &auditLog{seen: map[string]int{}}), outbox.Config{PollInterval: time.Hour}, nil)
	holdRelayLock(t, db.DB, relay)
	runRelay(t, relay)
	time.Sleep(300 * time.Millisecond) // its first look, and its LISTEN
	for i := range 5 {
		change(t, db, "item-"+strconv.Itoa(i), true)
	}
	time.Sleep(500 * time.Millisecond)
	assert.Zero(t, relay.Backlog(), "the standby looked on a notification")
}

// holdRelayLock takes relay's lock on a connection of its own until the test
// ends, as another replica relaying would, and returns that connection.
func holdRelayLock(t *testing.T, db *sql.DB, relay *outbox.Relay) *sql.Conn {
	t.Helper()
	conn, err := db.Conn(t.Context())
	require.NoError(t, err)
	_, err = conn.ExecContext(t.Context(), `SELECT pg_advisory_lock($1)`, relay.LockKey())
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock($1)`, relay.LockKey())
		_ = conn.Close()
	})
	return conn
}

// TestRelayPurgesOldDeliveriesOnly: delivered events go after Retention;
// pending, recent and rejected ones stay.
func TestRelayPurgesOldDeliveriesOnly(t *testing.T) {
	t.Parallel()
	db, cfg := openDB(t)
	for _, name := range []string{"old", "recent", "rejected", "pending"} {
		change(t, db, name, true)
	}
	keys, ids := outboxKeys(t, db.DB, "true")
	for i, at := range []string{"now() - interval '2 days'", "now() - interval '1 hour'", outbox.RejectedMark} {
		_, err := db.DB.ExecContext(t.Context(), `UPDATE outbox_events SET delivered_at = `+at+` WHERE id = $1`, ids[i])
		require.NoError(t, err)
	}
	log := &auditLog{seen: map[string]int{}}
	relay := outbox.NewRelay(db.DB, cfg, serveHandler(t, log), outbox.Config{PollInterval: 50 * time.Millisecond, Retention: 24 * time.Hour}, nil)
	runRelay(t, relay)

	require.Eventually(t, func() bool {
		left, _ := outboxKeys(t, db.DB, "true")
		return log.count() == 1 && len(left) == 3
	}, 5*time.Second, 10*time.Millisecond)
	left, _ := outboxKeys(t, db.DB, "true")
	assert.Equal(t, keys[1:], left, "not the old delivery alone was purged")
}

// TestRelayPurgeCatchesUp: more delivered events than one purge takes
// (after an outage, or a service writing faster than a purge a minute)
// are all purged within seconds, not a purge's worth a minute.
func TestRelayPurgeCatchesUp(t *testing.T) {
	t.Parallel()
	db, cfg := openDB(t)
	const old = 150_000 // one and a half purges
	_, err := db.DB.ExecContext(t.Context(), `INSERT INTO outbox_events (idempotency_key, payload, created_at, delivered_at)
		SELECT 'old-' || i, '\x00', now() - interval '3 days', now() - interval '2 days' FROM generate_series(1, $1) AS i`, old)
	require.NoError(t, err)
	log := &auditLog{seen: map[string]int{}}
	relay := outbox.NewRelay(db.DB, cfg, serveHandler(t, log), outbox.Config{PollInterval: 50 * time.Millisecond, Retention: 24 * time.Hour}, nil)
	runRelay(t, relay)
	require.Eventually(t, func() bool {
		var n int
		return db.DB.QueryRowContext(t.Context(), `SELECT count(*) FROM outbox_events`).Scan(&n) == nil && n == 0
	}, 20*time.Second, 50*time.Millisecond, "old deliveries left")
}

// TestRelayDeliversWhenThePurgeFails: a purge that fails (a statement
// timeout after a long outage, say) must not undo the batch's marks, or
// the same batch would be sent again at every poll.
func TestRelayDeliversWhenThePurgeFails(t *testing.T) {
	t.Parallel()
	db, cfg := openDB(t)
	_, err := db.DB.ExecContext(t.Context(), `CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'no deletes here'; END $$;
		CREATE TRIGGER refuse_delete BEFORE DELETE ON outbox_events FOR EACH ROW EXECUTE FUNCTION refuse_delete()`)
	require.NoError(t, err)
	change(t, db, "old", true)
	_, err = db.DB.ExecContext(t.Context(), `UPDATE outbox_events SET delivered_at = now() - interval '2 days'`)
	require.NoError(t, err)
	change(t, db, "new", true)
	log := &auditLog{seen: map[string]int{}}
	// The old delivery is past Retention, so the purge does try it.
	relay := outbox.NewRelay(db.DB, cfg, serveHandler(t, log), outbox.Config{PollInterval: 20 * time.Millisecond, Retention: 24 * time.Hour}, nil)
	runRelay(t, relay)

	require.Eventually(t, func() bool { return relay.Backlog() == 0 && log.count() == 1 }, 5*time.Second, 10*time.Millisecond)
	time.Sleep(300 * time.Millisecond) // fifteen polls
	log.mu.Lock()
	defer log.mu.Unlock()
	assert.Equal(t, 1, log.requests, "the batch was sent again")
}

// flakyLog is an Audit service that refuses every call while down is set.
type flakyLog struct {
	*auditLog
	down  atomic.Bool
	tries atomic.Int64
}

func (a *flakyLog) Record(ctx context.Context, req *connect.Request[auditv1.RecordRequest]) (*connect.Response[auditv1.RecordResponse], error) {
	a.tries.Add(1)
	if a.down.Load() {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("down"))
	}
	return a.auditLog.Record(ctx, req)
}

// TestRelayTriesAgainWhenTheDatabaseIsBack: the relay's listener losing
// its connection and getting it back says the database is back, and a
// backoff for a database that was down does not run its course.
func TestRelayTriesAgainWhenTheDatabaseIsBack(t *testing.T) {
	t.Parallel()
	db, cfg := openDB(t)
	// The listener's session by name, so that it alone is ended.
	listenerCfg := cfg
	listenerCfg.DSN = config.DSN(kerneltest.WithApplicationName(t, cfg.DSN.Value(), cfg.Schema))

	log := &flakyLog{auditLog: &auditLog{seen: map[string]int{}}}
	log.down.Store(true)
	relay := outbox.NewRelay(db.DB, listenerCfg, serveHandler(t, log), outbox.Config{PollInterval: time.Hour, MaxBackoff: time.Hour}, nil)
	relay.SetFirstBackoff(time.Hour)
	runRelay(t, relay)
	var listening int
	require.Eventually(t, func() bool {
		return db.DB.QueryRowContext(t.Context(), `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, cfg.Schema).Scan(&listening) == nil && listening == 1
	}, 10*time.Second, 10*time.Millisecond, "the listener never connected")
	change(t, db, "item", true)
	require.Eventually(t, func() bool { return log.tries.Load() > 0 }, 10*time.Second, 10*time.Millisecond)

	log.down.Store(false)
	_, err := db.DB.ExecContext(t.Context(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, cfg.Schema)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return log.count() == 1 }, 10*time.Second, 10*time.Millisecond,
		"the relay waited out its backoff after the listener reconnected")
}
