package authz

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"
)

// decisionCache holds the decision index of recently seen subjects.
//
// Reads take the read lock only and allocate nothing. Correctness against
// concurrent changes rests on epoch: every invalidation bumps it, and a
// load stores its result only if no invalidation happened since the load
// began, because the load may have read the database before the change
// committed. The cache holds entries only while live (the notification
// connection is up); otherwise nothing tells it what changed.
type decisionCache struct {
	max int

	mu      sync.RWMutex
	entries map[string]*decisions
	epoch   uint64
	live    atomic.Bool

	flightMu sync.Mutex
	flights  map[string]*flight
}

// flight is one load of a subject's index that concurrent callers share.
type flight struct {
	epoch uint64
	done  chan struct{}
	d     *decisions
	err   error
}

func newDecisionCache(max int) *decisionCache {
	return &decisionCache{max: max, entries: make(map[string]*decisions), flights: make(map[string]*flight)}
}

// get returns the cached index of subject, or nil.
func (c *decisionCache) get(subject string) *decisions {
	c.mu.RLock()
	d := c.entries[subject]
	c.mu.RUnlock()
	return d
}

// load returns subject's index from load, sharing one load among
// concurrent callers of the same epoch, and caches it while live.
func (c *decisionCache) load(ctx context.Context, subject string, load func(context.Context, string) (*decisions, error)) (*decisions, error) {
	if !c.live.Load() {
		// Uncached: a shared load might have started before a change this
		// replica was never told about.
		return load(ctx, subject)
	}
	c.mu.RLock()
	epoch := c.epoch
	c.mu.RUnlock()

	c.flightMu.Lock()
	if f := c.flights[subject]; f != nil && f.epoch == epoch {
		c.flightMu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if f.err != nil {
			// The leader's failure may be its own context's; try once alone.
			return load(ctx, subject)
		}
		return f.d, nil
	}
	f := &flight{epoch: epoch, done: make(chan struct{})}
	c.flights[subject] = f
	c.flightMu.Unlock()

	f.d, f.err = load(ctx, subject)
	if f.err == nil {
		c.put(subject, f.d, epoch)
	}
	c.flightMu.Lock()
	if c.flights[subject] == f {
		delete(c.flights, subject)
	}
	c.flightMu.Unlock()
	close(f.done)
	return f.d, f.err
}

func (c *decisionCache) put(subject string, d *decisions, epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.epoch != epoch || !c.live.Load() {
		return
	}
	if len(c.entries) >= c.max {
		// Evict an arbitrary entry: map iteration starts at a random
		// place, which is as good as LRU for a cache that only saves a
		// query and costs nothing on the read path.
		for k := range c.entries {
			delete(c.entries, k)
			break
		}
	}
	c.entries[subject] = d
}

// invalidateSubjects drops the given subjects.
func (c *decisionCache) invalidateSubjects(subjects ...string) {
	c.mu.Lock()
	c.epoch++
	for _, s := range subjects {
		delete(c.entries, s)
	}
	c.mu.Unlock()
}

// invalidateRole drops every subject bound to role.
func (c *decisionCache) invalidateRole(role uuid.UUID) {
	c.mu.Lock()
	c.epoch++
	for s, d := range c.entries {
		if d.hasRole(role) {
			delete(c.entries, s)
		}
	}
	c.mu.Unlock()
}

// dropAll empties the cache.
func (c *decisionCache) dropAll() {
	c.mu.Lock()
	c.epoch++
	clear(c.entries)
	c.mu.Unlock()
}

// setLive turns caching on or off; either way what is cached is dropped,
// since notifications may have been missed.
func (c *decisionCache) setLive(live bool) {
	c.live.Store(live)
	c.dropAll()
}

func (c *decisionCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}
