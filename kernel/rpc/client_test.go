package rpc_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/consul/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/kerneltest"
	"portcullis.dev/kernel/registry"
	"portcullis.dev/kernel/rpc"
	identityv1 "portcullis.dev/proto/identity/v1"
	"portcullis.dev/proto/identity/v1/identityv1connect"
)

func newRegistry(t *testing.T, consul *kerneltest.Consul) *registry.Registry {
	t.Helper()
	reg, err := registry.New(registry.Config{Addr: consul.Addr(), CheckInterval: time.Second})
	require.NoError(t, err)
	return reg
}

// instance is one registered server of the stub service.
type instance struct {
	stub   *identityStub
	cancel context.CancelFunc
	done   chan error
	addr   string
}

func startInstance(t *testing.T, reg *registry.Registry, a *access, name string) *instance {
	t.Helper()
	stub := &identityStub{name: name}
	srv := rpc.NewServer("identitysvc", "test", rpc.Config{DeregisterDelay: 300 * time.Millisecond, ShutdownTimeout: 5 * time.Second},
		rpc.WithRegistry(reg), rpc.WithAccessPolicy(a.policy()))
	srv.Handle(identityv1connect.NewIdentityServiceHandler(stub, srv.HandlerOptions()...))
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{stub: stub, cancel: cancel, done: make(chan error, 1)}
	go func() { in.done <- srv.Run(ctx) }()
	addr, err := srv.Addr(t.Context())
	require.NoError(t, err)
	in.addr = addr.String()
	t.Cleanup(in.stop)
	return in
}

func (in *instance) stop() {
	in.cancel()
	<-in.done
	in.done <- nil // later stops return at once
}

// twoInstances starts a Consul and two Identity instances, first and
// second, registered in it.
func twoInstances(t *testing.T) (reg *registry.Registry, a *access, first, second *instance) {
	t.Helper()
	reg = newRegistry(t, kerneltest.StartConsul(t))
	a = newAccess(t)
	return reg, a, startInstance(t, reg, a, "first"), startInstance(t, reg, a, "second")
}

func TestFactoryBalancesAndSurvivesAStoppedInstance(t *testing.T) {
	t.Parallel()
	reg, a, first, second := twoInstances(t)

	factory := rpc.NewClientFactory(reg, rpc.WithServiceTokens(a.tokens))
	t.Cleanup(factory.Close)
	client := rpc.NewClient(factory, "identitysvc", identityv1connect.NewIdentityServiceClient)

	// Both instances registered and healthy: calls spread over both, and an
	// INTERNAL procedure gets the service token attached.
	require.Eventually(t, func() bool {
		_, err := client.VerifyCredentials(t.Context(), connect.NewRequest(&identityv1.VerifyCredentialsRequest{}))
		return err == nil && first.stub.calls.Load() > 0 && second.stub.calls.Load() > 0
	}, 10*time.Second, 20*time.Millisecond, "calls never reached both instances")
	resp, err := client.VerifyCredentials(t.Context(), connect.NewRequest(&identityv1.VerifyCredentialsRequest{}))
	require.NoError(t, err)
	assert.Equal(t, "service:authsvc", resp.Msg.GetUserId())

	// Call continuously while the first instance shuts down, then while the
	// second is killed without a goodbye (its port refuses connections):
	// no call may fail.
	var (
		failures atomic.Int64
		calls    atomic.Int64
		wg       sync.WaitGroup
		stop     = make(chan struct{})
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := client.CreateUser(context.Background(), connect.NewRequest(&identityv1.CreateUserRequest{Email: "a@example.com"}))
				calls.Add(1)
				if err != nil {
					failures.Add(1)
					t.Logf("call failed: %v", err)
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	first.stop()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	assert.Zero(t, failures.Load(), "%d of %d calls failed while an instance stopped", failures.Load(), calls.Load())
	assert.Greater(t, calls.Load(), int64(50))
}

func TestFactoryRetriesARefusedConnection(t *testing.T) {
	t.Parallel()
	consul := kerneltest.StartConsul(t)
	reg := newRegistry(t, consul)
	a := newAccess(t)
	live := startInstance(t, reg, a, "live")

	// A dead instance Consul still believes healthy: registered with a check
	// that passes, at a port that refuses connections.
	_, port, err := net.SplitHostPort(kerneltest.RefusingAddr(t))
	require.NoError(t, err)
	deadPort, err := strconv.Atoi(port)
	require.NoError(t, err)
	require.NoError(t, reg.Client().Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "identitysvc-dead", Name: "identitysvc", Address: "127.0.0.1", Port: deadPort,
		Check: &api.AgentServiceCheck{HTTP: "http://" + live.addr + "/readyz", Interval: "1s"}, // answers 200
	}))

	factory := rpc.NewClientFactory(reg)
	t.Cleanup(factory.Close)
	client := rpc.NewClient(factory, "identitysvc", identityv1connect.NewIdentityServiceClient)
	require.Eventually(t, func() bool {
		r, _, err := reg.Client().Health().Service("identitysvc", "", true, nil)
		return err == nil && len(r) == 2
	}, 10*time.Second, 20*time.Millisecond)

	for i := range 50 {
		_, err := client.CreateUser(t.Context(), connect.NewRequest(&identityv1.CreateUserRequest{Email: "a@example.com"}))
		require.NoError(t, err, "call %d", i)
	}
	assert.Equal(t, int64(50), live.stub.calls.Load())

	// A request without a body, such as the JWKS fetch, is retried too.
	httpClient := factory.HTTPClient()
	for i := range 20 {
		resp, err := httpClient.Get("http://identitysvc/healthz")
		require.NoError(t, err, "GET %d", i)
		_ = resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode)
	}
}

// TestFactoryFollowsNoRedirect: a redirect from a service is answered as
// it is; following it would start a resolver for whatever host it names,
// kept for good. A closed factory starts none either.
func TestFactoryFollowsNoRedirect(t *testing.T) {
	t.Parallel()
	consul := kerneltest.StartConsul(t)
	reg := newRegistry(t, consul)
	srv := httptest.NewUnstartedServer(http.RedirectHandler("http://elsewhere/keys", http.StatusFound))
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetUnencryptedHTTP2(true) // as services speak to one another
	srv.Start()
	t.Cleanup(srv.Close)
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	require.NoError(t, err)
	p, err := strconv.Atoi(port)
	require.NoError(t, err)
	require.NoError(t, reg.Client().Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "redirector-1", Name: "redirector", Address: "127.0.0.1", Port: p,
		Check: &api.AgentServiceCheck{TTL: "1m", Status: api.HealthPassing},
	}))
	factory := rpc.NewClientFactory(reg)
	resp, err := factory.HTTPClient().Get("http://redirector/jwks")
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusFound, resp.StatusCode)

	factory.Close()
	_, err = factory.HTTPClient().Get("http://redirector/jwks")
	require.Error(t, err, "a closed factory resolved again")
}

func TestFactoryWithoutInstancesIsUnavailable(t *testing.T) {
	t.Parallel()
	consul := kerneltest.StartConsul(t)
	factory := rpc.NewClientFactory(newRegistry(t, consul))
	t.Cleanup(factory.Close)
	client := rpc.NewClient(factory, "nothing-here", identityv1connect.NewIdentityServiceClient)
	_, err := client.CreateUser(t.Context(), connect.NewRequest(&identityv1.CreateUserRequest{}))
	require.Error(t, err)
	assert.Equal(t, connect.CodeUnavailable, connect.CodeOf(err))
}

func TestFactoryCall(t *testing.T) {
	t.Parallel()
	reg, _, first, second := twoInstances(t)
	factory := rpc.NewClientFactory(reg, rpc.WithEjection(1, time.Minute))
	t.Cleanup(factory.Close)

	// Calls reach both instances in time.
	seen := map[string]bool{}
	require.Eventually(t, func() bool {
		_ = factory.Call(t.Context(), "identitysvc", func(addr string) (bool, bool, error) {
			seen[addr] = true
			return true, false, nil
		})
		return len(seen) == 2
	}, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, map[string]bool{first.addr: true, second.addr: true}, seen)

	// A call that never left moves to the other instance, once.
	var tried []string
	err := factory.Call(t.Context(), "identitysvc", func(addr string) (bool, bool, error) {
		tried = append(tried, addr)
		if len(tried) == 1 {
			return true, true, errors.New("not sent")
		}
		return true, false, nil
	})
	require.NoError(t, err)
	require.Len(t, tried, 2)
	assert.NotEqual(t, tried[0], tried[1])

	// A call that may have run is not sent again; its error is returned.
	tried = nil
	err = factory.Call(t.Context(), "identitysvc", func(addr string) (bool, bool, error) {
		tried = append(tried, addr)
		return true, false, errors.New("reset after sending")
	})
	assert.ErrorContains(t, err, "reset after sending")
	assert.Len(t, tried, 1)

	// A call that never leaves tries each instance once, then fails.
	tried = nil
	err = factory.Call(t.Context(), "identitysvc", func(addr string) (bool, bool, error) {
		tried = append(tried, addr)
		return true, true, errors.New("not sent")
	})
	assert.ErrorContains(t, err, "not sent")
	assert.ElementsMatch(t, []string{first.addr, second.addr}, tried, "two instances, each tried once")

	// An instance reported unhealthy is ejected: the other takes the calls.
	var failed string
	require.NoError(t, factory.Call(t.Context(), "identitysvc", func(addr string) (bool, bool, error) {
		failed = addr
		return false, false, nil
	}))
	for range 10 {
		require.NoError(t, factory.Call(t.Context(), "identitysvc", func(addr string) (bool, bool, error) {
			assert.NotEqual(t, failed, addr, "the ejected instance is not picked")
			return true, false, nil
		}))
	}
}
