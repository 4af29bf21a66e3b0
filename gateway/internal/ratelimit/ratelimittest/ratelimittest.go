// Package ratelimittest gives tests the real Redis the shared limits run on,
// and a driver that overloads a limit at a steady pace.
package ratelimittest

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"

	"portcullis.dev/kernel/kerneltest"
)

// DefaultRedisURL is the Redis tests use when PORTCULLIS_TEST_REDIS_URL is
// not set.
const DefaultRedisURL = "redis://127.0.0.1:6379/0"

// RedisURL returns PORTCULLIS_TEST_REDIS_URL, or DefaultRedisURL.
func RedisURL() string { return cmp.Or(os.Getenv("PORTCULLIS_TEST_REDIS_URL"), DefaultRedisURL) }

// Redis returns the test Redis's URL and a key prefix no other test uses,
// after checking that Redis answers; the keys under the prefix are deleted
// when the test ends. A Redis that does not answer makes the test
// kerneltest.Unavailable: skipped locally, failed in CI.
func Redis(t testing.TB) (url, prefix string) {
	t.Helper()
	url = RedisURL()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("PORTCULLIS_TEST_REDIS_URL: %v", err)
	}
	client := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		kerneltest.Unavailable(t, "Redis at %s does not answer (%v): start redis-server or set PORTCULLIS_TEST_REDIS_URL", url, err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	prefix = "portcullis-test:" + hex.EncodeToString(b) + ":"
	t.Cleanup(func() {
		defer client.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		iter := client.Scan(ctx, 0, prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			client.Del(ctx, iter.Val())
		}
	})
	return url, prefix
}

// Result is what Overload measured.
type Result struct {
	Offered, Allowed int
	// Shortest and Longest bound the time span over which the limiter made
	// its decisions, as seen from the client: from the end of the first
	// call to the start of the last one, and from the start of the first
	// call to the end of the last one. On a loaded machine the two differ
	// by the calls' latency, and the limiter is right if it lies between.
	Shortest, Longest time.Duration
	// starts are the calls' start times, in order, to find the stalls of a
	// starved client: a bucket refills for at most burst/rate while no
	// call comes, so a longer pause lets fewer calls through.
	starts []time.Time
}

// Expected is how many calls a bucket of rate and burst lets through:
// at least lo in r's shortest span less its stalls, and at most hi in its
// longest span.
func (r Result) Expected(rate float64, burst int) (lo, hi float64) {
	fill := time.Duration(float64(burst) / rate * float64(time.Second))
	busy := r.Shortest
	for i := 1; i < len(r.starts); i++ {
		if gap := r.starts[i].Sub(r.starts[i-1]); gap > fill {
			busy -= gap - fill
		}
	}
	return float64(burst) + rate*max(0, busy).Seconds(), float64(burst) + rate*r.Longest.Seconds()
}

// AssertWithin asserts that the limiter let through what a bucket of rate
// and burst would, within the relative error epsilon, and that the load
// was at least five times the limit.
func (r Result) AssertWithin(t testing.TB, rate float64, burst int, epsilon float64) {
	t.Helper()
	lo, hi := r.Expected(rate, burst)
	t.Logf("offered %d, allowed %d in %v..%v; expected %.1f..%.1f", r.Offered, r.Allowed, r.Shortest, r.Longest, lo, hi)
	assert.Greater(t, float64(r.Offered), 5*hi, "overload")
	assert.GreaterOrEqual(t, float64(r.Allowed), lo*(1-epsilon), "allowed")
	assert.LessOrEqual(t, float64(r.Allowed), hi*(1+epsilon), "allowed")
}

// Overload calls try at pace calls a second for d, from workers
// goroutines, and counts the calls it allowed.
func Overload(pace float64, d time.Duration, workers int, try func() bool) Result {
	var (
		allowed, offered atomic.Int64
		firstEnd         atomic.Int64
		lastEnd          atomic.Int64
		mu               sync.Mutex
		starts           []time.Time
		wg               sync.WaitGroup
	)
	ticks := make(chan struct{}, workers)
	interval := time.Duration(float64(time.Second) / pace)
	for range workers {
		wg.Go(func() {
			for range ticks {
				mu.Lock()
				starts = append(starts, time.Now())
				mu.Unlock()
				if try() {
					allowed.Add(1)
				}
				offered.Add(1)
				end := time.Now().UnixNano()
				firstEnd.CompareAndSwap(0, end)
				for old := lastEnd.Load(); end > old && !lastEnd.CompareAndSwap(old, end); old = lastEnd.Load() {
				}
			}
		})
	}
	start := time.Now()
	for n := 0; ; n++ {
		next := start.Add(time.Duration(n) * interval)
		if next.Sub(start) >= d {
			break
		}
		time.Sleep(time.Until(next))
		ticks <- struct{}{}
	}
	close(ticks)
	wg.Wait()
	r := Result{Offered: int(offered.Load()), Allowed: int(allowed.Load()), starts: starts}
	if len(starts) > 0 {
		first, last := starts[0], starts[len(starts)-1]
		r.Shortest = max(0, last.Sub(time.Unix(0, firstEnd.Load())))
		r.Longest = time.Unix(0, lastEnd.Load()).Sub(first)
	}
	return r
}
