package flows_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/e2e/platform"
	"portcullis.dev/e2e/platformtest"
	"portcullis.dev/kernel/kerneltest"
	authv1 "portcullis.dev/proto/auth/v1"
	"portcullis.dev/proto/auth/v1/authv1connect"
	identityv1 "portcullis.dev/proto/identity/v1"
	"portcullis.dev/proto/identity/v1/identityv1connect"
)

// steadyLoad calls call from workers goroutines, one call after another,
// until stop is called, which returns what happened.
type steadyLoad struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []error
	stop       func()
}

func startLoad(workers int, call func(context.Context) error) *steadyLoad {
	l := &steadyLoad{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				err := call(ctx)
				switch {
				case ctx.Err() != nil:
				case err != nil:
					l.failed.Add(1)
					l.mu.Lock()
					l.errs = append(l.errs, err)
					l.mu.Unlock()
				default:
					l.ok.Add(1)
				}
				time.Sleep(2 * time.Millisecond) // steady, not flat out: the machine runs the platform too
			}
		})
	}
	l.stop = func() { cancel(); wg.Wait() }
	return l
}

// The services of the fault tests and how many instances each runs; the
// gateway does not register in Consul, it only reads it.
var (
	services = platform.Services[:4]
	replicas = map[string]int{"identitysvc": 2}
)

// TestFaults runs the platform with two Identity instances under a steady
// load through the gateway, and breaks it: an Identity instance crashes,
// Consul restarts, and finally everything gets SIGTERM.
func TestFaults(t *testing.T) {
	t.Parallel()
	consul := kerneltest.StartConsul(t)
	p, logs := platformtest.Start(t, platform.Options{
		ConsulAddr: consul.Addr(),
		Replicas:   replicas,
		Env: append([]string{"PORTCULLIS_RATELIMIT_ENABLED=false", "PORTCULLIS_IDENTITY_SESSION_END_RETRY=200ms"},
			platformtest.FastHashing...),
	})
	ctx := t.Context()
	addrs, err := p.Instances(ctx, "identitysvc")
	require.NoError(t, err)
	require.Len(t, addrs, 2, "two Identity instances")

	auth := authv1connect.NewAuthServiceClient(http.DefaultClient, p.GatewayURL)
	login, err := auth.Login(ctx, connect.NewRequest(&authv1.LoginRequest{Email: p.Admin.Email, Password: p.Admin.Password}))
	require.NoError(t, err, "logs:\n%s", logs.String())
	token := login.Msg.GetAccessToken()
	// gRPC over h2c: one connection to the gateway, many streams.
	identity := identityv1connect.NewIdentityServiceClient(platform.H2CClient(), p.GatewayURL, connect.WithGRPC())
	getMe := func(ctx context.Context) error {
		_, err := identity.GetMe(ctx, bearer(token, &identityv1.GetMeRequest{}))
		return err
	}

	t.Run("an Identity instance crashes under load", func(t *testing.T) {
		const workers = 4
		load := startLoad(workers, getMe)
		time.Sleep(time.Second)
		before := load.ok.Load()
		require.NoError(t, p.KillService(ctx, "identitysvc-2"))
		time.Sleep(3 * time.Second) // past Consul's next check of the dead instance
		after := load.ok.Load()
		load.stop()
		t.Logf("%d calls served, %d failed (%v)", load.ok.Load(), load.failed.Load(), load.errs)
		assert.Positive(t, before, "served before the crash")
		assert.Greater(t, after, before, "served after the crash")
		// Only calls already sent to the dying instance may fail; a call
		// that found its connection refused went to the other instance.
		assert.LessOrEqual(t, load.failed.Load(), int64(workers), "at most the in-flight calls are lost")

		require.NoError(t, p.StartService(ctx, "identitysvc-2"))
	})

	t.Run("Consul restarts", func(t *testing.T) {
		load := startLoad(2, getMe)
		time.Sleep(500 * time.Millisecond)
		beforeOutage := load.ok.Load()
		consul.Stop()
		time.Sleep(2 * time.Second)
		served := load.ok.Load()
		consul.Restart() // a dev agent: it comes back empty, and every instance registers again
		require.Eventually(t, func() bool {
			for _, service := range services {
				if addrs, err := p.Instances(ctx, service); err != nil || len(addrs) < max(1, replicas[service]) {
					return false
				}
			}
			return true
		}, 15*time.Second, 100*time.Millisecond, "every instance registers again")
		time.Sleep(6 * time.Second) // past the gateway's settling time: it now serves what Consul says
		load.stop()
		t.Logf("%d calls served (%d while Consul was down), %d failed (%v)", load.ok.Load(), served-beforeOutage, load.failed.Load(), load.errs)
		assert.Greater(t, served, beforeOutage, "served while Consul was down")
		assert.Greater(t, load.ok.Load(), served, "served after Consul came back")
		assert.Zero(t, load.failed.Load(), "the gateway keeps routing")
	})

	t.Run("a user disabled while Auth is down loses their sessions once it is back", func(t *testing.T) {
		identityHTTP := identityv1connect.NewIdentityServiceClient(http.DefaultClient, p.GatewayURL)
		const email, password = "dora@example.com", "correct horse battery"
		created, err := identityHTTP.CreateUser(ctx, connect.NewRequest(&identityv1.CreateUserRequest{Email: email, Password: password}))
		require.NoError(t, err)
		login := func() *authv1.LoginResponse {
			res, err := auth.Login(ctx, connect.NewRequest(&authv1.LoginRequest{Email: email, Password: password}))
			require.NoError(t, err)
			return res.Msg
		}
		// The second session is not refreshed until the end: only the end
		// of the user's sessions can make it refused (a refresh token used
		// twice would be, too).
		dora, untouched := login(), login()

		require.NoError(t, p.StopService(ctx, "authsvc"))
		_, err = identityHTTP.DisableUser(ctx, bearer(token, &identityv1.DisableUserRequest{UserId: created.Msg.GetUser().GetId(), Reason: "left"}))
		require.NoError(t, err, "the disable does not wait for the Auth service")
		time.Sleep(time.Second) // the first tries fail; the end stays queued in Identity's database
		require.NoError(t, p.StartService(ctx, "authsvc"))

		refresh := dora.GetRefreshToken()
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			res, err := auth.Refresh(ctx, connect.NewRequest(&authv1.RefreshRequest{RefreshToken: refresh}))
			if err == nil {
				refresh = res.Msg.GetRefreshToken() // rotated: the old one would now read as reuse
			}
			assert.Equal(c, connect.CodeUnauthenticated, connect.CodeOf(err), "the disabled user still refreshes")
		}, 15*time.Second, 100*time.Millisecond, "logs:\n%s", logs.String())
		_, err = auth.Refresh(ctx, connect.NewRequest(&authv1.RefreshRequest{RefreshToken: untouched.GetRefreshToken()}))
		assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err), "the user's other session was not ended")
	})

	t.Run("SIGTERM to everything", func(t *testing.T) {
		registered := func(service string) int {
			resp, err := http.Get("http://" + p.ConsulAddr + "/v1/health/service/" + service)
			require.NoError(t, err)
			defer resp.Body.Close()
			var entries []json.RawMessage
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&entries))
			return len(entries)
		}
		for _, service := range services {
			require.Equal(t, max(1, replicas[service]), registered(service), service)
		}
		stopCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		require.NoError(t, p.Stop(stopCtx), "every process exits 0 on SIGTERM")
		for _, service := range services {
			assert.Zero(t, registered(service), fmt.Sprintf("%s left its registration behind", service))
		}
	})
}
