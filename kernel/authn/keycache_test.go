package authn_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/authn"
	"portcullis.dev/kernel/authn/authntest"
)

// verifyOK verifies a fresh token from srv and requires success.
func verifyOK(t *testing.T, v *authn.Verifier, srv *authntest.Server, opts ...authntest.TokenOption) {
	t.Helper()
	_, err := v.Verify(t.Context(), srv.Issue(opts...))
	require.NoError(t, err)
}

func TestUnknownKidRefreshesOncePerInterval(t *testing.T) {
	t.Parallel()
	srv, clock := newServer(t)
	v := srv.NewVerifier()
	verifyOK(t, v, srv)
	require.Equal(t, 1, srv.Fetches())

	// An unpublished key: its first token fetches the set again, once.
	unpublished := srv.AddKey(authn.AlgEdDSA)
	srv.RemoveKey(unpublished)
	_, err := v.Verify(t.Context(), srv.Issue(authntest.WithKey(unpublished)))
	require.ErrorIs(t, err, authn.ErrKeyUnknown)
	assert.Equal(t, 1, srv.Fetches(), "the set was fetched less than refresh_interval ago")

	clock.Advance(authn.DefaultRefreshInterval)
	for i := range 5 {
		_, err = v.Verify(t.Context(), srv.Issue(authntest.WithKey(unpublished)))
		require.ErrorIs(t, err, authn.ErrKeyUnknown)
		_, err = v.Verify(t.Context(), srv.Issue(authntest.WithHeader("kid", "random-"+strconv.Itoa(i))))
		require.ErrorIs(t, err, authn.ErrKeyUnknown)
	}
	assert.Equal(t, 2, srv.Fetches(), "one refresh per refresh_interval, however many unknown kids")

	clock.Advance(authn.DefaultRefreshInterval)
	_, err = v.Verify(t.Context(), srv.Issue(authntest.WithKey(unpublished)))
	require.ErrorIs(t, err, authn.ErrKeyUnknown)
	assert.Equal(t, 3, srv.Fetches())

	// Known keys are still served meanwhile.
	verifyOK(t, v, srv)
	assert.Equal(t, 3, srv.Fetches())
}

func TestUnknownKidFloodFetchesOnce(t *testing.T) {
	t.Parallel()
	srv, clock := newServer(t)
	v := srv.NewVerifier()
	verifyOK(t, v, srv)
	clock.Advance(authn.DefaultRefreshInterval)

	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			_, err := v.Verify(context.Background(), srv.Issue(authntest.WithHeader("kid", "made-up-"+strconv.Itoa(i))))
			assert.ErrorIs(t, err, authn.ErrKeyUnknown)
		})
	}
	wg.Wait()
	assert.Equal(t, 2, srv.Fetches())
}

func TestRotation(t *testing.T) {
	t.Parallel()
	srv, clock := newServer(t)
	v := srv.NewVerifier()
	old := srv.Issue()
	verifyOK(t, v, srv)

	// The Auth service publishes a new key and signs with it at once.
	clock.Advance(authn.DefaultRefreshInterval)
	next := srv.Rotate()
	p, err := v.Verify(t.Context(), srv.Issue())
	require.NoError(t, err, "the new key is fetched on its first token")
	assert.Equal(t, authntest.Subject, p.Subject)
	assert.Equal(t, 2, srv.Fetches())
	require.Equal(t, next, srv.KeyID())

	// Tokens of the old key, still published, stay valid.
	_, err = v.Verify(t.Context(), old)
	require.NoError(t, err)
}

// TestWithdrawnKeyDropsCachedTokens shows that withdrawing a key (after a
// compromise, say) also ends the tokens it signed that a verifier had
// cached.
func TestWithdrawnKeyDropsCachedTokens(t *testing.T) {
	t.Parallel()
	srv, clock := newServer(t)
	v := srv.NewVerifier()
	compromised := srv.KeyID()
	token := srv.Issue()
	_, err := v.Verify(t.Context(), token)
	require.NoError(t, err)

	srv.Rotate()
	srv.RemoveKey(compromised)
	clock.Advance(authn.DefaultRefreshInterval)
	verifyOK(t, v, srv) // fetches the new set

	_, err = v.Verify(t.Context(), token)
	require.ErrorIs(t, err, authn.ErrKeyUnknown)
}

func TestFetchFailureKeepsKeys(t *testing.T) {
	t.Parallel()
	srv, clock := newServer(t)
	v := srv.NewVerifier()
	verifyOK(t, v, srv)

	srv.SetFailing(true)
	clock.Advance(authn.DefaultCacheTTL) // the set is stale: refreshed in the background
	verifyOK(t, v, srv)
	require.Eventually(t, func() bool { return srv.Fetches() == 2 }, 5*time.Second, time.Millisecond)
	verifyOK(t, v, srv) // the refresh failed; the old keys still serve

	clock.Advance(authn.DefaultRefreshInterval)
	_, err := v.Verify(t.Context(), srv.Issue(authntest.WithHeader("kid", "unknown")))
	require.ErrorIs(t, err, authn.ErrKeyUnknown)
	assert.Contains(t, err.Error(), "503")
	verifyOK(t, v, srv)
}

func TestFirstFetchFails(t *testing.T) {
	t.Parallel()
	srv, clock := newServer(t)
	v := srv.NewVerifier()
	srv.SetFailing(true)

	_, err := v.Verify(t.Context(), srv.Issue())
	require.ErrorIs(t, err, authn.ErrKeysUnavailable)
	_, err = v.Verify(t.Context(), srv.Issue())
	require.ErrorIs(t, err, authn.ErrKeysUnavailable)
	assert.Equal(t, 1, srv.Fetches(), "retried at once")

	// Without any key set nothing verifies: the next try comes within a
	// quarter of a second, not refresh_interval, and the wait doubles with
	// each failure after that.
	clock.Advance(250 * time.Millisecond)
	_, err = v.Verify(t.Context(), srv.Issue())
	require.ErrorIs(t, err, authn.ErrKeysUnavailable)
	assert.Equal(t, 2, srv.Fetches(), "not tried again after 250ms")
	clock.Advance(250 * time.Millisecond)
	_, err = v.Verify(t.Context(), srv.Issue())
	require.ErrorIs(t, err, authn.ErrKeysUnavailable)
	assert.Equal(t, 2, srv.Fetches(), "tried again 250ms after a second failure")

	srv.SetFailing(false)
	clock.Advance(250 * time.Millisecond)
	verifyOK(t, v, srv)
	assert.Equal(t, 3, srv.Fetches())
}

func TestStaleKeySetRefreshedInBackground(t *testing.T) {
	t.Parallel()
	srv, clock := newServer(t)
	v := srv.NewVerifier()
	verifyOK(t, v, srv)

	clock.Advance(authn.DefaultCacheTTL - time.Second)
	verifyOK(t, v, srv)
	assert.Equal(t, 1, srv.Fetches(), "fresh")

	clock.Advance(time.Second)
	verifyOK(t, v, srv)
	require.Eventually(t, func() bool { return srv.Fetches() == 2 }, 5*time.Second, time.Millisecond)
}

func TestCacheControlMaxAge(t *testing.T) {
	t.Parallel()
	tests := []struct {
		cacheControl string
		// refreshedAfter is when the set is refreshed.
		refreshedAfter time.Duration
	}{
		{"public, max-age=60", time.Minute},
		{`max-age="120"`, 2 * time.Minute},
		{"max-age=86400", authn.DefaultCacheTTL}, // cache_ttl caps it
		{"no-cache", authn.DefaultRefreshInterval},
		{"", authn.DefaultCacheTTL},
	}
	for _, tt := range tests {
		t.Run(tt.cacheControl, func(t *testing.T) {
			t.Parallel()
			srv, clock := newServer(t)
			srv.SetCacheControl(tt.cacheControl)
			v := srv.NewVerifier()
			verifyOK(t, v, srv)

			// Just before: a tenth of it before, for the shortest case.
			early := tt.refreshedAfter / 10
			clock.Advance(tt.refreshedAfter - early)
			verifyOK(t, v, srv)
			assert.Equal(t, 1, srv.Fetches())

			clock.Advance(early)
			verifyOK(t, v, srv)
			require.Eventually(t, func() bool { return srv.Fetches() == 2 }, 5*time.Second, time.Millisecond)
		})
	}
}

// TestJWKSURLAndClient shows the verifier fetching from its URL with the
// client it is given, as the discovery-backed client resolves "authsvc".
func TestJWKSURLAndClient(t *testing.T) {
	t.Parallel()
	srv, clock := newServer(t)
	target, err := url.Parse(srv.URL())
	require.NoError(t, err)
	var hosts []string
	var mu sync.Mutex
	client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		mu.Lock()
		hosts = append(hosts, r.URL.Host)
		mu.Unlock()
		r = r.Clone(r.Context())
		r.URL.Host = target.Host
		return http.DefaultTransport.RoundTrip(r)
	})}
	cfg := srv.Config()
	cfg.JWKSURL = "http://authsvc/.well-known/jwks.json"
	v, err := authn.NewVerifier(cfg, authn.WithHTTPClient(client), authn.WithClock(clock.Now))
	require.NoError(t, err)

	verifyOK(t, v, srv)
	assert.Equal(t, []string{"authsvc"}, hosts)
}

// TestFetchWaitEndsWithContext shows a verification giving up waiting for a
// slow key set fetch when its context ends, while the fetch goes on for
// the next one.
func TestFetchWaitEndsWithContext(t *testing.T) {
	t.Parallel()
	srv, clock := newServer(t)
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		resp, err := srv.Client().Get(srv.URL())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer func() { _ = resp.Body.Close() }()
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(must(io.ReadAll(resp.Body)))
	}))
	t.Cleanup(slow.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	cfg := srv.Config()
	cfg.JWKSURL = slow.URL + "/.well-known/jwks.json"
	v, err := authn.NewVerifier(cfg, authn.WithClock(clock.Now))
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err = v.Verify(ctx, srv.Issue())
	require.ErrorIs(t, err, authn.ErrKeysUnavailable)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	close(release)
	require.Eventually(t, func() bool {
		_, err := v.Verify(t.Context(), srv.Issue())
		return err == nil
	}, 5*time.Second, 5*time.Millisecond, "the fetch went on without the request that started it")
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
