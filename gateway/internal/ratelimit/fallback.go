package ratelimit

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"portcullis.dev/kernel/logging"
)

// Fallback is a [Limiter] that asks a shared limiter (Redis) and, while that
// fails, a local one. After a failure it stays local for a retry period
// before trying the shared limiter again, so an outage costs one timeout per
// period rather than one per request. Outages are logged when they start
// and end, and counted with the onFallback hook. It is safe for concurrent
// use. The shared limiter's failures are taken for its own: it must not
// fail for the caller's context ending ([Redis] does not).
type Fallback struct {
	shared, local Limiter
	retry         time.Duration
	logger        *slog.Logger
	onFallback    func()

	downUntil atomic.Int64 // unix nanoseconds; 0 while the shared limiter works
}

// NewFallback returns a limiter over shared that uses local for retry after
// each failure of shared. onFallback, if not nil, is called for every
// decision made locally because shared failed.
func NewFallback(shared, local Limiter, retry time.Duration, logger *slog.Logger, onFallback func()) *Fallback {
	if onFallback == nil {
		onFallback = func() {}
	}
	return &Fallback{shared: shared, local: local, retry: retry, logger: logging.OrDiscard(logger), onFallback: onFallback}
}

// Allow implements [Limiter]. It never fails unless the local limiter does.
func (f *Fallback) Allow(ctx context.Context, buckets ...Bucket) (Decision, error) {
	down, claimed := f.downUntil.Load(), int64(0)
	if down != 0 {
		// One request asks the shared limiter again once the period is
		// over; the others, meanwhile, decide locally rather than each
		// wait out the same timeout.
		now := time.Now()
		claimed = now.Add(f.retry).UnixNano()
		if now.UnixNano() < down || !f.downUntil.CompareAndSwap(down, claimed) {
			f.onFallback()
			return f.local.Allow(ctx, buckets...)
		}
	}
	d, err := f.shared.Allow(ctx, buckets...)
	switch {
	case err == nil:
		if down != 0 && f.downUntil.CompareAndSwap(claimed, 0) {
			f.logger.InfoContext(ctx, "shared rate limits are back; local limits no longer used")
		}
		return d, nil
	case down == 0:
		if f.downUntil.Swap(time.Now().Add(f.retry).UnixNano()) == 0 {
			f.logger.ErrorContext(ctx, "shared rate limits unavailable; using this gateway's local limits", "err", err, "retry", f.retry.String())
		}
	}
	f.onFallback()
	return f.local.Allow(ctx, buckets...)
}
