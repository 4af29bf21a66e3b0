package edge_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/registry"
	auditv1 "portcullis.dev/proto/audit/v1"
	"portcullis.dev/proto/audit/v1/auditv1connect"

	"portcullis.dev/gateway/internal/edge"
)

// TestAdminListener: with gateway.admin_addr set the metrics are served
// there and not on the public listener, and the admin listener's /readyz
// answers 503 while the gateway drains a stream still in flight.
func TestAdminListener(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	audit := &auditServer{release: make(chan struct{}), events: 2}
	e.startAudit(t, audit)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	adminLn, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	cfg := e.config(t)
	cfg.Gateway.AdminAddr = adminLn.Addr().String()
	reg, err := registry.New(cfg.Registry)
	require.NoError(t, err)
	g, err := edge.New(cfg, reg)
	require.NoError(t, err)
	t.Cleanup(g.Close)
	ctx, drain := context.WithCancel(context.Background())
	adminCtx, stopAdmin := context.WithCancel(context.Background())
	served, adminServed := make(chan error, 1), make(chan error, 1)
	go func() { served <- g.Serve(ctx, ln) }()
	go func() { adminServed <- g.ServeAdmin(adminCtx, adminLn) }()
	t.Cleanup(func() { drain(); stopAdmin() })
	public, admin := "http://"+ln.Addr().String(), "http://"+adminLn.Addr().String()

	status := func(url string) int {
		resp, err := http.Get(url)
		if err != nil {
			return 0
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	require.Eventually(t, func() bool { return status(admin+"/readyz") == http.StatusOK }, 10*time.Second, 20*time.Millisecond)
	assert.Equal(t, http.StatusOK, status(public+"/readyz"), "health stays on the public listener")
	assert.Equal(t, http.StatusOK, status(admin+"/metrics"))
	assert.Equal(t, http.StatusNotFound, status(public+"/metrics"))
	for _, url := range []string{public + "/healthz", public + "/readyz", admin + "/healthz", admin + "/metrics"} {
		resp, err := http.Post(url, "text/plain", nil)
		require.NoError(t, err)
		_ = resp.Body.Close()
		assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, "POST %s", url)
		assert.Equal(t, "GET, HEAD", resp.Header.Get("Allow"))
	}
	assert.Equal(t, http.StatusNotFound, status(admin+"/metrics/x"), "paths match exactly")

	// A stream in flight: the first event arrives, the second waits for
	// release.
	c := auditv1connect.NewAuditServiceClient(h2cClient(), public, connect.WithGRPC())
	var stream *connect.ServerStreamForClient[auditv1.ExportEventsResponse]
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		s, err := c.ExportEvents(t.Context(), withToken(connect.NewRequest(&auditv1.ExportEventsRequest{}), e.auth.Issue()))
		require.NoError(ct, err)
		if !assert.True(ct, s.Receive(), "first event: %v", s.Err()) {
			_ = s.Close()
			return
		}
		stream = s
	}, 15*time.Second, 50*time.Millisecond)

	drain()
	require.Eventually(t, func() bool { return status(admin+"/readyz") == http.StatusServiceUnavailable }, 5*time.Second, 10*time.Millisecond,
		"the admin listener says the gateway is draining")
	close(audit.release)
	require.True(t, stream.Receive(), "the stream in flight ends whole: %v", stream.Err())
	assert.False(t, stream.Receive())
	require.NoError(t, stream.Err())
	require.NoError(t, <-served)
	assert.Equal(t, http.StatusServiceUnavailable, status(admin+"/readyz"), "the admin listener outlives the drain")
	stopAdmin()
	require.NoError(t, <-adminServed)
}

// TestDrainDelay: told to stop, the gateway answers /readyz 503 at once but
// goes on accepting new connections for gateway.drain_delay, so that a
// load balancer stops sending them before they would be refused.
func TestDrainDelay(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	cfg := e.config(t)
	cfg.Gateway.DrainDelay = 700 * time.Millisecond
	reg, err := registry.New(cfg.Registry)
	require.NoError(t, err)
	g, err := edge.New(cfg, reg)
	require.NoError(t, err)
	t.Cleanup(g.Close)
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx, ln) }()
	base := "http://" + ln.Addr().String()
	// A connection of its own each time: the point is whether the
	// listener still accepts.
	status := func(path string) int {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
		resp, err := c.Get(base + path)
		if err != nil {
			return 0
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	require.Eventually(t, func() bool { return status("/readyz") == http.StatusOK }, 10*time.Second, 20*time.Millisecond)

	stopped := time.Now()
	stop()
	require.Eventually(t, func() bool { return status("/readyz") == http.StatusServiceUnavailable }, time.Second, 5*time.Millisecond)
	assert.Equal(t, http.StatusOK, status("/healthz"), "a new connection was refused during the drain delay")
	require.NoError(t, <-served)
	assert.GreaterOrEqual(t, time.Since(stopped), cfg.Gateway.DrainDelay)
	assert.Zero(t, status("/healthz"), "the gateway accepts after its drain")
}
