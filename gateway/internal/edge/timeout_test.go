package edge_test

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	identityv1 "portcullis.dev/proto/identity/v1"
	"portcullis.dev/proto/identity/v1/identityv1connect"
)

// TestHungInstanceIsEjected: an instance that takes calls and never
// answers them, its readiness check passing, costs its clients a route
// timeout each (DeadlineExceeded) only until it is ejected; then its
// calls go to the instance that answers.
func TestHungInstanceIsEjected(t *testing.T) {
	e := newEnv(t)
	e.startIdentityServer(t, &identityServer{name: "hung", hang: true})
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
}
