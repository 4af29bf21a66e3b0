package ratelimit

import (
	"context"
	"runtime"
	"sync"
	"time"
)

// sweepEvery is how often Memory forgets buckets that are full again, which
// hold no information.
const sweepEvery = time.Minute

// Memory is a [Limiter] whose buckets live in this process. It is safe for
// concurrent use. The zero value is not usable; call [NewMemory].
type Memory struct {
	now   func() time.Time
	epoch time.Time // times are kept as nanoseconds since, on the monotonic clock

	mu sync.Mutex
	// tats holds each bucket's theoretical arrival time in nanoseconds
	// since epoch: the bucket is full when it is in the past.
	tats      map[string]int64
	lastSweep int64
	sweeping  bool
}

// NewMemory returns an in-memory limiter reading the time from now; nil
// means time.Now.
func NewMemory(now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	return &Memory{now: now, epoch: now(), tats: make(map[string]int64)}
}

// Allow implements [Limiter]. It never fails.
func (m *Memory) Allow(_ context.Context, buckets ...Bucket) (Decision, error) {
	buckets = active(buckets)
	if len(buckets) == 0 {
		return Decision{Allowed: true}, nil
	}
	var news [4]int64
	newTATs := news[:0]
	m.mu.Lock()
	defer m.mu.Unlock()
	// Since epoch, not Unix time: time.Now's monotonic reading makes a
	// step of the wall clock (NTP, a VM resumed) refuse or refill every
	// bucket at once.
	now := int64(m.now().Sub(m.epoch))
	m.sweep(now)
	worst, worstRetry := -1, int64(0)
	for i, b := range buckets {
		t := int64(b.Limit.interval())
		tat := max(m.tats[b.Name+"\x00"+b.Key], now)
		next := tat + t
		if retry := next - int64(b.Limit.Window()) - now; retry > worstRetry {
			worst, worstRetry = i, retry
		}
		newTATs = append(newTATs, next)
	}
	if worst >= 0 {
		b := buckets[worst]
		return Decision{
			Bucket: b.Name, Limit: b.Limit,
			RetryAfter: time.Duration(worstRetry),
			Reset:      time.Duration(newTATs[worst] - int64(b.Limit.interval()) - now),
		}, nil
	}
	d := Decision{Allowed: true, Remaining: -1}
	for i, b := range buckets {
		m.tats[b.Name+"\x00"+b.Key] = newTATs[i]
		ttl := newTATs[i] - now
		rem := int((int64(b.Limit.Window()) - ttl) / int64(b.Limit.interval()))
		if d.Remaining < 0 || rem < d.Remaining {
			d.Bucket, d.Limit, d.Remaining, d.Reset = b.Name, b.Limit, rem, time.Duration(ttl)
		}
	}
	return d, nil
}

// sweep starts forgetting full buckets, at most once per sweepEvery, so
// that a scan of many client IPs does not grow the map without bound. It
// is called with m.mu held.
func (m *Memory) sweep(now int64) {
	if m.sweeping || now-m.lastSweep < int64(sweepEvery) {
		return
	}
	m.lastSweep, m.sweeping = now, true
	go m.sweepAll(now)
}

// sweepChunk is how many buckets a sweep looks at under one hold of the
// lock: a million of them (a flood from as many addresses) took 176 ms,
// which every call waited out when the sweep held the lock throughout.
const sweepChunk = 1024

// sweepAll forgets the buckets full at now, letting calls in between
// chunks. A map may change between steps of a range over it, as long as
// each step holds the lock.
func (m *Memory) sweepAll(now int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for k, tat := range m.tats {
		if tat <= now {
			delete(m.tats, k)
		}
		if n++; n%sweepChunk == 0 {
			m.mu.Unlock()
			runtime.Gosched()
			m.mu.Lock()
		}
	}
	m.sweeping = false
}

// Len returns how many buckets are held, for tests.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.tats)
}
