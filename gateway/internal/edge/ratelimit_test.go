package edge_test

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/authn/authntest"
	kconfig "portcullis.dev/kernel/config"
	identityv1 "portcullis.dev/proto/identity/v1"
	"portcullis.dev/proto/identity/v1/identityv1connect"

	"portcullis.dev/gateway/config"
	"portcullis.dev/gateway/internal/ratelimit/ratelimittest"
)

// testRateLimits checks the limits through the gateway. All clients are
// 127.0.0.1, so each subtest has gateways (or a Redis prefix) of its own.
func testRateLimits(t *testing.T, e *env) {
	limited := func(t *testing.T) config.Config {
		cfg := e.config(t)
		cfg.RateLimit.Enabled = true
		cfg.RateLimit.IPRate, cfg.RateLimit.IPBurst = 50, 10
		cfg.RateLimit.UserRate, cfg.RateLimit.UserBurst = 50, 10
		cfg.RateLimit.CredentialRate, cfg.RateLimit.CredentialBurst = 0.01, 3
		return cfg
	}
	// getMe gives each caller a client of its own whose connections close
	// when the test ends, before its gateways drain.
	getMe := func(t *testing.T, url, token string) func() bool {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		t.Cleanup(tr.CloseIdleConnections)
		c := identityv1connect.NewIdentityServiceClient(&http.Client{Transport: tr}, url)
		return func() bool {
			_, err := c.GetMe(t.Context(), withToken(connect.NewRequest(&identityv1.GetMeRequest{}), token))
			return err == nil
		}
	}
	token := e.auth.Issue()

	t.Run("refusal", func(t *testing.T) {
		t.Parallel()
		cfg := limited(t)
		cfg.RateLimit.IPRate = 1 // slower than even a loaded machine calls
		gw := e.startGateway(t, cfg)
		for _, p := range protocols() {
			c := identityv1connect.NewIdentityServiceClient(p.client, gw.url, p.opts...)
			var err error
			for range 20 {
				if _, err = c.GetMe(t.Context(), withToken(connect.NewRequest(&identityv1.GetMeRequest{}), token)); err != nil {
					break
				}
			}
			assert.Equal(t, connect.CodeResourceExhausted, connect.CodeOf(err), p.name)
		}
		for _, client := range bothPaths() {
			req, err := http.NewRequest(http.MethodPost, gw.url+identityv1connect.IdentityServiceGetMeProcedure, strings.NewReader("{}"))
			require.NoError(t, err)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := client.c.Do(req)
			require.NoError(t, err)
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode, client.name)
			assert.Contains(t, string(body), `"code":"resource_exhausted"`, client.name)
			retry, err := strconv.Atoi(resp.Header.Get("Retry-After"))
			require.NoError(t, err, client.name)
			assert.GreaterOrEqual(t, retry, 1, client.name)
			assert.Equal(t, "10", resp.Header.Get("RateLimit-Limit"), client.name)
			assert.Equal(t, "0", resp.Header.Get("RateLimit-Remaining"), client.name)
			assert.NotEmpty(t, resp.Header.Get("RateLimit-Reset"), client.name)
			assert.Equal(t, "10;w=10", resp.Header.Get("RateLimit-Policy"), client.name)
		}

		metrics := get(t, gw.url+"/metrics")
		assert.Contains(t, metrics, `portcullis_gateway_ratelimit_rejections_total{bucket="ip",route="/portcullis.identity.v1.IdentityService/GetMe"}`)
	})

	t.Run("credential endpoints are stricter", func(t *testing.T) {
		t.Parallel()
		gw := e.startGateway(t, limited(t))
		c := identityv1connect.NewIdentityServiceClient(http.DefaultClient, gw.url)
		var codes []string
		for range 5 {
			_, err := c.CreateUser(t.Context(), connect.NewRequest(&identityv1.CreateUserRequest{}))
			if err == nil {
				codes = append(codes, "ok")
			} else {
				codes = append(codes, connect.CodeOf(err).String())
			}
		}
		assert.Equal(t, []string{"ok", "ok", "ok", "resource_exhausted", "resource_exhausted"}, codes)
		assert.True(t, getMe(t, gw.url, token)(), "other procedures still pass")
	})

	t.Run("per user", func(t *testing.T) {
		t.Parallel()
		cfg := limited(t)
		cfg.RateLimit.IPRate = 0 // only the user limit
		cfg.RateLimit.UserRate, cfg.RateLimit.UserBurst = 0.01, 3
		gw := e.startGateway(t, cfg)
		alice, bob := e.auth.Issue(authntest.WithSubject("alice")), e.auth.Issue(authntest.WithSubject("bob"))
		var n int
		aliceGetMe := getMe(t, gw.url, alice)
		for aliceGetMe() {
			n++
			require.Less(t, n, 100)
		}
		assert.Equal(t, 3, n)
		assert.True(t, getMe(t, gw.url, bob)(), "another user has a bucket of their own")
	})

	t.Run("within 5% under 10x overload", func(t *testing.T) {
		t.Parallel()
		gw := e.startGateway(t, limited(t))
		r := ratelimittest.Overload(500, 1500*time.Millisecond, 8, getMe(t, gw.url, token))
		r.AssertWithin(t, 50, 10, 0.05)
	})

	t.Run("shared by two gateways through Redis", func(t *testing.T) {
		t.Parallel()
		url, prefix := ratelimittest.Redis(t)
		cfg := limited(t)
		cfg.RateLimit.RedisURL = kconfig.DSN(url)
		cfg.RateLimit.KeyPrefix = prefix
		calls := []func() bool{getMe(t, e.startGateway(t, cfg).url, token), getMe(t, e.startGateway(t, cfg).url, token)}
		var n atomic.Int64
		r := ratelimittest.Overload(500, 1500*time.Millisecond, 8, func() bool { return calls[n.Add(1)%2]() })
		r.AssertWithin(t, 50, 10, 0.05)
	})

	t.Run("Redis down falls back to local limits", func(t *testing.T) {
		t.Parallel()
		cfg := limited(t)
		cfg.RateLimit.RedisURL = "redis://127.0.0.1:1/0"
		cfg.RateLimit.IPRate = 0.01 // no refill during the test
		gw := e.startGateway(t, cfg)
		var n int
		call := getMe(t, gw.url, token)
		for call() {
			n++
			require.Less(t, n, 100)
		}
		assert.Equal(t, 10, n, "the local burst")
		assert.Contains(t, get(t, gw.url+"/metrics"), "portcullis_gateway_ratelimit_local_fallback_total 11\n")
		assert.Contains(t, e.logs.String(), "shared rate limits unavailable")
	})
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}
