package outbox

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/lib/pq"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"portcullis.dev/kernel/database"
	"portcullis.dev/kernel/logging"
	auditv1 "portcullis.dev/proto/audit/v1"
)

// Config tunes a service's relay (its `outbox:` section). Zero values mean
// the defaults.
type Config struct {
	// BatchSize is the most events sent in one Record call. Zero means 500.
	BatchSize int `koanf:"batch_size" validate:"min=0,max=1000"`
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
	lastPurge time.Time
}

// NewRelay returns a relay for the outbox in dbcfg.Schema, reading through
// db (the service's pool) and listening for notifications on a connection
// of its own to dbcfg.DSN. A nil logger discards.
func NewRelay(db *sql.DB, dbcfg database.Config, audit Recorder, cfg Config, logger *slog.Logger) *Relay {
	return &Relay{db: db, dbcfg: dbcfg, audit: audit, cfg: cfg.withDefaults(), logger: logging.OrDiscard(logger)}
}

// Backlog is the number of events waiting for delivery, as of the last
// look.
func (r *Relay) Backlog() int64 { return r.backlog.Load() }

// Collectors expose the backlog and the delivered count to Prometheus.
func (r *Relay) Collectors() []prometheus.Collector {
	labels := prometheus.Labels{"schema": r.dbcfg.Schema}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "portcullis_outbox_backlog", Help: "Audit events waiting for delivery.", ConstLabels: labels,
		}, func() float64 { return float64(r.backlog.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "portcullis_outbox_delivered_total", Help: "Audit events delivered to the Audit service.", ConstLabels: labels,
		}, func() float64 { return float64(r.delivered.Load()) }),
	}
}

// Run delivers events until ctx ends, then returns nil. While the Audit
// service is unreachable it backs off, up to MaxBackoff, and logs once per
// outage; events wait in the table meanwhile.
func (r *Relay) Run(ctx context.Context) error {
	wake := make(chan struct{}, 1)
	listener := pq.NewListener(r.dbcfg.DSN.Value(), 100*time.Millisecond, 10*time.Second, func(ev pq.ListenerEventType, err error) {
		if ev == pq.ListenerEventReconnected {
			signal(wake) // notifications may have been missed meanwhile
		}
	})
	defer listener.Close()
	if err := listener.Listen(channelPrefix + r.dbcfg.Schema); err != nil {
		r.logger.WarnContext(ctx, "outbox relay cannot listen for notifications; polling only", "err", err)
	}
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
	for {
		n, err := r.deliverBatch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var wait time.Duration
		switch {
		case err != nil:
			failures++
			if failures == 1 {
				r.logger.WarnContext(ctx, "cannot deliver audit events; they wait in the outbox", "backlog", r.backlog.Load(), "err", err)
			}
			wait = backoff(failures, r.cfg.MaxBackoff)
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
		case <-wake:
			if err != nil {
				// A notification does not end a backoff early: it would
				// turn an outage into a busy loop.
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(wait):
				}
			}
		case <-time.After(wait):
		}
	}
}

// deliverBatch sends the oldest pending events, at most BatchSize, and
// marks them delivered. Only one replica of a service sends at a time (an
// advisory lock), so events leave in order.
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
		return 0, nil // another replica is relaying
	}
	rows, err := tx.QueryContext(ctx, `SELECT id, payload FROM `+Table+` WHERE delivered_at IS NULL ORDER BY id LIMIT $1`, r.cfg.BatchSize)
	if err != nil {
		return 0, fmt.Errorf("read pending events: %w", err)
	}
	var (
		ids    []int64
		events []*auditv1.NewEvent
	)
	for rows.Next() {
		var (
			id      int64
			payload []byte
		)
		if err := rows.Scan(&id, &payload); err != nil {
			rows.Close()
			return 0, err
		}
		ev := &auditv1.NewEvent{}
		if err := proto.Unmarshal(payload, ev); err != nil {
			rows.Close()
			return 0, fmt.Errorf("decode outbox event %d: %w", id, err)
		}
		ids = append(ids, id)
		events = append(events, ev)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if len(events) > 0 {
		callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := r.audit.Record(callCtx, connect.NewRequest(&auditv1.RecordRequest{Events: events}))
		cancel()
		if err != nil {
			r.updateBacklog(ctx)
			return 0, fmt.Errorf("record %d events: %w", len(events), err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE `+Table+` SET delivered_at = now() WHERE id = ANY($1)`, pq.Array(ids)); err != nil {
			return 0, fmt.Errorf("mark delivered: %w", err)
		}
	}
	if time.Since(r.lastPurge) > time.Minute {
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+Table+` WHERE delivered_at < $1`, time.Now().Add(-r.cfg.Retention)); err != nil {
			return 0, fmt.Errorf("purge delivered events: %w", err)
		}
		r.lastPurge = time.Now()
	}
	// If this commit fails after Record succeeded, the batch is sent again
	// and Audit recognises it by the idempotency keys.
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit delivery: %w", err)
	}
	r.delivered.Add(int64(len(events)))
	r.updateBacklog(ctx)
	return len(events), nil
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

// backoff grows from 200ms to max, with jitter so replicas do not retry in
// step.
func backoff(failures int, max time.Duration) time.Duration {
	d := 200 * time.Millisecond << min(failures-1, 10)
	d = min(d, max)
	return d/2 + rand.N(d/2+1)
}
