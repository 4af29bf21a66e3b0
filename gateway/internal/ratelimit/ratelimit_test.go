package ratelimit_test

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/kerneltest"

	"portcullis.dev/gateway/internal/ratelimit"
	"portcullis.dev/gateway/internal/ratelimit/ratelimittest"
)

// implementations runs the same suite against every Limiter.
func implementations(t *testing.T) map[string]func(t *testing.T) ratelimit.Limiter {
	return map[string]func(t *testing.T) ratelimit.Limiter{
		"memory": func(*testing.T) ratelimit.Limiter { return ratelimit.NewMemory(nil) },
		"redis": func(t *testing.T) ratelimit.Limiter {
			url, prefix := ratelimittest.Redis(t)
			client, err := ratelimit.NewRedisClient(url, time.Second, nil)
			require.NoError(t, err)
			t.Cleanup(func() { _ = client.Close() })
			return ratelimit.NewRedis(client, prefix, time.Second)
		},
	}
}

func TestLimiters(t *testing.T) {
	t.Parallel()
	for name, newLimiter := range implementations(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			t.Run("burst then refuse", func(t *testing.T) {
				t.Parallel()
				l := newLimiter(t)
				b := ratelimit.Bucket{Name: "ip", Key: "10.0.0.1", Limit: ratelimit.Limit{Rate: 1, Burst: 5}}
				for i := range 5 {
					d, err := l.Allow(t.Context(), b)
					require.NoError(t, err)
					require.True(t, d.Allowed, "request %d", i)
					assert.Equal(t, 4-i, d.Remaining)
					assert.Equal(t, "ip", d.Bucket)
				}
				d, err := l.Allow(t.Context(), b)
				require.NoError(t, err)
				assert.False(t, d.Allowed)
				assert.Greater(t, d.RetryAfter, 900*time.Millisecond)
				assert.LessOrEqual(t, d.RetryAfter, time.Second)
				assert.InDelta(t, 5*time.Second, d.Reset, float64(200*time.Millisecond))
				other, err := l.Allow(t.Context(), ratelimit.Bucket{Name: "ip", Key: "10.0.0.2", Limit: b.Limit})
				require.NoError(t, err)
				assert.True(t, other.Allowed, "buckets are per key")
			})
			t.Run("all buckets or none", func(t *testing.T) {
				t.Parallel()
				l := newLimiter(t)
				wide := ratelimit.Bucket{Name: "ip", Key: "k", Limit: ratelimit.Limit{Rate: 0.01, Burst: 10}}
				narrow := ratelimit.Bucket{Name: "credential", Key: "k", Limit: ratelimit.Limit{Rate: 0.01, Burst: 2}}
				for range 2 {
					d, err := l.Allow(t.Context(), wide, narrow)
					require.NoError(t, err)
					require.True(t, d.Allowed)
				}
				for range 3 {
					d, err := l.Allow(t.Context(), wide, narrow)
					require.NoError(t, err)
					require.False(t, d.Allowed)
					assert.Equal(t, "credential", d.Bucket)
				}
				d, err := l.Allow(t.Context(), wide)
				require.NoError(t, err)
				assert.True(t, d.Allowed)
				assert.Equal(t, 7, d.Remaining, "refusals took no token from the wide bucket")
			})
			t.Run("disabled buckets are ignored", func(t *testing.T) {
				t.Parallel()
				l := newLimiter(t)
				for range 3 {
					d, err := l.Allow(t.Context(), ratelimit.Bucket{Name: "ip", Key: "k", Limit: ratelimit.Limit{Rate: 0, Burst: 1}})
					require.NoError(t, err)
					assert.True(t, d.Allowed)
				}
			})
			t.Run("holds within 5% under 10x overload", func(t *testing.T) {
				t.Parallel()
				l := newLimiter(t)
				limit := ratelimit.Limit{Rate: 100, Burst: 10}
				b := ratelimit.Bucket{Name: "ip", Key: "k", Limit: limit}
				r := ratelimittest.Overload(10*limit.Rate, 1500*time.Millisecond, 8, func() bool {
					d, err := l.Allow(context.Background(), b)
					return err == nil && d.Allowed
				})
				r.AssertWithin(t, limit.Rate, limit.Burst, 0.05)
			})
		})
	}
}

// TestRedisSharedAcrossGateways: two limiters on one Redis, as two gateways
// are, hold one limit between them.
func TestRedisSharedAcrossGateways(t *testing.T) {
	t.Parallel()
	url, prefix := ratelimittest.Redis(t)
	var limiters []ratelimit.Limiter
	for range 2 {
		c, err := ratelimit.NewRedisClient(url, time.Second, nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		limiters = append(limiters, ratelimit.NewRedis(c, prefix, time.Second))
	}
	limit := ratelimit.Limit{Rate: 100, Burst: 10}
	var n, failed atomic.Int64
	r := ratelimittest.Overload(10*limit.Rate, 1500*time.Millisecond, 8, func() bool {
		d, err := limiters[n.Add(1)%2].Allow(context.Background(), ratelimit.Bucket{Name: "ip", Key: "k", Limit: limit})
		if err != nil {
			failed.Add(1)
			t.Log(err)
		}
		return err == nil && d.Allowed
	})
	r.AssertWithin(t, limit.Rate, limit.Burst, 0.05)
	assert.Zero(t, failed.Load(), "decisions that failed")
}

// TestFallbackWhenRedisDown: with Redis unreachable, decisions are made
// locally — still limiting — and the outage is logged once.
func TestFallbackWhenRedisDown(t *testing.T) {
	t.Parallel()
	client, err := ratelimit.NewRedisClient("redis://127.0.0.1:1/0", 50*time.Millisecond, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Close() })
	var logs kerneltest.Buffer
	var fallbacks atomic.Int64
	f := ratelimit.NewFallback(ratelimit.NewRedis(client, "x:", 50*time.Millisecond), ratelimit.NewMemory(nil),
		time.Minute, slog.New(slog.NewTextHandler(&logs, nil)), func() { fallbacks.Add(1) })
	b := ratelimit.Bucket{Name: "ip", Key: "k", Limit: ratelimit.Limit{Rate: 0.01, Burst: 3}}
	var allowed int
	for range 10 {
		d, err := f.Allow(t.Context(), b)
		require.NoError(t, err)
		if d.Allowed {
			allowed++
		}
	}
	assert.Equal(t, 3, allowed, "local limits hold: neither fail open nor refuse all")
	assert.Equal(t, int64(10), fallbacks.Load())
	assert.Equal(t, 1, strings.Count(logs.String(), "shared rate limits unavailable"))
	assert.Contains(t, logs.String(), "connection refused", "the log names the cause, not the timeout that dialling again ran into")
}

// TestFallbackNoticesAnOutageClientsDoNotWaitFor: a client that gives up
// before Redis's timeout (a short grpc-timeout) does not hide a Redis that
// no longer answers: the outage is noticed, and later decisions are local.
func TestFallbackNoticesAnOutageClientsDoNotWaitFor(t *testing.T) {
	t.Parallel()
	addr := kerneltest.ServeTCP(t, func(net.Conn) { <-t.Context().Done() })
	const timeout = 100 * time.Millisecond
	client, err := ratelimit.NewRedisClient("redis://"+addr+"/0", timeout, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Close() })
	var logs kerneltest.Buffer
	f := ratelimit.NewFallback(ratelimit.NewRedis(client, "x:", timeout), ratelimit.NewMemory(nil),
		time.Minute, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	b := ratelimit.Bucket{Name: "ip", Key: "k", Limit: ratelimit.Limit{Rate: 1000, Burst: 1000}}

	impatient, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	_, err = f.Allow(impatient, b)
	require.NoError(t, err)
	assert.Equal(t, 1, strings.Count(logs.String(), "shared rate limits unavailable"), "the outage went unnoticed")
}

// TestRedisURLErrorsKeepThePassword: a URL that does not parse is refused
// without being quoted, password and all.
func TestRedisURLErrorsKeepThePassword(t *testing.T) {
	t.Parallel()
	for _, u := range []string{
		"redis://:s3cr%zzet@127.0.0.1:6379/0",
		"redis://:7/Kx9secret@10.0.0.5:6379/0",
		"redis://default:7/Kx9secret@10.0.0.5:6379",
		"redis://:12?Kx9secret@10.0.0.5:6379",
		"redis://default:123#Kx9secret@10.0.0.5:6379/0",
	} {
		_, err := ratelimit.NewRedisClient(u, time.Second, nil)
		if assert.Error(t, err, u) {
			assert.NotContains(t, err.Error(), "s3cr", u)
			assert.NotContains(t, err.Error(), "Kx9", u)
		}
	}
	_, err := ratelimit.NewRedisClient("redis://:pass%2Fword@127.0.0.1:6379/0", time.Second, nil)
	assert.NoError(t, err, "a percent-encoded password")
}

// TestFallbackAsksAgainOnce: once the retry period of an outage is over,
// one request asks Redis again, not every request that arrives while the
// question is out.
func TestFallbackAsksAgainOnce(t *testing.T) {
	t.Parallel()
	// A Redis that takes connections and never answers, as one behind a
	// network partition: every question costs the whole timeout.
	addr := kerneltest.ServeTCP(t, func(net.Conn) { <-t.Context().Done() })
	// The probe must end within the retry period, or the next period's
	// probe would start while it waits.
	const timeout, retry = 200 * time.Millisecond, 500 * time.Millisecond
	client, err := ratelimit.NewRedisClient("redis://"+addr+"/0", timeout, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Close() })
	var logs kerneltest.Buffer
	f := ratelimit.NewFallback(ratelimit.NewRedis(client, "x:", timeout), ratelimit.NewMemory(nil),
		retry, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	b := ratelimit.Bucket{Name: "ip", Key: "k", Limit: ratelimit.Limit{Rate: 1000, Burst: 1000}}

	_, err = f.Allow(t.Context(), b) // the outage starts
	require.NoError(t, err)
	time.Sleep(retry)
	var (
		wg   sync.WaitGroup
		slow atomic.Int32
	)
	for range 50 {
		wg.Go(func() {
			start := time.Now()
			_, err := f.Allow(t.Context(), b)
			assert.NoError(t, err)
			if time.Since(start) >= timeout/2 {
				slow.Add(1)
			}
		})
	}
	wg.Wait()
	assert.EqualValues(t, 1, slow.Load(), "calls that waited for Redis after the retry period")
	assert.Equal(t, 1, strings.Count(logs.String(), "shared rate limits unavailable"))
}

// TestMemoryForgetsFullBuckets: the buckets of clients gone quiet are
// forgotten, while calls go on.
func TestMemoryForgetsFullBuckets(t *testing.T) {
	t.Parallel()
	var now atomic.Int64
	now.Store(time.Unix(1000, 0).UnixNano())
	m := ratelimit.NewMemory(func() time.Time { return time.Unix(0, now.Load()) })
	limit := ratelimit.Limit{Rate: 1, Burst: 10}
	for i := range 10_000 {
		_, err := m.Allow(t.Context(), ratelimit.Bucket{Name: "ip", Key: strconv.Itoa(i), Limit: limit})
		require.NoError(t, err)
	}
	now.Add(int64(2 * time.Minute))
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for range 1000 {
				_, err := m.Allow(t.Context(), ratelimit.Bucket{Name: "ip", Key: "busy" + strconv.Itoa(i), Limit: limit})
				assert.NoError(t, err)
			}
		})
	}
	wg.Wait()
	// A call starts a sweep a minute after the last started, once it ended.
	assert.Eventually(t, func() bool {
		_, err := m.Allow(t.Context(), ratelimit.Bucket{Name: "ip", Key: "busy0", Limit: limit})
		return err == nil && m.Len() == 4
	}, 5*time.Second, time.Millisecond, "only the buckets in use are left")
}
