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
	// Elapsed is the time from the first request to the last one.
	Elapsed time.Duration
}

// Expected is how many requests a bucket of rate and burst lets through in
// r's time span.
func (r Result) Expected(rate float64, burst int) float64 {
	return float64(burst) + rate*r.Elapsed.Seconds()
}

// Overload calls try at pace requests a second for d, from workers
// goroutines, and counts the calls it allowed.
func Overload(pace float64, d time.Duration, workers int, try func() bool) Result {
	var (
		allowed, offered atomic.Int64
		first, last      atomic.Int64
		wg               sync.WaitGroup
	)
	ticks := make(chan struct{}, workers)
	interval := time.Duration(float64(time.Second) / pace)
	for range workers {
		wg.Go(func() {
			for range ticks {
				now := time.Now().UnixNano()
				first.CompareAndSwap(0, now)
				if try() {
					allowed.Add(1)
				}
				offered.Add(1)
				if t := time.Now().UnixNano(); t > last.Load() {
					last.Store(t)
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
	return Result{Offered: int(offered.Load()), Allowed: int(allowed.Load()), Elapsed: time.Duration(last.Load() - first.Load())}
}
