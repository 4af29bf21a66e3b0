// Package ratelimit holds the gateway's token buckets: a [Limiter] answers
// whether a request may pass every bucket it falls in (its client IP, its
// user, a credential endpoint), and takes a token from each only if it may
// pass them all.
//
// Both implementations run the same algorithm, GCRA (the generic cell rate
// algorithm, a token bucket that stores one timestamp per key): [Memory] for
// one gateway, [Redis] — the algorithm in a Lua script, so each decision is
// atomic in Redis — for several gateways sharing limits. [Fallback] puts
// the two together so that a Redis outage degrades to per-gateway limits
// instead of refusing all traffic or silently letting it all through.
package ratelimit

import (
	"context"
	"math"
	"time"
)

// Limit is a token bucket: Rate tokens a second, up to Burst at once.
type Limit struct {
	// Rate is the sustained rate in requests per second; fractions are
	// allowed (0.2 is one every 5s). Zero or less disables the bucket.
	Rate float64
	// Burst is how many requests an idle client may send at once. Less
	// than 1 means 1.
	Burst int
}

// interval is GCRA's emission interval T, the time one token takes to
// come back, and tolerance is tau, the time the whole bucket takes.
func (l Limit) interval() time.Duration {
	return time.Duration(math.Round(float64(time.Second) / l.Rate))
}

func (l Limit) burst() int { return max(l.Burst, 1) }

// Window is the time an empty bucket takes to fill up, the "w" of the
// RateLimit-Policy header.
func (l Limit) Window() time.Duration { return l.interval() * time.Duration(l.burst()) }

// Bucket is one bucket a request falls in.
type Bucket struct {
	// Name says which limit this is ("ip", "user", "credential"), for
	// metrics and logs.
	Name string
	// Key identifies the bucket among those of the same limit, such as the
	// client IP; Name and Key together name the bucket.
	Key   string
	Limit Limit
}

// Decision is a limiter's answer for one request.
type Decision struct {
	// Allowed is whether the request passes; if so, a token was taken from
	// every bucket.
	Allowed bool
	// Bucket is the name of the refusing bucket, or of the one with the
	// fewest tokens left when allowed; Limit is its limit. Empty when no
	// bucket applied.
	Bucket string
	Limit  Limit
	// Remaining is how many more requests that bucket allows right now.
	Remaining int
	// RetryAfter is, when refused, how long until the request would pass.
	RetryAfter time.Duration
	// Reset is how long until that bucket is full again.
	Reset time.Duration
}

// Limiter decides whether a request may pass its buckets.
type Limiter interface {
	// Allow takes one token from each bucket if every one has a token,
	// and takes none otherwise. Buckets whose limit is disabled are
	// ignored; with none left, the request is allowed.
	Allow(ctx context.Context, buckets ...Bucket) (Decision, error)
}

// active drops disabled buckets; it copies only when there are some.
func active(buckets []Bucket) []Bucket {
	all := true
	for _, b := range buckets {
		all = all && b.Limit.Rate > 0
	}
	if all {
		return buckets
	}
	out := make([]Bucket, 0, len(buckets))
	for _, b := range buckets {
		if b.Limit.Rate > 0 {
			out = append(out, b)
		}
	}
	return out
}
