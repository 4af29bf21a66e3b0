package authn

import (
	"strings"
	"sync"
	"time"
)

// tokenCache remembers the principals of verified tokens until the tokens
// expire, so that a client sending the same token on every request costs
// one signature check, not one per request. Only verified tokens enter it:
// garbage cannot fill it.
//
// It holds at most max entries. When full it drops what has expired, then,
// if still full, an arbitrary eighth of the entries: Go randomizes map
// iteration, so this is random eviction, which keeps the read path to a
// read lock and a map lookup (an LRU would write on every hit). Under a
// flood of distinct valid tokens the worst case is more signature checks,
// never a wrong answer.
type tokenCache struct {
	max int

	mu      sync.RWMutex
	entries map[string]cachedPrincipal
	// epoch counts the clears, so that a verification that started before
	// a clear does not store its result after it.
	epoch uint64
}

type cachedPrincipal struct {
	principal Principal
	until     time.Time // exp plus leeway: the last moment the token is accepted
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{max: max, entries: make(map[string]cachedPrincipal)}
}

// get returns the principal of token if it was verified and is still
// acceptable at now.
func (c *tokenCache) get(token string, now time.Time) (Principal, bool) {
	c.mu.RLock()
	e, ok := c.entries[token]
	c.mu.RUnlock()
	if !ok || !now.Before(e.until) {
		return Principal{}, false
	}
	return e.principal, true
}

// currentEpoch returns the epoch to pass to put.
func (c *tokenCache) currentEpoch() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.epoch
}

// put remembers p for token until until, unless the cache was cleared
// since epoch.
func (c *tokenCache) put(token string, p Principal, until time.Time, epoch uint64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if epoch != c.epoch {
		return
	}
	if len(c.entries) >= c.max {
		c.evict(now)
	}
	// A copy, so the cache does not pin the request buffer token may be
	// a slice of.
	c.entries[strings.Clone(token)] = cachedPrincipal{principal: p, until: until}
}

// evict makes room; c.mu must be held.
func (c *tokenCache) evict(now time.Time) {
	for k, e := range c.entries {
		if !now.Before(e.until) {
			delete(c.entries, k)
		}
	}
	drop := len(c.entries) - c.max + max(c.max/8, 1)
	for k := range c.entries {
		if drop <= 0 {
			break
		}
		delete(c.entries, k)
		drop--
	}
}

// clear forgets everything, for when a signing key is withdrawn.
func (c *tokenCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.entries)
	c.epoch++
}

// len returns the number of entries, for tests.
func (c *tokenCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}
