package rpc_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/authn/authntest"
	"portcullis.dev/kernel/kerneltest"
	"portcullis.dev/kernel/registry"
	"portcullis.dev/kernel/rpc"
	identityv1 "portcullis.dev/proto/identity/v1"
	"portcullis.dev/proto/identity/v1/identityv1connect"
)

// startServer runs srv with stub mounted on a free port until the test
// ends, and returns its base URL.
func startServer(t *testing.T, srv *rpc.Server, stub *identityStub) string {
	t.Helper()
	srv.Handle(identityv1connect.NewIdentityServiceHandler(stub, srv.HandlerOptions()...))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	url := "http://" + ln.Addr().String()
	require.Eventually(t, func() bool {
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 5*time.Second, 10*time.Millisecond)
	return url
}

func TestAccessPolicy(t *testing.T) {
	t.Parallel()
	a := newAccess(t)
	srv := rpc.NewServer("identitysvc", "test", rpc.Config{DeregisterDelay: time.Millisecond}, rpc.WithAccessPolicy(a.policy()))
	url := startServer(t, srv, &identityStub{})
	client := identityv1connect.NewIdentityServiceClient(http.DefaultClient, url)

	iss := a.issuer
	user := iss.Issue(authntest.WithSubject("alice"))
	admin := iss.Issue(authntest.WithSubject("admin"))
	serviceToken, err := a.tokens.Token("identitysvc")
	require.NoError(t, err)
	otherKid := authntest.NewServer(t).Issue(authntest.WithSubject("alice")) // signed by a key this verifier never saw

	type call func(ctx context.Context, header func(http.Header)) (string, error)
	createUser := func(ctx context.Context, h func(http.Header)) (string, error) {
		req := connect.NewRequest(&identityv1.CreateUserRequest{Email: "a@example.com"})
		h(req.Header())
		resp, err := client.CreateUser(ctx, req)
		if err != nil {
			return "", err
		}
		return resp.Msg.GetUser().GetId(), nil
	}
	getMe := func(ctx context.Context, h func(http.Header)) (string, error) {
		req := connect.NewRequest(&identityv1.GetMeRequest{})
		h(req.Header())
		resp, err := client.GetMe(ctx, req)
		if err != nil {
			return "", err
		}
		return resp.Msg.GetUser().GetId(), nil
	}
	getUser := func(userID string) call {
		return func(ctx context.Context, h func(http.Header)) (string, error) {
			req := connect.NewRequest(&identityv1.GetUserRequest{UserId: userID})
			h(req.Header())
			resp, err := client.GetUser(ctx, req)
			if err != nil {
				return "", err
			}
			return resp.Msg.GetUser().GetId(), nil
		}
	}
	verifyCredentials := func(ctx context.Context, h func(http.Header)) (string, error) {
		req := connect.NewRequest(&identityv1.VerifyCredentialsRequest{Email: "a@example.com", Password: "x"})
		h(req.Header())
		resp, err := client.VerifyCredentials(ctx, req)
		if err != nil {
			return "", err
		}
		return resp.Msg.GetUserId(), nil
	}
	bearer := func(token string) func(http.Header) { return withHeader("Authorization", "Bearer "+token) }
	service := func(token string) func(http.Header) { return withHeader(rpc.ServiceTokenHeader, token) }
	none := func(http.Header) {}

	tests := []struct {
		name     string
		call     call
		header   func(http.Header)
		wantCode connect.Code // 0: success
		wantWho  string
	}{
		{"public without token", createUser, none, 0, "anonymous"},
		{"public names a caller with a valid token", createUser, bearer(user), 0, "user:alice"},
		{"public ignores a bad token", createUser, bearer("garbage"), 0, "anonymous"},

		{"authenticated with valid token", getMe, bearer(user), 0, "user:alice"},
		{"authenticated without token", getMe, none, connect.CodeUnauthenticated, ""},
		{"authenticated, wrong scheme", getMe, withHeader("Authorization", "Basic "+user), connect.CodeUnauthenticated, ""},
		{"authenticated, expired", getMe, bearer(iss.Issue(authntest.WithExpiry(time.Now().Add(-time.Hour)))), connect.CodeUnauthenticated, ""},
		{"authenticated, wrong audience", getMe, bearer(iss.Issue(authntest.WithAudience("someone-else"))), connect.CodeUnauthenticated, ""},
		{"authenticated, alg none", getMe, bearer(iss.Issue(authntest.WithAlgNone())), connect.CodeUnauthenticated, ""},
		{"authenticated, HS256 with the public key", getMe, bearer(iss.Issue(authntest.WithHS256([]byte(iss.KeyID())))), connect.CodeUnauthenticated, ""},
		{"authenticated, unknown kid", getMe, bearer(otherKid), connect.CodeUnauthenticated, ""},
		{"authenticated, service token is not an access token", getMe, bearer(serviceToken), connect.CodeUnauthenticated, ""},

		{"permission: self-service needs none", getUser(""), bearer(user), 0, "user:alice"},
		{"permission: own id needs none", getUser("alice"), bearer(user), 0, "user:alice"},
		{"permission: someone else without it", getUser("bob"), bearer(user), connect.CodePermissionDenied, ""},
		{"permission: someone else with it", getUser("bob"), bearer(admin), 0, "user:admin"},
		{"permission: no token", getUser("bob"), none, connect.CodeUnauthenticated, ""},

		{"internal with service token", verifyCredentials, service(serviceToken), 0, "service:authsvc"},
		{"internal without token", verifyCredentials, none, connect.CodeUnauthenticated, ""},
		{"internal with a user's access token", verifyCredentials, bearer(admin), connect.CodeUnauthenticated, ""},
		{"internal with an access token as service token", verifyCredentials, service(admin), connect.CodeUnauthenticated, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			who, err := tt.call(t.Context(), tt.header)
			if tt.wantCode == 0 {
				require.NoError(t, err)
				assert.Equal(t, tt.wantWho, who)
				return
			}
			require.Error(t, err)
			assert.Equal(t, tt.wantCode, connect.CodeOf(err), "error: %v", err)
			assert.NotContains(t, err.Error(), "kid", "the refusal leaks detail")
		})
	}
}

func TestProceduresWithoutPolicyAreRefused(t *testing.T) {
	t.Parallel()
	srv := rpc.NewServer("identitysvc", "test", rpc.Config{DeregisterDelay: time.Millisecond})
	url := startServer(t, srv, &identityStub{})
	client := identityv1connect.NewIdentityServiceClient(http.DefaultClient, url)
	_, err := client.GetMe(t.Context(), connect.NewRequest(&identityv1.GetMeRequest{}))
	assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err))
	_, err = client.VerifyCredentials(t.Context(), connect.NewRequest(&identityv1.VerifyCredentialsRequest{}))
	assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err))
}

// TestPanicOutsideTheHandler: connect.WithRecover covers the handler
// only. A panic in an interceptor (an Authorizer's, the server's own) is
// Internal too, and the call is counted and leaves the in-flight gauge.
func TestPanicOutsideTheHandler(t *testing.T) {
	t.Parallel()
	a := newAccess(t)
	var logs syncBuffer
	panicky := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if req.Header().Get("X-Panic") != "" {
				panic("secret internals")
			}
			return next(ctx, req)
		}
	})
	srv := rpc.NewServer("identitysvc", "test", rpc.Config{DeregisterDelay: time.Millisecond},
		rpc.WithAccessPolicy(a.policy()), rpc.WithLogger(jsonLogger(&logs)), rpc.WithInterceptors(panicky))
	url := startServer(t, srv, &identityStub{})
	client := identityv1connect.NewIdentityServiceClient(http.DefaultClient, url)

	req := connect.NewRequest(&identityv1.CreateUserRequest{Email: "a@example.com"})
	req.Header().Set("X-Panic", "1")
	_, err := client.CreateUser(t.Context(), req)
	assert.Equal(t, connect.CodeInternal, connect.CodeOf(err))
	assert.NotContains(t, err.Error(), "secret internals")
	assert.Contains(t, logs.String(), "secret internals", "the panic is not logged")
	_, err = client.CreateUser(t.Context(), connect.NewRequest(&identityv1.CreateUserRequest{Email: "a@example.com"}))
	require.NoError(t, err, "the server survived")

	resp, err := http.Get(url + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	assert.Contains(t, string(body), `portcullis_rpc_requests_total{code="internal",procedure="/portcullis.identity.v1.IdentityService/CreateUser",service="identitysvc"} 1`)
	assert.Contains(t, string(body), `portcullis_rpc_in_flight{procedure="/portcullis.identity.v1.IdentityService/CreateUser",service="identitysvc"} 0`)
}

func TestRequestIDRecoveryAndStandardEndpoints(t *testing.T) {
	t.Parallel()
	a := newAccess(t)
	var logs syncBuffer
	srv := rpc.NewServer("identitysvc", "test", rpc.Config{DeregisterDelay: time.Millisecond},
		rpc.WithAccessPolicy(a.policy()), rpc.WithLogger(jsonLogger(&logs)))
	url := startServer(t, srv, &identityStub{})
	client := identityv1connect.NewIdentityServiceClient(http.DefaultClient, url)

	t.Run("request id is kept and returned", func(t *testing.T) {
		req := connect.NewRequest(&identityv1.CreateUserRequest{Email: "a@example.com"})
		req.Header().Set(rpc.RequestIDHeader, "req-123")
		resp, err := client.CreateUser(t.Context(), req)
		require.NoError(t, err)
		assert.Equal(t, "req-123", resp.Header().Get(rpc.RequestIDHeader))
		assert.Eventually(t, func() bool { return strings.Contains(logs.String(), `"request_id":"req-123"`) }, time.Second, 10*time.Millisecond)
	})
	t.Run("request id is made up when missing or unsafe", func(t *testing.T) {
		req := connect.NewRequest(&identityv1.CreateUserRequest{Email: "a@example.com"})
		req.Header().Set(rpc.RequestIDHeader, "bad\"id")
		resp, err := client.CreateUser(t.Context(), req)
		require.NoError(t, err)
		id := resp.Header().Get(rpc.RequestIDHeader)
		assert.Len(t, id, 32)
	})
	t.Run("panic becomes Internal without detail", func(t *testing.T) {
		_, err := client.CreateUser(t.Context(), connect.NewRequest(&identityv1.CreateUserRequest{Email: "panic@example.com"}))
		require.Error(t, err)
		assert.Equal(t, connect.CodeInternal, connect.CodeOf(err))
		assert.NotContains(t, err.Error(), "secret internals")
		assert.Contains(t, logs.String(), "secret internals", "the panic is not logged")
		// The server survived.
		_, err = client.CreateUser(t.Context(), connect.NewRequest(&identityv1.CreateUserRequest{Email: "a@example.com"}))
		require.NoError(t, err)
	})
	t.Run("healthz readyz metrics", func(t *testing.T) {
		for path, want := range map[string]string{
			"/healthz": "ok",
			"/readyz":  "ok",
			"/metrics": `portcullis_rpc_requests_total{code="internal",procedure="/portcullis.identity.v1.IdentityService/CreateUser",service="identitysvc"} 1`,
		} {
			resp, err := http.Get(url + path)
			require.NoError(t, err)
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			assert.Equal(t, http.StatusOK, resp.StatusCode, path)
			assert.Contains(t, string(body), want, path)
		}
	})
	t.Run("grpc health", func(t *testing.T) {
		resp, err := http.Post(url+"/grpc.health.v1.Health/Check", "application/json", strings.NewReader(`{"service":"portcullis.identity.v1.IdentityService"}`))
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		assert.Contains(t, string(body), "SERVING")
	})
}

func TestReadinessChecks(t *testing.T) {
	t.Parallel()
	var dbDown atomic.Bool
	srv := rpc.NewServer("identitysvc", "test", rpc.Config{DeregisterDelay: time.Millisecond},
		rpc.WithReadiness("database", func(context.Context) error {
			if dbDown.Load() {
				return context.DeadlineExceeded
			}
			return nil
		}))
	url := startServer(t, srv, &identityStub{})
	grpcHealth := func(service string) string {
		resp, err := http.Post(url+"/grpc.health.v1.Health/Check", "application/json", strings.NewReader(`{"service":"`+service+`"}`))
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		return string(body)
	}
	assert.Contains(t, grpcHealth("portcullis.identity.v1.IdentityService"), `"SERVING_STATUS_SERVING"`)

	// A verdict answers probes for up to a second.
	dbDown.Store(true)
	var body []byte
	require.Eventually(t, func() bool {
		resp, err := http.Get(url + "/readyz")
		require.NoError(t, err)
		body, _ = io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	}, 5*time.Second, 50*time.Millisecond)
	assert.Contains(t, string(body), "database")
	// gRPC health probes see what /readyz says.
	for _, service := range []string{"", "portcullis.identity.v1.IdentityService"} {
		assert.Contains(t, grpcHealth(service), `"SERVING_STATUS_NOT_SERVING"`, service)
	}
	assert.NotContains(t, grpcHealth("no.such.Service"), "SERVING_STATUS", "an unknown service is NotFound")

	dbDown.Store(false)
	require.Eventually(t, func() bool { return strings.Contains(grpcHealth(""), `"SERVING_STATUS_SERVING"`) }, 5*time.Second, 50*time.Millisecond)
}

func TestBackgroundTasksLiveAsLongAsTheServer(t *testing.T) {
	t.Parallel()
	started, stopped := make(chan struct{}), make(chan struct{})
	srv := rpc.NewServer("identitysvc", "test", rpc.Config{DeregisterDelay: time.Millisecond},
		rpc.WithBackground("relay", func(ctx context.Context) error {
			close(started)
			<-ctx.Done()
			close(stopped)
			return nil
		}),
		rpc.WithReadinessDetail("outbox_backlog", func() string { return "42" }))
	srv.Handle(identityv1connect.NewIdentityServiceHandler(&identityStub{}, srv.HandlerOptions()...))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()

	<-started
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + ln.Addr().String() + "/readyz")
		if err != nil {
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK && strings.Contains(string(body), "outbox_backlog: 42")
	}, 5*time.Second, 10*time.Millisecond)
	select {
	case <-stopped:
		t.Fatal("the background task stopped while the server serves")
	default:
	}
	cancel()
	require.NoError(t, <-done)
	select {
	case <-stopped:
	default:
		t.Fatal("Run returned before the background task stopped")
	}
}

func TestConfigRefusesAWildcardWithoutAnAdvertisedAddress(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr, advertise string
		ok              bool
	}{
		{"", "", true}, // 127.0.0.1:0
		{"127.0.0.1:0", "", true},
		{"10.0.0.7:8080", "", true},
		{"0.0.0.0:8080", "", false},
		{":8080", "", false},
		{"[::]:8080", "", false},
		{"0.0.0.0:8080", "10.0.0.7", true},
		{"0.0.0.0:8080", "0.0.0.0", false},
		{"0.0.0.0:8080", "::", false},
		{"8080", "", false},
	}
	for _, tt := range tests {
		err := rpc.Config{Addr: tt.addr, AdvertiseAddr: tt.advertise}.Validate()
		if tt.ok {
			assert.NoError(t, err, "%q advertising %q", tt.addr, tt.advertise)
		} else {
			assert.Error(t, err, "%q advertising %q", tt.addr, tt.advertise)
		}
	}
}

// TestServesBeforeConsulAnswers: a service started before its Consul agent
// (a host's boot, a Compose file) serves, and registers once the agent
// answers, rather than exiting until then.
func TestServesBeforeConsulAnswers(t *testing.T) {
	t.Parallel()
	consul := kerneltest.StartConsul(t)
	consul.Stop()
	var logs kerneltest.Buffer
	reg, err := registry.New(registry.Config{Addr: consul.Addr(), CheckInterval: time.Second})
	require.NoError(t, err)
	srv := rpc.NewServer("earlysvc", "test", rpc.Config{DeregisterDelay: time.Millisecond},
		rpc.WithRegistry(reg), rpc.WithLogger(jsonLogger(&logs)), rpc.WithAccessPolicy(&rpc.AccessPolicy{}))
	startServer(t, srv, &identityStub{}) // ready, though unregistered
	assert.Contains(t, logs.String(), "serving unregistered until the Consul agent answers")

	consul.Restart()
	require.Eventually(t, func() bool {
		entries, _, err := reg.Client().Health().Service("earlysvc", "", true, nil)
		return err == nil && len(entries) == 1
	}, 10*time.Second, 20*time.Millisecond, "registered and passing once the agent answers; logs:\n%s", logs.String())
}

// TestShutdownTakesOneTimeout: the drain of a call that never ends, a
// background task slow to stop and a closer that waits share one
// ShutdownTimeout, so that an orchestrator's grace period can be set from
// it; each had a timeout of its own, or none, before.
func TestShutdownTakesOneTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 500 * time.Millisecond
	release := make(chan struct{})
	defer close(release)
	srv := rpc.NewServer("slowstop", "test", rpc.Config{ShutdownTimeout: timeout}, rpc.WithAccessPolicy(&rpc.AccessPolicy{}),
		rpc.WithBackground("slow to stop", func(ctx context.Context) error {
			<-ctx.Done()
			select { // a task that takes its time to finish
			case <-release:
			case <-time.After(10 * time.Second):
			}
			return nil
		}),
		rpc.WithCloser(func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }))
	started := make(chan struct{})
	srv.HandleHTTP("GET /hang", http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		close(started)
		<-release // ignores its request's end
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	go func() {
		if resp, err := http.Get("http://" + ln.Addr().String() + "/hang"); err == nil {
			_ = resp.Body.Close()
		}
	}()
	<-started

	stopping := time.Now()
	cancel()
	select {
	case err := <-done:
		assert.Error(t, err, "what did not stop in time is reported")
		assert.Less(t, time.Since(stopping), 2*timeout, "shutdown took more than its timeout")
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown never ended")
	}
}

// TestInternalErrorsAreLoggedWithTheirCause: a handler's rpc.Internal
// answers only "internal error", and its cause is logged at ERROR in the
// call's line, with the request ID, for whoever is paged.
func TestInternalErrorsAreLoggedWithTheirCause(t *testing.T) {
	t.Parallel()
	a := newAccess(t)
	var logs syncBuffer
	srv := rpc.NewServer("identitysvc", "test", rpc.Config{DeregisterDelay: time.Millisecond},
		rpc.WithAccessPolicy(a.policy()), rpc.WithLogger(jsonLogger(&logs)))
	client := identityv1connect.NewIdentityServiceClient(http.DefaultClient, startServer(t, srv, &identityStub{}))
	req := connect.NewRequest(&identityv1.CreateUserRequest{Email: "internal@example.com"})
	req.Header().Set(rpc.RequestIDHeader, "req-internal")
	_, err := client.CreateUser(t.Context(), req)
	require.Error(t, err)
	assert.Equal(t, connect.CodeInternal, connect.CodeOf(err))
	assert.NotContains(t, err.Error(), "10.0.0.5", "the cause reached the caller")
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "10.0.0.5") }, time.Second, 10*time.Millisecond)
	for line := range strings.Lines(logs.String()) {
		if strings.Contains(line, "10.0.0.5") {
			assert.Contains(t, line, `"level":"ERROR"`)
			assert.Contains(t, line, `"request_id":"req-internal"`)
		}
	}
}

// TestShutdownWithoutConsulEndsWell: a server stopped while its Consul
// agent does not answer drains, says it could not deregister, and stops
// without error: the agent's check removes the instance in time.
func TestShutdownWithoutConsulEndsWell(t *testing.T) {
	t.Parallel()
	consul := kerneltest.StartConsul(t)
	var logs kerneltest.Buffer
	reg, err := registry.New(registry.Config{Addr: consul.Addr(), CheckInterval: time.Second})
	require.NoError(t, err)
	srv := rpc.NewServer("leavingsvc", "test", rpc.Config{DeregisterDelay: time.Millisecond},
		rpc.WithRegistry(reg), rpc.WithLogger(jsonLogger(&logs)), rpc.WithAccessPolicy(&rpc.AccessPolicy{}))
	srv.Handle(identityv1connect.NewIdentityServiceHandler(&identityStub{}, srv.HandlerOptions()...))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	require.Eventually(t, func() bool {
		entries, _, err := reg.Client().Health().Service("leavingsvc", "", true, nil)
		return err == nil && len(entries) == 1
	}, 10*time.Second, 20*time.Millisecond, "never registered")

	consul.Stop()
	cancel()
	select {
	case err := <-done:
		assert.NoError(t, err, "a drain that went well is reported failed")
	case <-time.After(30 * time.Second):
		t.Fatal("shutdown never ended")
	}
	assert.Contains(t, logs.String(), "could not deregister from Consul")
	assert.Contains(t, logs.String(), `"msg":"stopped"`)
}
