package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/kerneltest"
)

// TestRunServesAndStops runs the gateway as the platform does — addresses
// and Consul from the environment — and checks /healthz, /readyz, the
// metrics, on the public listener or on the admin one when it is set, and
// a clean stop.
func TestRunServesAndStops(t *testing.T) {
	consul := kerneltest.StartConsul(t)
	for _, tc := range []struct {
		name  string
		admin bool
	}{
		{"metrics on the public listener", false},
		{"metrics on the admin listener", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := freeAddr(t)
			t.Setenv("PORTCULLIS_GATEWAY_ADDR", addr)
			t.Setenv("PORTCULLIS_REGISTRY_ADDR", consul.Addr())
			t.Setenv("PORTCULLIS_LOGGING_FORMAT", "json")
			metricsAddr := addr
			if tc.admin {
				metricsAddr = freeAddr(t)
				t.Setenv("PORTCULLIS_GATEWAY_ADMIN_ADDR", metricsAddr)
			}

			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- run(ctx, nil, io.Discard) }()

			get := func(addr, path string) (int, string) {
				resp, err := http.Get("http://" + addr + path)
				if err != nil {
					return 0, err.Error()
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(body)
			}
			for _, a := range []string{addr, metricsAddr} {
				require.EventuallyWithT(t, func(c *assert.CollectT) {
					code, body := get(a, "/healthz")
					assert.Equal(c, http.StatusOK, code)
					assert.Equal(c, "ok\n", body)
				}, 10*time.Second, 50*time.Millisecond)
				require.EventuallyWithT(t, func(c *assert.CollectT) {
					code, _ := get(a, "/readyz")
					assert.Equal(c, http.StatusOK, code)
				}, 10*time.Second, 50*time.Millisecond)
			}
			code, body := get(metricsAddr, "/metrics")
			assert.Equal(t, http.StatusOK, code)
			assert.Contains(t, body, "portcullis_gateway_requests_total")
			if tc.admin {
				code, _ = get(addr, "/metrics")
				assert.Equal(t, http.StatusNotFound, code, "no metrics on the public listener")
			}

			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(15 * time.Second):
				t.Fatal("run did not return after its context ended")
			}
		})
	}
}

// freeAddr returns a loopback address no one listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func TestPrintConfigRedactsRedisPassword(t *testing.T) {
	t.Setenv("PORTCULLIS_RATELIMIT_REDIS_URL", "redis://:hunter2@127.0.0.1:6379/0")
	var out bytes.Buffer
	require.NoError(t, run(t.Context(), []string{"--print-config"}, &out))
	assert.NotContains(t, out.String(), "hunter2")
	assert.Contains(t, out.String(), "redis_url")
}

func TestBadConfigNamesTheKey(t *testing.T) {
	t.Setenv("PORTCULLIS_ROUTES_TIMEOUTS", "/pkg.Svc/Method=soon")
	err := run(t.Context(), nil, io.Discard)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "routes.timeouts")
}
