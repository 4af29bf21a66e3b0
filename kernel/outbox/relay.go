package outbox

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/lib/pq"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"portcullis.dev/kernel/database"
	"portcullis.dev/kernel/internal/backoff"
	"portcullis.dev/kernel/logging"
	auditv1 "portcullis.dev/proto/audit/v1"
)

// Config tunes a service's relay (its `outbox:` section). Zero values mean
// the defaults.
type Config struct {
	// BatchSize is the most events sent in one Record call. Zero means 500,
	// which is also the most: the Audit contract refuses a larger batch.
	BatchSize int `koanf:"batch_size" validate:"min=0,max=500"`
	// PollInterval is the backstop: the relay looks for pending events this
	// often even if no notification arrives. Zero means 5s.
	PollInterval time.Duration `koanf:"poll_interval" validate:"min=0,max=1h"`
	// MaxBackoff caps the wait between attempts while Audit is unreachable.
	// Zero means 30s.
	MaxBackoff time.Duration `koanf:"max_backoff" validate:"min=0,max=1h"`
	// Retention is how long delivered events stay in the table, for
	// inspection. Zero means 24h.
	Retention time.Duration `koanf:"retention" validate:"min=0"`
}

func (c Config) withDefaults() Config {
	c.BatchSize = cmp.Or(c.BatchSize, 500)
	c.PollInterval = cmp.Or(c.PollInterval, 5*time.Second)
	c.MaxBackoff = cmp.Or(c.MaxBackoff, 30*time.Second)
	c.Retention = cmp.Or(c.Retention, 24*time.Hour)
	return c
}

// Recorder is where events go: the Audit service's generated client.
type Recorder interface {
	Record(context.Context, *connect.Request[auditv1.RecordRequest]) (*connect.Response[auditv1.RecordResponse], error)
}

// Relay delivers a schema's pending outbox events to a [Recorder]. Create
// it with [NewRelay] and run it with [Relay.Run].
type Relay struct {
	db     *sql.DB
	dbcfg  database.Config
	audit  Recorder
	cfg    Config
	logger *slog.Logger

	backlog   atomic.Int64
	delivered atomic.Int64
	rejected  atomic.Int64
	nextPurge time.Time

	firstBackoff time.Duration // the wait after a first failure; doubles after each
}

// NewRelay returns a relay for the outbox in dbcfg.Schema, reading through
// db (the service's pool) and listening for notifications on a connection
// of its own to dbcfg.DSN. A nil logger discards.
func NewRelay(db *sql.DB, dbcfg database.Config, audit Recorder, cfg Config, logger *slog.Logger) *Relay {
	return &Relay{db: db, dbcfg: dbcfg, audit: audit, cfg: cfg.withDefaults(), logger: logging.OrDiscard(logger), firstBackoff: 200 * time.Millisecond}
}

// Backlog is the number of events waiting for delivery, as of the last
// look.
func (r *Relay) Backlog() int64 { return r.backlog.Load() }

// Rejected is the number of events this relay set aside because the Audit
// service refused them as invalid (see [Relay.Run]).
func (r *Relay) Rejected() int64 { return r.rejected.Load() }

// Collectors expose the backlog and the delivered and rejected counts to
// Prometheus.
func (r *Relay) Collectors() []prometheus.Collector {
	labels := prometheus.Labels{"schema": r.dbcfg.Schema}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "portcullis_outbox_backlog", Help: "Audit events waiting for delivery, in the service's whole outbox: every replica reports the same count, so aggregate with max(), not sum().", ConstLabels: labels,
		}, func() float64 { return float64(r.backlog.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "portcullis_outbox_delivered_total", Help: "Audit events delivered to the Audit service.", ConstLabels: labels,
		}, func() float64 { return float64(r.delivered.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "portcullis_outbox_rejected_total", Help: "Audit events the Audit service refused as invalid, set aside in the outbox and not retried.",
			ConstLabels: labels,
		}, func() float64 { return float64(r.rejected.Load()) }),
	}
}

// Run delivers events until ctx ends, then returns nil. While the Audit
// service is unreachable it backs off, up to MaxBackoff, and logs once per
// outage; events wait in the table meanwhile.
//
// One bad event must not hold up those behind it forever: when Audit
// refuses a batch as invalid, the relay splits it and sends the halves, in
// order, until the events Audit accepts are delivered and each one it
// refuses on its own is isolated. Such an event (or one whose payload cannot
// be decoded) is set aside: marked with the delivered_at [RejectedMark] so
// it is not sent again, logged at error level with its outbox id and the
// reason, and counted in portcullis_outbox_rejected_total. It stays in the
// table, never purged, until an operator looks at it; setting its
// delivered_at back to NULL sends it again.
func (r *Relay) Run(ctx context.Context) error {
	wake := make(chan struct{}, 1)
	// reconnected says the database is back after the listener lost it: a
	// backoff for a database that was down need not run its course.
	reconnected := make(chan struct{}, 1)
	listener := pq.NewListener(r.dbcfg.DSN.Value(), 100*time.Millisecond, 10*time.Second, func(ev pq.ListenerEventType, err error) {
		if ev == pq.ListenerEventReconnected {
			signal(wake) // notifications may have been missed meanwhile
			signal(reconnected)
		}
	})
	defer listener.Close()
	go func() {
		// Listen waits, without a context, until the listener's own
		// connection is up, which can take for ever while the pool works
		// (a connection limit reached, say): the relay polls meanwhile,
		// and Close, when Run returns, ends the wait.
		err := listener.Listen(channelPrefix + r.dbcfg.Schema)
		switch {
		case err == nil:
			signal(wake) // for what was committed before it listened
		case !errors.Is(err, net.ErrClosed):
			r.logger.WarnContext(ctx, "outbox relay cannot listen for notifications; polling only", "err", err)
		}
	}()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-listener.NotificationChannel():
				if !ok {
					return
				}
				signal(wake)
			}
		}
	}()

	failures := 0
	var counted time.Time // when the backlog was last counted
	for {
		n, err := r.deliverBatch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil && n == r.cfg.BatchSize && time.Since(counted) < backlogRecount {
			// More wait: counting them all after every batch would make
			// catching up with a large backlog quadratic. The count goes
			// down by the batch, and is taken again once a batch is short,
			// or backlogRecount on, so that a relay falling behind, whose
			// batches are always full, still shows it.
			r.backlog.Store(max(r.backlog.Load()-int64(n), 0))
		} else {
			counted = time.Now()
			// Every replica counts the backlog each time it looks, whether
			// it holds the lock or not, so each one's gauge and /readyz
			// detail stay current.
			r.updateBacklog(ctx)
		}
		var wait time.Duration
		switch {
		case errors.Is(err, errStandby):
			// Every audited write notifies every replica: a standby that
			// looked each time would take a transaction and count the
			// backlog on every write, for nothing. It polls, to take over
			// and to keep its backlog current. Another replica delivers:
			// an outage this one saw is over, or is that one's to report.
			failures = 0
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(r.cfg.PollInterval):
			}
			continue
		case err != nil:
			failures++
			if failures == 1 {
				r.logger.WarnContext(ctx, "cannot deliver audit events; they wait in the outbox", "backlog", r.backlog.Load(), "err", err)
			}
			wait = backoff.Wait(failures, r.firstBackoff, r.cfg.MaxBackoff)
		case failures > 0:
			r.logger.InfoContext(ctx, "delivering audit events again", "after_failures", failures)
			failures = 0
			continue
		case n == r.cfg.BatchSize:
			continue // more are waiting
		default:
			wait = r.cfg.PollInterval
		}
		select {
		case <-ctx.Done():
			return nil
		case <-reconnected:
		case <-wake:
			if err != nil {
				// A notification does not end a backoff early: it would
				// turn an outage into a busy loop.
				select {
				case <-ctx.Done():
					return nil
				case <-reconnected:
				case <-time.After(wait):
				}
			}
		case <-time.After(wait):
		}
	}
}

// RejectedMark is the delivered_at of an event the Audit service refused
// (1970-01-01 UTC, PostgreSQL's 'epoch'), as an SQL expression:
//
//	SELECT id, idempotency_key FROM outbox_events WHERE delivered_at = 'epoch'
//
// lists them. A column of its own would be clearer, but the outbox table is
// in every service's schema, created by each service's own migrations from
// [Schema]: a new column would need a migration in every service. No real
// delivery happens at the epoch, so the mark cannot be mistaken for one,
// and it keeps the event out of the pending set with the columns there are.
const RejectedMark = "timestamptz 'epoch'"

// pending is an event read from the outbox.
type pending struct {
	id  int64
	key string
	ev  *auditv1.NewEvent // nil when the payload could not be decoded
}

// rejection is an event set aside, and why.
type rejection struct {
	pending
	reason string
}

// outcome is what sending a batch achieved before it finished or failed.
type outcome struct {
	delivered []int64
	rejected  []rejection
}

// purgeChunk bounds one statement of [Relay.purge]: the first purge after
// a long outage may find millions of rows, and one DELETE of them all
// would hold its locks, and risk a statement timeout, for as long.
const purgeChunk = 10_000

// purgeChunks bounds the statements of one purge.
const purgeChunks = 10

// A purge runs a minute after the last, or purgeBehindEvery after one
// that left rows behind: 20,000 rows a second at most, ten times what a
// busy service writes, so the table shrinks back after an outage.
const purgeBehindEvery = 5 * time.Second

// purge deletes the events delivered longer than Retention ago, after the
// batch's commit and apart from it: a purge that fails must not undo the
// marks, or the same batch would be sent again and again. It only logs a
// failure; the next purge, a minute on, tries again. Rejected events are
// kept: they are the evidence of what Audit never received. It reports
// whether it stopped with rows left to purge.
func (r *Relay) purge(ctx context.Context) (behind bool) {
	before := time.Now().Add(-r.cfg.Retention)
	// At most purgeChunks statements a minute, so that delivering is not
	// held up by a purge after a long outage: it catches up over minutes.
	for range purgeChunks {
		res, err := r.db.ExecContext(ctx, `DELETE FROM `+Table+` WHERE id IN (SELECT id FROM `+Table+`
			WHERE delivered_at < $1 AND delivered_at > `+RejectedMark+` LIMIT $2)`, before, purgeChunk)
		if err != nil {
			if ctx.Err() == nil {
				r.logger.WarnContext(ctx, "cannot purge delivered audit events from the outbox; trying again in a minute", "err", err)
			}
			return false
		}
		if n, err := res.RowsAffected(); err != nil || n < purgeChunk {
			return false
		}
	}
	return true
}

// backlogRecount is how long the relay goes on full batches without
// counting its backlog again.
const backlogRecount = 10 * time.Second

// errStandby is deliverBatch's answer when another replica holds the
// relay lock.
var errStandby = errors.New("another replica is relaying")

// deliverBatch sends the oldest pending events, at most BatchSize, and
// marks them delivered, or rejected (see [Relay.Run]). Only one replica of a
// service sends at a time (an advisory lock), so events leave in id order. It
// returns how many events it dealt with; with an error, those dealt with
// before it are marked all the same. A standby gets errStandby.
func (r *Relay) deliverBatch(ctx context.Context) (int, error) {
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	var locked bool
	if err := tx.QueryRowContext(ctx, `SELECT pg_try_advisory_xact_lock($1)`, r.lockKey()).Scan(&locked); err != nil {
		return 0, fmt.Errorf("take the relay lock: %w", err)
	}
	if !locked {
		return 0, errStandby
	}
	batch, err := readPending(ctx, tx, r.cfg.BatchSize)
	if err != nil {
		return 0, err
	}
	var (
		out      outcome
		sendErr  error
		sendable = make([]pending, 0, len(batch))
	)
	for _, p := range batch {
		if p.ev == nil {
			out.rejected = append(out.rejected, rejection{p, "the payload is not an audit.v1.NewEvent"})
			continue
		}
		sendable = append(sendable, p)
	}
	if len(sendable) > 0 {
		sendErr = r.send(ctx, sendable, &out)
	}
	handled := len(out.delivered) + len(out.rejected)
	if handled == 0 && sendErr != nil {
		return 0, sendErr
	}
	if len(out.delivered) > 0 {
		if _, err := tx.ExecContext(ctx, `UPDATE `+Table+` SET delivered_at = now() WHERE id = ANY($1)`, pq.Array(out.delivered)); err != nil {
			return 0, fmt.Errorf("mark delivered: %w", err)
		}
	}
	if len(out.rejected) > 0 {
		ids := make([]int64, len(out.rejected))
		for i, rj := range out.rejected {
			ids[i] = rj.id
		}
		if _, err := tx.ExecContext(ctx, `UPDATE `+Table+` SET delivered_at = `+RejectedMark+` WHERE id = ANY($1)`, pq.Array(ids)); err != nil {
			return 0, fmt.Errorf("mark rejected: %w", err)
		}
	}
	// If this commit fails after Record succeeded, the batch is sent again
	// and Audit recognises it by the idempotency keys.
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit delivery: %w", err)
	}
	if now := time.Now(); now.After(r.nextPurge) {
		r.nextPurge = now.Add(time.Minute)
		if r.purge(ctx) {
			r.nextPurge = now.Add(purgeBehindEvery)
		}
	}
	r.delivered.Add(int64(len(out.delivered)))
	for _, rj := range out.rejected {
		r.rejected.Add(1)
		r.logger.ErrorContext(ctx, "audit event refused by the Audit service; set aside in the outbox and not sent again",
			"outbox_id", rj.id, "idempotency_key", rj.key, "action", rj.ev.GetAction(), "target", rj.ev.GetTarget(), "reason", rj.reason)
	}
	return handled, sendErr
}

// readPending returns the oldest undelivered events, at most limit.
func readPending(ctx context.Context, tx *sql.Tx, limit int) ([]pending, error) {
	rows, err := tx.QueryContext(ctx, `SELECT id, idempotency_key, payload FROM `+Table+` WHERE delivered_at IS NULL ORDER BY id LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("read pending events: %w", err)
	}
	defer rows.Close()
	var batch []pending
	for rows.Next() {
		var (
			p       pending
			payload []byte
		)
		if err := rows.Scan(&p.id, &p.key, &payload); err != nil {
			return nil, fmt.Errorf("read pending events: %w", err)
		}
		ev := &auditv1.NewEvent{}
		if err := proto.Unmarshal(payload, ev); err == nil {
			p.ev = ev
		}
		batch = append(batch, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read pending events: %w", err)
	}
	return batch, nil
}

// splittable reports whether a batch of n events that Audit refused with
// err is worth sending in halves: refused as invalid (one bad event
// refuses the batch), or, with more than one event, as too large (a
// request over Audit's max_request_bytes). A single event too large is not
// set aside: it waits, and the backlog shows it.
func splittable(err error, n int) bool {
	switch connect.CodeOf(err) {
	case connect.CodeInvalidArgument:
		return true
	case connect.CodeResourceExhausted:
		return n > 1
	}
	return false
}

// send records batch in order, adding what it delivered or rejected to out.
// When Audit refuses the batch as invalid or too large, it bisects: the first half, then
// the second, so the order holds and a batch with one bad event costs about
// 2*log2(len) calls. An event refused on its own is rejected. Any other
// error (Audit unreachable, a timeout) stops it: what follows is not sent.
func (r *Relay) send(ctx context.Context, batch []pending, out *outcome) error {
	events := make([]*auditv1.NewEvent, len(batch))
	for i, p := range batch {
		events[i] = p.ev
	}
	callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err := r.audit.Record(callCtx, connect.NewRequest(&auditv1.RecordRequest{Events: events}))
	cancel()
	switch {
	case err == nil:
		for _, p := range batch {
			out.delivered = append(out.delivered, p.id)
		}
		return nil
	case !splittable(err, len(batch)) || ctx.Err() != nil:
		return fmt.Errorf("record %d events: %w", len(batch), err)
	case len(batch) == 1: // refused as invalid on its own
		out.rejected = append(out.rejected, rejection{batch[0], err.Error()})
		return nil
	}
	mid := len(batch) / 2
	if err := r.send(ctx, batch[:mid], out); err != nil {
		return err
	}
	return r.send(ctx, batch[mid:], out)
}

func (r *Relay) updateBacklog(ctx context.Context) {
	var n int64
	if err := r.db.QueryRowContext(ctx, `SELECT count(*) FROM `+Table+` WHERE delivered_at IS NULL`).Scan(&n); err == nil {
		r.backlog.Store(n)
	}
}

func (r *Relay) lockKey() int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("portcullis:outbox:" + r.dbcfg.Schema))
	return int64(h.Sum64())
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
