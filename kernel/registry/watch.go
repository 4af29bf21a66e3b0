package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"portcullis.dev/kernel/internal/backoff"
)

// Timings of the blocking-query loop.
const (
	// minQueryInterval is the least time between the starts of two queries
	// of one watcher: Consul's blocking-query rules ask clients to rate-limit,
	// so that a result that changes constantly, or an index stuck at a value
	// that does not block, cannot make the loop spin. It also bounds how much
	// a change can be delayed.
	minQueryInterval = 100 * time.Millisecond
	// waitTime is how long a query asks Consul to hold it open when nothing
	// changes; each query asks for a value jittered by ±10%, so that
	// watchers started together drift apart. A minute, rather than
	// Consul's five, bounds how long a connection that died silently goes
	// unnoticed.
	waitTime = time.Minute
	// queryGrace is how much longer than its wait time (plus the up to
	// wait/16 Consul adds) a query may take before it is abandoned.
	queryGrace = 5 * time.Second

	defaultBackoffMin = 250 * time.Millisecond
	defaultBackoffMax = 10 * time.Second
)

// ErrClosed is what Wait returns once its watcher is closed without having
// had an answer from Consul.
var ErrClosed = errors.New("registry: watcher closed")

// WatchOption configures a [Resolver] or a [CatalogWatcher].
type WatchOption func(*watchOptions)

type watchOptions struct {
	logger                 *slog.Logger
	backoffMin, backoffMax time.Duration
	settle                 time.Duration
}

// WithWatchLogger sets the watcher's logger. Nil, the default, means the
// [Registry]'s.
func WithWatchLogger(l *slog.Logger) WatchOption {
	return func(o *watchOptions) { o.logger = l }
}

// WithBackoff sets how long a watcher waits after a failed query: initial
// after the first failure, doubling with each further one up to max, each
// wait shortened at random by up to half so that watchers do not retry in
// step. Zero values mean 250ms and 10s.
func WithBackoff(initial, max time.Duration) WatchOption {
	return func(o *watchOptions) { o.backoffMin, o.backoffMax = initial, max }
}

// WithSettle sets how long a watcher that finds Consul back after an
// outage, or restarted (its index went backwards), keeps what it knew
// before alongside what Consul now says. A restarted agent that lost its
// state knows no instance until each registers again and passes a check;
// without this, every route would vanish for those seconds. Another
// settling starts no sooner than d after one ends, so that a Consul failing
// often cannot keep an instance that left. Zero means three check intervals
// plus two seconds; negative turns it off.
func WithSettle(d time.Duration) WatchOption {
	return func(o *watchOptions) { o.settle = d }
}

func (r *Registry) watchOptions(opts []WatchOption) watchOptions {
	o := watchOptions{backoffMin: defaultBackoffMin, backoffMax: defaultBackoffMax}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = r.logger
	}
	if o.backoffMin <= 0 {
		o.backoffMin = defaultBackoffMin
	}
	if o.backoffMax <= 0 {
		o.backoffMax = defaultBackoffMax
	}
	o.backoffMax = max(o.backoffMax, o.backoffMin)
	if o.settle == 0 {
		o.settle = 3*r.cfg.CheckInterval + 2*time.Second
	}
	return o
}

// watch keeps the latest answer of one blocking Consul query. The zero
// value is not usable; fill in the function fields and call start.
type watch[T any] struct {
	// query runs the query with q's index, wait time and context.
	query func(q *api.QueryOptions) (T, *api.QueryMeta, error)
	// equal reports whether two answers are the same, so that an answer
	// that changes nothing notifies nobody.
	equal func(a, b T) bool
	// size is how many items an answer holds, for logs.
	size func(T) int
	// changed, if set, is called in the loop after each change.
	changed func(T)
	// merge returns the union of an earlier answer and a newer one, the
	// newer winning where they disagree: what the watcher serves while
	// Consul settles after an outage or a restart.
	merge func(earlier, newer T) T
	// agent, if set, names the Consul agent answering: it changes when the
	// agent restarts without its state (a dev agent, say). The blocking
	// query alone cannot always tell: Go's HTTP client silently redials a
	// closed keep-alive connection, and a new agent's index need not be
	// lower than the old one's.
	agent func(ctx context.Context) (string, error)

	opts   watchOptions
	logger *slog.Logger

	state   atomic.Pointer[T]
	updates chan struct{}
	ready   chan struct{} // closed on the first answer
	failed  chan struct{} // closed when a query failed before the first answer
	done    chan struct{} // closed when the loop has returned
	cancel  context.CancelFunc

	mu      sync.Mutex
	lastErr error // of the latest query, nil after an answer
}

// loses reports whether newer lacks something earlier held.
func (w *watch[T]) loses(earlier, newer T) bool {
	return w.size(w.merge(earlier, newer)) > w.size(newer)
}

// start stores the zero answer and starts the loop.
func (w *watch[T]) start() {
	var zero T
	w.state.Store(&zero)
	w.updates = make(chan struct{}, 1)
	w.ready = make(chan struct{})
	w.failed = make(chan struct{})
	w.done = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go w.run(ctx)
}

func (w *watch[T]) load() T { return *w.state.Load() }

func (w *watch[T]) close() {
	w.cancel()
	<-w.done
}

// wait blocks until the first answer (nil), the watch's end (ErrClosed) or
// ctx's (its error, with Consul's last one). With failFast it also returns
// as soon as a query has failed while no answer has come, with Consul's
// error, and at once for as long as that lasts.
func (w *watch[T]) wait(ctx context.Context, failFast bool) error {
	select {
	case <-w.ready:
		return nil
	default:
	}
	var failed <-chan struct{} // nil, which never fires, unless failFast
	if failFast {
		failed = w.failed
	}
	for {
		select {
		case <-w.ready:
			return nil
		case <-failed:
			select {
			case <-w.ready:
				return nil
			default:
			}
			select {
			case <-w.done:
				return ErrClosed
			default:
			}
			w.mu.Lock()
			last := w.lastErr
			w.mu.Unlock()
			if last != nil {
				return fmt.Errorf("Consul has not answered: %w", last)
			}
			// Consul has answered, and ready closes in a moment.
			failed = nil
			continue
		case <-w.done:
			select {
			case <-w.ready:
				return nil
			default:
				return ErrClosed
			}
		case <-ctx.Done():
			w.mu.Lock()
			last := w.lastErr
			w.mu.Unlock()
			if last != nil {
				return fmt.Errorf("%w; last Consul error: %w", ctx.Err(), last)
			}
			return ctx.Err()
		}
	}
}

func (w *watch[T]) setErr(err error) {
	w.mu.Lock()
	w.lastErr = err
	w.mu.Unlock()
}

// run is the blocking-query loop; see the package documentation for the
// rules it follows.
func (w *watch[T]) run(ctx context.Context) {
	defer close(w.done)
	var (
		index     uint64
		lastStart time.Time
		failures  int
		outage    time.Time
		hadAnswer bool
		aclWarned bool
		// settleUntil, while in the future, makes answers add to what was
		// known rather than replace it (see WithSettle).
		settleUntil time.Time
		agentID     string // of the agent that answered, when known
	)
	for {
		if d := minQueryInterval - time.Since(lastStart); d > 0 && !sleep(ctx, d) {
			return
		}
		lastStart = time.Now()
		wait := jitter(waitTime, 0.1)
		if until := time.Until(settleUntil); until > 0 {
			// Ask again when settling ends, to drop what Consul forgot.
			wait = max(until, minQueryInterval)
		}
		qctx, cancel := context.WithTimeout(ctx, wait+wait/16+queryGrace)
		answer, meta, err := w.query((&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(qctx))
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			w.setErr(err)
			if !hadAnswer {
				select {
				case <-w.failed:
				default:
					close(w.failed)
				}
			}
			// Consul may have restarted. A restarted Consul whose index has
			// not yet caught up with ours would hold the next query for the
			// whole wait time before its lower index showed; starting over
			// from 0 gets the current state at once.
			index = 0
			failures++
			if failures == 1 {
				outage = time.Now()
				w.logger.Warn("Consul query failed; serving the last known state until Consul answers",
					slog.Int("known", w.size(w.load())), slog.Bool("had_answer", hadAnswer), slog.Any("error", err))
			} else {
				w.logger.Debug("Consul query failed again", slog.Int("failures", failures), slog.Any("error", err))
			}
			// Until a first answer, calls to the service fail at once (see
			// wait): ask again soon, so that they work again soon after
			// Consul does.
			most := w.opts.backoffMax
			if !hadAnswer {
				most = min(most, time.Second)
			}
			if !sleep(ctx, backoff.Wait(failures, w.opts.backoffMin, most)) {
				return
			}
			continue
		}
		w.setErr(nil)
		restarted := meta.LastIndex < index
		// A settling starts only once the last one has been over for as
		// long as it lasted: a Consul that fails more often than that would
		// otherwise keep every instance that ever left. An agent that
		// restarts meanwhile is caught below, by its new ID.
		settledLately := time.Since(settleUntil) < w.opts.settle
		if (failures > 0 || restarted) && hadAnswer && w.opts.settle > 0 && !settledLately {
			settleUntil = time.Now().Add(w.opts.settle)
			// This settling covers an agent that restarted meanwhile: the
			// agent answering now is the one to compare later answers with,
			// not the one from before, or its first answer that loses
			// something would start a second settling. Known, not left
			// blank: an agent that restarts again, in the cooldown after
			// this settling, must still be told apart.
			agentID = ""
			if w.agent != nil {
				if id, err := w.agent(ctx); err == nil {
					agentID = id
				}
			}
		}
		// An answer that loses something, from an agent other than the one
		// that answered before, is an agent that restarted and has not yet
		// relearned its services: settle as after an outage.
		if w.agent != nil && w.opts.settle > 0 && hadAnswer && time.Now().After(settleUntil) && w.loses(w.load(), answer) {
			if id, err := w.agent(ctx); err == nil {
				if agentID != "" && id != agentID {
					settleUntil = time.Now().Add(w.opts.settle)
					w.logger.Info("Consul agent changed (restarted?); keeping the last known state while it settles",
						slog.Duration("settle", w.opts.settle))
				}
				agentID = id
			}
		}
		if failures > 0 {
			w.logger.Info("Consul answers again",
				slog.Duration("outage", time.Since(outage).Round(time.Millisecond)), slog.Int("failed_queries", failures),
				slog.Duration("settle", w.opts.settle))
			failures = 0
		}
		index = nextIndex(index, meta.LastIndex)
		if time.Now().Before(settleUntil) {
			answer = w.merge(w.load(), answer)
		}
		if meta.ResultsFilteredByACLs && !aclWarned {
			// Consul answers as if the hidden results did not exist, so an
			// under-privileged token looks like missing instances.
			aclWarned = true
			w.logger.Warn("Consul's ACLs hid some results from this token; grant it service:read and node:read")
		}
		if !w.equal(w.load(), answer) {
			w.state.Store(&answer)
			select {
			case w.updates <- struct{}{}:
			default: // a notification is pending already; it covers this one
			}
			if w.changed != nil {
				w.changed(answer)
			}
		}
		if !hadAnswer {
			hadAnswer = true
			close(w.ready)
			// The agent to compare later answers' agent with, asked after
			// the watcher is ready so that start-up does not wait for it.
			if w.agent != nil && w.opts.settle > 0 {
				if id, err := w.agent(ctx); err == nil {
					agentID = id
				}
			}
		}
	}
}

// nextIndex returns the index to wait on after a query that waited on prev
// returned the index got, following Consul's blocking-query rules: an index
// that went backwards (a restarted agent, a restored snapshot) resets the
// loop to 0, so the next query returns at once with a fresh index; and an
// index of 0, which would not block, becomes 1.
func nextIndex(prev, got uint64) uint64 {
	switch {
	case got < prev:
		return 0
	case got == 0:
		return 1
	default:
		return got
	}
}

// jitter returns d changed at random by up to ±frac of it.
func jitter(d time.Duration, frac float64) time.Duration {
	return time.Duration(float64(d) * (1 - frac + 2*frac*rand.Float64()))
}

// sleep waits for d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
