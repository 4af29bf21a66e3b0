package authn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// jwksFetchTimeout bounds one fetch of the key set. The fetch does not
	// end with the request that started it, since other requests may be
	// waiting for it.
	jwksFetchTimeout = 10 * time.Second
	// maxJWKSSize bounds the key set document; a real one is a few KiB.
	maxJWKSSize = 1 << 20
)

// keySet is one fetched JWK Set. It is never modified once stored.
type keySet struct {
	keys      map[string]*publicKey
	refreshAt time.Time // when to fetch again, in the background
}

// keyCache holds the Auth service's keys, fetched from a JWKS URL.
//
//   - A known kid is served from memory without locking. Once the set is
//     older than its time to live, the next lookup starts a fetch in the
//     background and is answered from the old set.
//   - An unknown kid (or no set yet) fetches the set and waits for it, but
//     at most once per interval: a flood of tokens with made-up kids costs
//     the Auth service one request per interval, whatever its size.
//     Concurrent lookups share one fetch. Until a first set is fetched the
//     interval starts at firstSetRetry and doubles with each failure:
//     nothing can be verified meanwhile (a gateway started before the
//     Auth service is ready, say).
//   - A failed fetch keeps the keys known before: an Auth service outage
//     must not log everybody out.
type keyCache struct {
	url       string
	client    *http.Client
	ttl       time.Duration
	interval  time.Duration
	now       func() time.Time
	logger    *slog.Logger
	onRemoved func() // called when a fetch drops or replaces a key the old set had

	set atomic.Pointer[keySet]

	mu        sync.Mutex
	lastFetch time.Time     // when the last fetch started; zero before the first
	lastErr   error         // the last fetch's error, nil if it succeeded
	failures  int           // fetches failed in a row
	inflight  chan struct{} // closed when the running fetch ends; nil when none runs
}

// firstSetRetry is the wait between fetches while no key set has been
// fetched yet, after one failure; it doubles with each further failure,
// up to the interval, so that a JWKS URL that never works (wrong, or an
// algorithm the set has no key for) costs the Auth service what it did.
const firstSetRetry = 250 * time.Millisecond

// firstSetInterval is the wait between fetches while there is no key set.
// The caller holds c.mu.
func (c *keyCache) firstSetInterval() time.Duration {
	wait := firstSetRetry << min(max(c.failures-1, 0), 10)
	return min(wait, c.interval)
}

// key returns the key named kid.
func (c *keyCache) key(ctx context.Context, kid string) (*publicKey, error) {
	now := c.now()
	set := c.set.Load()
	if set != nil {
		if k := set.keys[kid]; k != nil {
			if !now.Before(set.refreshAt) {
				c.startFetch(ctx, now)
			}
			return k, nil
		}
	}
	done := c.startFetch(ctx, now)
	if done == nil {
		// Rate-limited. A fetch may have ended since the lookup above.
		if set = c.set.Load(); set != nil {
			if k := set.keys[kid]; k != nil {
				return k, nil
			}
			return nil, errorf(ErrKeyUnknown, "kid %s, and the key set was fetched less than %s ago", quote(kid), c.interval)
		}
		return nil, errorf(ErrKeysUnavailable, "no key set fetched yet, next try within %s: %v", c.interval, c.lastError())
	}
	select {
	case <-done:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: waiting for the key set: %w", ErrKeysUnavailable, context.Cause(ctx))
	}
	if set = c.set.Load(); set == nil {
		return nil, errorf(ErrKeysUnavailable, "%v", c.lastError())
	}
	if k := set.keys[kid]; k != nil {
		return k, nil
	}
	if err := c.lastError(); err != nil {
		return nil, errorf(ErrKeyUnknown, "kid %s; refreshing the key set failed: %v", quote(kid), err)
	}
	return nil, errorf(ErrKeyUnknown, "kid %s not in the key set", quote(kid))
}

// refreshIfDue starts a fetch in the background once the set is older
// than its time to live.
func (c *keyCache) refreshIfDue(ctx context.Context, now time.Time) {
	if set := c.set.Load(); set != nil && !now.Before(set.refreshAt) {
		c.startFetch(ctx, now)
	}
}

// startFetch starts a fetch unless one runs already or the last started
// less than the interval ago, and returns the channel that is closed when
// the running fetch ends, or nil if none runs.
func (c *keyCache) startFetch(ctx context.Context, now time.Time) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inflight != nil {
		return c.inflight
	}
	interval := c.interval
	if c.set.Load() == nil {
		interval = c.firstSetInterval()
	}
	if !c.lastFetch.IsZero() && now.Sub(c.lastFetch) < interval {
		return nil
	}
	done := make(chan struct{})
	c.inflight, c.lastFetch = done, now
	// The fetch outlives the request that started it; it keeps the
	// request's values (trace IDs) but not its cancellation.
	fetchCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), jwksFetchTimeout)
	go func() {
		defer cancel()
		c.fetch(fetchCtx, done)
	}()
	return done
}

// fetch gets the key set, stores it if it is good, and closes done.
func (c *keyCache) fetch(ctx context.Context, done chan struct{}) {
	keys, skipped, maxAge, err := c.get(ctx)
	old := c.set.Load()
	var removed bool
	if err == nil {
		ttl := c.ttl
		if maxAge >= 0 && maxAge < ttl {
			ttl = maxAge
		}
		for kid, k := range oldKeys(old) {
			if !k.equal(keys[kid]) {
				removed = true
			}
		}
		c.set.Store(&keySet{keys: keys, refreshAt: c.now().Add(ttl)})
	}
	if removed && c.onRemoved != nil {
		// Before anyone waiting sees the new set, so that no token signed
		// with a withdrawn key is served from a cache.
		c.onRemoved()
	}
	c.mu.Lock()
	c.lastErr, c.inflight = err, nil
	c.failures++
	if err == nil {
		c.failures = 0
	}
	failures := c.failures
	c.mu.Unlock()
	close(done)

	switch {
	case err != nil && old != nil:
		c.logger.WarnContext(ctx, "fetching the JWKS failed; keeping the keys known before",
			"url", c.url, "kids", slices.Sorted(maps.Keys(old.keys)), "err", err)
	case err != nil:
		// Before a first set, fetches come often: the first failure of a
		// streak warns, the rest are debug lines.
		level := slog.LevelWarn
		if failures > 1 {
			level = slog.LevelDebug
		}
		c.logger.Log(ctx, level, "fetching the JWKS failed", "url", c.url, "err", err, "skipped", skipped, "failures", failures)
	case old == nil || !sameKeys(old.keys, keys):
		c.logger.InfoContext(ctx, "JWKS changed", "url", c.url, "kids", slices.Sorted(maps.Keys(keys)))
		if len(skipped) > 0 {
			c.logger.WarnContext(ctx, "JWKS has keys that cannot be used", "url", c.url, "skipped", skipped)
		}
	}
}

// get fetches and parses the key set. maxAge is the response's
// Cache-Control max-age, or -1 if it has none.
func (c *keyCache) get(ctx context.Context) (keys map[string]*publicKey, skipped []string, maxAge time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return nil, nil, -1, fmt.Errorf("authn: JWKS request: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, nil, -1, fmt.Errorf("authn: GET JWKS: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10)) // lets the connection be reused
		return nil, nil, -1, fmt.Errorf("authn: GET %s: %s", c.url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSSize+1))
	if err != nil {
		return nil, nil, -1, fmt.Errorf("authn: GET %s: reading the body: %w", c.url, err)
	}
	if len(body) > maxJWKSSize {
		return nil, nil, -1, fmt.Errorf("authn: GET %s: key set larger than %d bytes", c.url, maxJWKSSize)
	}
	keys, skipped, err = parseKeySet(body)
	if err != nil {
		return nil, skipped, -1, fmt.Errorf("authn: GET %s: %w", c.url, err)
	}
	return keys, skipped, cacheMaxAge(resp.Header), nil
}

// lastError returns the last fetch's error.
func (c *keyCache) lastError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lastErr == nil && c.set.Load() == nil {
		return errors.New("no fetch finished yet")
	}
	return c.lastErr
}

// cacheMaxAge returns how long a response may be reused according to its
// Cache-Control header (RFC 9111 section 5.2.2): max-age, zero for no-store
// or no-cache, or -1 if the header says nothing of it.
func cacheMaxAge(h http.Header) time.Duration {
	maxAge := time.Duration(-1)
	for _, v := range h.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			name, arg, _ := strings.Cut(strings.TrimSpace(d), "=")
			switch strings.ToLower(name) {
			case "no-store", "no-cache":
				return 0
			case "max-age":
				if n, err := strconv.ParseInt(strings.Trim(arg, `"`), 10, 64); err == nil && n >= 0 {
					maxAge = time.Duration(min(n, int64(365*24*time.Hour/time.Second))) * time.Second
				}
			}
		}
	}
	return maxAge
}

func oldKeys(s *keySet) map[string]*publicKey {
	if s == nil {
		return nil
	}
	return s.keys
}

func sameKeys(a, b map[string]*publicKey) bool {
	if len(a) != len(b) {
		return false
	}
	for kid, k := range a {
		if !k.equal(b[kid]) {
			return false
		}
	}
	return true
}
