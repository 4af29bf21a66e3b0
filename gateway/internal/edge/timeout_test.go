package edge_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	identityv1 "portcullis.dev/proto/identity/v1"
	"portcullis.dev/proto/identity/v1/identityv1connect"
)

// TestHungInstanceIsEjected: an instance that takes calls and never
// answers them, even at their deadlines (deadlocked), its readiness check
// passing, costs its clients a route
// timeout each (DeadlineExceeded) only until it is ejected; then its
// calls go to the instance that answers.
func TestHungInstanceIsEjected(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	hang := make(chan struct{})
	e.startIdentityServer(t, &identityServer{name: "hung", hang: hang})
	t.Cleanup(func() { close(hang) }) // before the server stops, which waits for its handlers
	e.startIdentityServer(t, &identityServer{name: "fine"})
	require.Eventually(t, func() bool {
		entries, _, err := e.reg.Client().Health().Service("identitysvc", "", true, nil)
		return err == nil && len(entries) == 2
	}, 15*time.Second, 20*time.Millisecond, "both instances pass their checks")
	cfg := e.config(t)
	cfg.Routes.Timeouts = []string{"/portcullis.identity.v1.IdentityService/=300ms"}
	gw := e.startGateway(t, cfg)

	var timedOut, answered int
	for i := range 20 {
		p := protocols()[i%len(protocols())]
		c := identityv1connect.NewIdentityServiceClient(p.client, gw.url, p.opts...)
		_, err := c.CreateUser(context.Background(), connect.NewRequest(&identityv1.CreateUserRequest{Email: "h@example.com"}))
		switch {
		case err == nil:
			answered++
		case connect.CodeOf(err) == connect.CodeDeadlineExceeded:
			timedOut++
		default:
			require.NoError(t, err, p.name)
		}
	}
	assert.LessOrEqual(t, timedOut, 3, "the hung instance is ejected after three calls it left unanswered")
	assert.Equal(t, 20, timedOut+answered)
	assert.Contains(t, e.logs.String(), "instance ejected", "the ejection is logged")
}

// TestSlowUploadsEjectNobody: a client that sends its request too slowly
// to finish within the route's timeout costs the instance nothing: it was
// never asked for the whole request. Else a few such clients would take
// every instance out of rotation.
func TestSlowUploadsEjectNobody(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startIdentity(t, "slow")
	cfg := e.config(t)
	cfg.Routes.Timeouts = []string{"/portcullis.identity.v1.IdentityService/=300ms"}
	gw := e.startGateway(t, cfg)
	c := identityv1connect.NewIdentityServiceClient(h2cClient(), gw.url)
	require.EventuallyWithT(t, func(col *assert.CollectT) {
		_, err := c.CreateUser(context.Background(), connect.NewRequest(&identityv1.CreateUserRequest{Email: "s@example.com"}))
		assert.NoError(col, err)
	}, 15*time.Second, 20*time.Millisecond, "routed")

	for range 4 {
		body, w := io.Pipe()
		go func() {
			_, _ = w.Write([]byte{0, 0, 0, 0, 100}) // an envelope promising 100 bytes, never sent
		}()
		req, err := http.NewRequest(http.MethodPost, gw.url+identityv1connect.IdentityServiceCreateUserProcedure, body)
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/grpc")
		res, err := h2cClient().Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, res.Body)
		_ = res.Body.Close()
		assert.Equal(t, "4", res.Header.Get("Grpc-Status"), "the route's timeout ends it")
		_ = w.Close()
	}
	assert.NotContains(t, e.logs.String(), "instance ejected", "an instance was ejected for a client's slowness")
}

// TestServicesLearnTheRouteDeadline: the service is told a deadline a
// little short of the gateway's own for the route, in each protocol's
// header, so that it answers before the gateway stops waiting; a client's
// shorter deadline stays.
func TestServicesLearnTheRouteDeadline(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startIdentity(t, "deadline")
	cfg := e.config(t)
	cfg.Routes.Timeouts = []string{"/portcullis.identity.v1.IdentityService/=5s"}
	gw := e.startGateway(t, cfg)
	for _, p := range protocols() {
		t.Run(p.name, func(t *testing.T) {
			c := identityv1connect.NewIdentityServiceClient(p.client, gw.url, p.opts...)
			var res *connect.Response[identityv1.CreateUserResponse]
			require.EventuallyWithT(t, func(col *assert.CollectT) {
				var err error
				res, err = c.CreateUser(context.Background(), connect.NewRequest(&identityv1.CreateUserRequest{Email: "d@example.com"}))
				assert.NoError(col, err)
			}, 15*time.Second, 20*time.Millisecond)
			left, err := strconv.Atoi(res.Header().Get("X-Seen-Deadline-Ms"))
			require.NoError(t, err, "the service had no deadline")
			assert.InDelta(t, 4500, left, 300, "the route's 5s less a tenth")

			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			res, err = c.CreateUser(ctx, connect.NewRequest(&identityv1.CreateUserRequest{Email: "d@example.com"}))
			require.NoError(t, err)
			left, err = strconv.Atoi(res.Header().Get("X-Seen-Deadline-Ms"))
			require.NoError(t, err)
			assert.LessOrEqual(t, left, 1000, "the client's shorter deadline stays")
		})
	}
}
