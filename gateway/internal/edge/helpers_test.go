package edge_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/authn"
	"portcullis.dev/kernel/authn/authntest"
	"portcullis.dev/kernel/kerneltest"
	"portcullis.dev/kernel/registry"
	"portcullis.dev/kernel/rpc"
	auditv1 "portcullis.dev/proto/audit/v1"
	"portcullis.dev/proto/audit/v1/auditv1connect"
	identityv1 "portcullis.dev/proto/identity/v1"
	"portcullis.dev/proto/identity/v1/identityv1connect"

	"portcullis.dev/gateway/config"
	"portcullis.dev/gateway/internal/edge"
)

// env is one test's platform: a real Consul, a stand-in Auth service
// publishing its JWKS (registered in Consul as authsvc, where the gateway's
// verifier finds it), and the services and gateways the test starts.
type env struct {
	consul *kerneltest.Consul
	reg    *registry.Registry
	auth   *authntest.Server
	logs   *kerneltest.Buffer
	// identity is the last Identity instance started.
	identity *instance
}

func newEnv(t testing.TB) *env {
	t.Helper()
	consul := kerneltest.StartConsul(t)
	reg, err := registry.New(registry.Config{Addr: consul.Addr(), CheckInterval: registry.MinCheckInterval})
	require.NoError(t, err)
	e := &env{consul: consul, reg: reg, auth: authntest.NewServer(t), logs: &kerneltest.Buffer{}}
	// The stand-in Auth service's JWKS, served by a kernel rpc.Server (h2c,
	// as the kernel's transport speaks) registered in Consul as authsvc.
	u, err := url.Parse(e.auth.URL())
	require.NoError(t, err)
	u.Path = ""
	jwks := rpc.NewServer("authsvc", "test", rpc.Config{DeregisterDelay: time.Millisecond},
		rpc.WithRegistry(reg), rpc.WithAccessPolicy(&rpc.AccessPolicy{}))
	jwks.HandleHTTP("GET "+authntest.JWKSPath, httputil.NewSingleHostReverseProxy(u))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- jwks.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	authsvc := reg.Resolver("authsvc")
	t.Cleanup(authsvc.Close)
	require.Eventually(t, func() bool { return len(authsvc.Instances()) > 0 }, 15*time.Second, 10*time.Millisecond,
		"the JWKS server turns healthy in Consul")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gateway logs:\n%s", e.logs.String())
		}
	})
	return e
}

// config returns a gateway configuration for the env: defaults, this
// Consul, tokens of the stand-in Auth service, rate limits off.
func (e *env) config(t testing.TB) config.Config {
	cfg, err := config.Defaults()
	require.NoError(t, err)
	cfg.Registry = registry.Config{Addr: e.consul.Addr()}
	cfg.Tokens = e.auth.Config()
	cfg.Tokens.JWKSURL = "http://authsvc" + authntest.JWKSPath
	cfg.RateLimit.Enabled = false
	// net/http waits up to 5s for a connection a client dialled but never
	// used (StateNew) before it counts as idle; allow for that.
	cfg.Gateway.ShutdownTimeout = 10 * time.Second
	return cfg
}

type gateway struct {
	*edge.Gateway
	url string
}

// startGateway serves a gateway for cfg until the test ends and waits
// until it is ready.
func (e *env) startGateway(t testing.TB, cfg config.Config, opts ...edge.Option) *gateway {
	t.Helper()
	reg, err := registry.New(cfg.Registry)
	require.NoError(t, err)
	logger := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	g, err := edge.New(cfg, reg, append([]edge.Option{edge.WithLogger(logger)}, opts...)...)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-done)
		g.Close()
	})
	require.Eventually(t, g.Ready, 10*time.Second, 10*time.Millisecond)
	return &gateway{Gateway: g, url: "http://" + ln.Addr().String()}
}

// killableListener can drop every connection at once, as a crashed
// process does, without the graceful shutdown of rpc.Server.
type killableListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *killableListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *killableListener) kill() {
	_ = l.Listener.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		_ = c.Close()
	}
}

type instance struct {
	ln       *killableListener
	addr     string
	ready    atomic.Bool
	identity *identityServer
	// bearers holds every Authorization header that reached the instance,
	// so a test can tell a request the gateway refused from one it passed
	// on, whatever other tests send to the same instance meanwhile.
	bearers sync.Map
}

// startIdentity runs an Identity service instance of the real contract,
// registered in Consul as identitysvc, enforcing access like the real one.
// It reports in its answers what reached it (see identityServer).
func (e *env) startIdentity(t testing.TB, name string) *instance {
	t.Helper()
	return e.startIdentityServer(t, &identityServer{name: name, report: true})
}

func (e *env) startIdentityServer(t testing.TB, srv *identityServer) *instance {
	t.Helper()
	inst := &instance{identity: srv}
	inst.ready.Store(true)
	inst.ln = e.serve(t, "identitysvc", inst, func(srv *rpc.Server) {
		path, h := identityv1connect.NewIdentityServiceHandler(inst.identity, srv.HandlerOptions()...)
		srv.Handle(path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if v, ok := r.Header["Authorization"]; ok {
				inst.bearers.Store(strings.Join(v, ","), true)
			}
			h.ServeHTTP(w, r)
		}))
	})
	inst.addr = inst.ln.Addr().String()
	e.identity = inst
	return inst
}

// startAudit runs an Audit service instance registered as auditsvc.
func (e *env) startAudit(t testing.TB, audit *auditServer) {
	t.Helper()
	e.serve(t, "auditsvc", &instance{}, func(srv *rpc.Server) {
		srv.Handle(auditv1connect.NewAuditServiceHandler(audit, srv.HandlerOptions()...))
	})
}

func (e *env) serve(t testing.TB, service string, inst *instance, mount func(*rpc.Server)) *killableListener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	kl := &killableListener{Listener: ln}
	inst.ready.Store(true)
	srv := rpc.NewServer(service, "test", rpc.Config{DeregisterDelay: time.Millisecond, ShutdownTimeout: 2 * time.Second},
		rpc.WithRegistry(e.reg),
		rpc.WithAccessPolicy(&rpc.AccessPolicy{Users: e.auth.NewVerifier(), Authorizer: allowAll{}}),
		rpc.WithReadiness("test", func(context.Context) error {
			if !inst.ready.Load() {
				return errors.New("made unready by the test")
			}
			return nil
		}))
	mount(srv)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, kl) }()
	t.Cleanup(func() { cancel(); <-done })
	return kl
}

type allowAll struct{}

func (allowAll) Check(context.Context, string, string) (bool, error) { return true, nil }

// identityServer answers a few Identity procedures. With report set, a
// CreateUser answer carries in its headers what reached the instance, and a
// trailer, so tests see what the gateway forwarded; without, it is what the
// real service sends, for benchmarks. Seven extra headers, two of them
// different on every call, would make every hop's header compression
// (HPACK) churn, and measure that rather than the call.
type identityServer struct {
	identityv1connect.UnimplementedIdentityServiceHandler
	name   string
	report bool
	// hang, when set, holds CreateUser until it is closed, whatever the
	// call's deadline: a deadlocked handler.
	hang chan struct{}
}

func (s *identityServer) CreateUser(ctx context.Context, req *connect.Request[identityv1.CreateUserRequest]) (*connect.Response[identityv1.CreateUserResponse], error) {
	if s.hang != nil {
		<-s.hang
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("released"))
	}
	res := connect.NewResponse(&identityv1.CreateUserResponse{User: &identityv1.User{
		Id: s.name, Email: req.Msg.GetEmail(), DisplayName: req.Msg.GetDisplayName(),
	}})
	if !s.report {
		return res, nil
	}
	for _, h := range []string{rpc.ServiceTokenHeader, rpc.RequestIDHeader, "X-Forwarded-For", "Traceparent", "Tracestate", "Authorization", "X-Real-Ip"} {
		res.Header().Set("X-Seen-"+h, req.Header().Get(h))
	}
	if dl, ok := ctx.Deadline(); ok {
		res.Header().Set("X-Seen-Deadline-Ms", strconv.FormatInt(time.Until(dl).Milliseconds(), 10))
	}
	res.Trailer().Set("X-Test-Trailer", "from-"+s.name)
	return res, nil
}

func (s *identityServer) GetMe(ctx context.Context, _ *connect.Request[identityv1.GetMeRequest]) (*connect.Response[identityv1.GetMeResponse], error) {
	p, _ := authn.FromContext(ctx)
	return connect.NewResponse(&identityv1.GetMeResponse{User: &identityv1.User{Id: p.Subject, DisplayName: s.name}}), nil
}

func (s *identityServer) GetUser(context.Context, *connect.Request[identityv1.GetUserRequest]) (*connect.Response[identityv1.GetUserResponse], error) {
	return nil, connect.NewError(connect.CodeNotFound, errors.New("no such user"))
}

// auditServer streams events for ExportEvents: the first at once, the rest
// when release is closed, so a test can see the first one arrive while
// the stream is still open.
type auditServer struct {
	auditv1connect.UnimplementedAuditServiceHandler
	release chan struct{}
	events  int
}

func (s *auditServer) ExportEvents(ctx context.Context, _ *connect.Request[auditv1.ExportEventsRequest], stream *connect.ServerStream[auditv1.ExportEventsResponse]) error {
	for i := range s.events {
		if i == 1 {
			select {
			case <-s.release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := stream.Send(&auditv1.ExportEventsResponse{Event: &auditv1.Event{Sequence: int64(i + 1)}}); err != nil {
			return err
		}
	}
	return nil
}

// Clients of each protocol.

func h2cClient() *http.Client {
	t := &http.Transport{Protocols: new(http.Protocols)}
	t.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: t}
}

// client is an HTTP client that takes one of the gateway's two data
// paths: net/http for HTTP/1.1, h2proxy for HTTP/2 with prior knowledge.
type client struct {
	name string
	c    *http.Client
}

func bothPaths() []client {
	return []client{{"http1", http.DefaultClient}, {"h2c", h2cClient()}}
}

type protocol struct {
	name   string
	client *http.Client
	opts   []connect.ClientOption
}

func protocols() []protocol {
	h2c := h2cClient()
	return []protocol{
		{"connect+json/http1", http.DefaultClient, []connect.ClientOption{connect.WithProtoJSON()}},
		{"connect+proto/h2c", h2c, nil},
		{"grpc/h2c", h2c, []connect.ClientOption{connect.WithGRPC()}},
		{"grpc-web/http1", http.DefaultClient, []connect.ClientOption{connect.WithGRPCWeb()}},
	}
}

func bearerHeader(token string) func(http.Header) {
	return func(h http.Header) { h.Set("Authorization", "Bearer "+token) }
}
