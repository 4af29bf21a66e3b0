package rpc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/prometheus/client_golang/prometheus"

	"portcullis.dev/kernel/logging"
	"portcullis.dev/kernel/registry"
)

// Config is a service's `server:` section.
type Config struct {
	// Addr is the listen address. Port 0 picks a free port, which is then
	// the one registered in Consul. Empty means 127.0.0.1:0.
	Addr string `koanf:"addr"`
	// AdvertiseAddr is the host registered in Consul: empty means the
	// listener's host, and it is required when that is a wildcard
	// (0.0.0.0, ::), which says nothing of where callers reach it.
	AdvertiseAddr string `koanf:"advertise_addr"`
	// ShutdownTimeout bounds shutdown once the instance has left Consul:
	// the drain of in-flight calls, the end of the background tasks and
	// the closers, together, so that an orchestrator's grace period can
	// be set from it. Zero means 20s.
	ShutdownTimeout time.Duration `koanf:"shutdown_timeout" validate:"min=0"`
	// DeregisterDelay is how long the instance keeps serving after leaving
	// Consul, so clients' resolvers drop it before it stops. Zero means
	// 500ms.
	DeregisterDelay time.Duration `koanf:"deregister_delay" validate:"min=0"`
	// MaxRequestBytes caps a request message. Zero means 4 MiB.
	MaxRequestBytes int `koanf:"max_request_bytes" validate:"min=0"`
	// CompressMinBytes is the smallest response message compressed when
	// the caller accepts compression. Zero means 4 KiB: gzip costs more
	// CPU than it saves on a small message on a fast network (most RPCs
	// here are well under a kilobyte).
	CompressMinBytes int `koanf:"compress_min_bytes" validate:"min=0"`
}

// Server serves one service's Connect handlers plus the standard endpoints.
// Create it with [NewServer], add handlers with [Server.Handle], then
// [Server.Run] it.
type Server struct {
	name, version string
	cfg           Config
	logger        *slog.Logger
	registry      *registry.Registry
	policy        *AccessPolicy
	metrics       *metrics
	interceptors  []connect.Interceptor
	readiness     []readinessCheck
	details       []readinessDetail
	background    []backgroundTask
	collectors    []prometheus.Collector
	closers       []func(context.Context) error

	mux      *http.ServeMux
	services []string // fully-qualified Connect services served
	ready    atomic.Bool
	addr     chan net.Addr
	addrOnce sync.Once

	// The last readiness verdict, reused for a second so that frequent
	// probes (gRPC health checks at load-balancer rates) cost no database
	// round trip each.
	verdictMu     sync.Mutex
	verdict       []string
	verdictExpiry time.Time
}

// readinessReuse is how long a readiness verdict answers probes.
const readinessReuse = time.Second

type readinessCheck struct {
	name  string
	check func(context.Context) error
}

type readinessDetail struct {
	name   string
	detail func() string
}

type backgroundTask struct {
	name string
	run  func(context.Context) error
}

// Option configures a [Server].
type Option func(*Server)

// WithLogger sets the logger for the access log and lifecycle events. Nil,
// the default, discards.
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.logger = l } }

// WithRegistry registers the instance in Consul while it runs. Without it,
// the server runs unregistered (tests, a single binary).
func WithRegistry(r *registry.Registry) Option { return func(s *Server) { s.registry = r } }

// WithAccessPolicy enforces the contract's access options on every call.
// Without it every procedure is refused: a service cannot run open by
// mistake.
func WithAccessPolicy(p *AccessPolicy) Option { return func(s *Server) { s.policy = p } }

// WithReadiness adds a check /readyz runs, such as the database's ping.
func WithReadiness(name string, check func(context.Context) error) Option {
	return func(s *Server) { s.readiness = append(s.readiness, readinessCheck{name, check}) }
}

// WithReadinessDetail adds a line "name: detail()" to the /readyz answer,
// without deciding readiness (an outbox backlog, say).
func WithReadinessDetail(name string, detail func() string) Option {
	return func(s *Server) { s.details = append(s.details, readinessDetail{name, detail}) }
}

// WithBackground runs task for as long as the server serves, such as an
// outbox relay. Its context ends after the last call has drained; Run waits
// for it to return before running the closers. A task that fails is logged;
// it does not stop the server.
func WithBackground(name string, task func(context.Context) error) Option {
	return func(s *Server) { s.background = append(s.background, backgroundTask{name, task}) }
}

// WithCollectors adds Prometheus collectors to /metrics.
func WithCollectors(cs ...prometheus.Collector) Option {
	return func(s *Server) { s.collectors = append(s.collectors, cs...) }
}

// WithCloser adds a function Run calls after the last call has drained,
// such as closing the database; closers run in the order they were given.
func WithCloser(close func(context.Context) error) Option {
	return func(s *Server) { s.closers = append(s.closers, close) }
}

// WithInterceptors adds interceptors after the standard ones, closest to
// the handler.
func WithInterceptors(i ...connect.Interceptor) Option {
	return func(s *Server) { s.interceptors = append(s.interceptors, i...) }
}

// NewServer returns a server for the service name at version.
func NewServer(name, version string, cfg Config, opts ...Option) *Server {
	s := &Server{
		name:    name,
		version: version,
		cfg:     cfg,
		mux:     http.NewServeMux(),
		addr:    make(chan net.Addr, 1),
	}
	for _, opt := range opts {
		opt(s)
	}
	s.logger = logging.OrDiscard(s.logger)
	s.cfg.Addr = cmp.Or(s.cfg.Addr, "127.0.0.1:0")
	s.cfg.ShutdownTimeout = cmp.Or(s.cfg.ShutdownTimeout, 20*time.Second)
	s.cfg.DeregisterDelay = cmp.Or(s.cfg.DeregisterDelay, 500*time.Millisecond)
	s.cfg.MaxRequestBytes = cmp.Or(s.cfg.MaxRequestBytes, 4<<20)
	s.cfg.CompressMinBytes = cmp.Or(s.cfg.CompressMinBytes, 4<<10)
	s.metrics = newMetrics(name)
	s.metrics.registry.MustRegister(s.collectors...)
	return s
}

// HandlerOptions are the options every Connect handler of this server must
// be built with: the interceptor chain, recovery, limits and the JSON codec
// (see jsonCodec). Use them as
// `identityv1connect.NewIdentityServiceHandler(svc, srv.HandlerOptions()...)`.
func (s *Server) HandlerOptions() []connect.HandlerOption {
	// The chain, outermost first: the access log and metrics see every
	// outcome, including refusals and panics; recovery covers everything
	// inside them, the enforcer (an Authenticator, an Authorizer) and the
	// server's own interceptors as well as the handler; enforcement runs
	// before any handler.
	return append([]connect.HandlerOption{
		connect.WithInterceptors(&observer{logger: s.logger, metrics: s.metrics}),
		connect.WithRecover(s.recover),
		connect.WithInterceptors(append([]connect.Interceptor{&enforcer{policy: s.policy, logger: s.logger}}, s.interceptors...)...),
		connect.WithReadMaxBytes(s.cfg.MaxRequestBytes),
		connect.WithCompressMinBytes(s.cfg.CompressMinBytes),
	}, jsonCodecs()...)
}

// Handle mounts a Connect handler at path, as returned by a generated
// New...Handler; the service it serves is registered in Consul.
func (s *Server) Handle(path string, h http.Handler) {
	s.mux.Handle(path, h)
	s.services = append(s.services, strings.Trim(path, "/"))
}

// HandleHTTP mounts a plain HTTP handler, such as the JWKS document. It is
// not subject to the access policy.
func (s *Server) HandleHTTP(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Addr returns the address the server listens on, once it does.
func (s *Server) Addr(ctx context.Context) (net.Addr, error) {
	select {
	case a := <-s.addr:
		s.addr <- a
		return a, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Run listens, registers in Consul, and serves until ctx ends (main passes
// a context that SIGINT and SIGTERM end). Then it shuts down gracefully:
// /readyz and gRPC health turn NOT_SERVING, the instance leaves Consul,
// in-flight calls finish, the background tasks end and the closers run,
// all within ShutdownTimeout.
// It returns nil after a clean shutdown.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve is [Server.Run] on a listener the caller opened.
func (s *Server) Serve(ctx context.Context, ln net.Listener) (err error) {
	s.addrOnce.Do(func() { s.addr <- ln.Addr() })
	health := grpchealth.NewStaticChecker(s.services...)
	s.mountStandard(health)

	srv := &http.Server{
		Handler:           withRequestID(s.mux),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		Protocols:         protocols(),
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	instanceID, err := s.register(ctx, ln.Addr())
	switch {
	case errors.Is(err, registry.ErrUnreachable):
		// Consul may come up after the services (a host's boot, a
		// Compose file): keepRegistered registers the instance once its
		// agent answers, rather than the service exiting until then.
		s.logger.WarnContext(ctx, "serving unregistered until the Consul agent answers", slog.Any("err", err))
	case err != nil:
		_ = srv.Close()
		return err
	}
	stopKeeping := s.keepRegistered(instanceID, ln.Addr())
	defer stopKeeping()
	stopBackground := s.startBackground()
	defer func() {
		// Every return below has stopped them already, within the
		// shutdown's deadline; this only makes sure they are told to.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = stopBackground(ctx)
	}()
	s.ready.Store(true)
	s.logger.InfoContext(ctx, "serving", "addr", ln.Addr().String(), "services", s.services, "version", s.version)

	select {
	case err := <-serveErr:
		s.ready.Store(false)
		stopKeeping()
		stopCtx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		defer cancel()
		s.deregister(instanceID)
		return errors.Join(fmt.Errorf("serve %s: %w", ln.Addr(), err), stopBackground(stopCtx), s.close(stopCtx))
	case <-ctx.Done():
	}
	stopKeeping() // before deregistering, or it would register the instance again
	return s.shutdown(srv, health, instanceID, serveErr, stopBackground)
}

// keepRegistered registers the instance again whenever Consul forgets it,
// until the returned function is called; calling that again does nothing.
func (s *Server) keepRegistered(id string, addr net.Addr) func() {
	if s.registry == nil || id == "" {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.registry.KeepRegistered(ctx, id, s.instance(addr), func(ctx context.Context) bool {
			return s.ready.Load() && len(s.failedReadiness(ctx)) == 0
		})
	}()
	var once sync.Once
	return func() { once.Do(func() { cancel(); <-done }) }
}

// startBackground starts the background tasks and returns the function
// that stops them and waits for them, until its ctx ends.
func (s *Server) startBackground() func(ctx context.Context) error {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, task := range s.background {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := task.run(ctx); err != nil && ctx.Err() == nil {
				s.logger.Error("background task failed", "task", task.name, "err", err)
			}
		}()
	}
	var once sync.Once
	done := make(chan struct{})
	return func(ctx context.Context) error {
		once.Do(func() {
			cancel()
			go func() {
				wg.Wait()
				close(done)
			}()
		})
		select {
		case <-done:
			return nil
		default:
		}
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return errors.New("background tasks still running at the shutdown timeout")
		}
	}
}

func (s *Server) shutdown(srv *http.Server, health *grpchealth.StaticChecker, instanceID string, serveErr chan error, stopBackground func(context.Context) error) error {
	s.logger.Info("shutting down", "shutdown_timeout", s.cfg.ShutdownTimeout.String())
	s.ready.Store(false)
	for _, svc := range s.services {
		health.SetStatus(svc, grpchealth.StatusNotServing)
	}
	health.SetStatus("", grpchealth.StatusNotServing)
	var errs []error
	if instanceID != "" {
		s.deregister(instanceID)
		// Keep serving while resolvers learn the instance is gone, so
		// calls already routed here are not refused.
		time.Sleep(s.cfg.DeregisterDelay)
	}
	// One deadline for the drain, the background tasks and the closers.
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("drain in-flight calls: %w", err))
		_ = srv.Close()
	}
	if err := <-serveErr; !errors.Is(err, http.ErrServerClosed) {
		errs = append(errs, err)
	}
	errs = append(errs, stopBackground(ctx), s.close(ctx))
	if err := errors.Join(errs...); err != nil {
		return err
	}
	s.logger.Info("stopped")
	return nil
}

// Validate refuses a wildcard listen address without an advertised one:
// the instance would be registered as 127.0.0.1, which callers on other
// hosts cannot reach, while the local agent's check passes.
func (c Config) Validate() error {
	if c.AdvertiseAddr != "" {
		if wildcard(c.AdvertiseAddr) {
			return fmt.Errorf("server.advertise_addr: %q is a wildcard: set the address other hosts reach this one at", c.AdvertiseAddr)
		}
		return nil
	}
	if c.Addr == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return fmt.Errorf("server.addr: %q is not host:port", c.Addr)
	}
	if wildcard(host) {
		return fmt.Errorf("server.advertise_addr: required when server.addr %q listens on every address: set the address other hosts reach this one at", c.Addr)
	}
	return nil
}

func wildcard(host string) bool {
	ip := net.ParseIP(host)
	return host == "" || ip != nil && ip.IsUnspecified()
}

// instance is how the server is registered in Consul when it listens on addr.
func (s *Server) instance(addr net.Addr) registry.Instance {
	host, portStr, _ := net.SplitHostPort(addr.String())
	host = cmp.Or(s.cfg.AdvertiseAddr, host)
	if wildcard(host) {
		host = "127.0.0.1" // a Config built in code, which Validate never saw
	}
	port, _ := strconv.Atoi(portStr)
	return registry.Instance{
		Service:         s.name,
		Address:         host,
		Port:            port,
		Version:         s.version,
		ConnectServices: s.services,
	}
}

func (s *Server) register(ctx context.Context, addr net.Addr) (string, error) {
	if s.registry == nil {
		return "", nil
	}
	id, err := s.registry.Register(ctx, s.instance(addr))
	if err != nil {
		return id, fmt.Errorf("register %s in Consul: %w", s.name, err)
	}
	return id, nil
}

// deregister removes the instance from Consul. A failure is no failure of
// the shutdown, which goes on and ends well: the agent's check of the
// instance fails once it stops serving, callers stop picking it then, and
// Consul removes it after registry.deregister_critical_after. Waiting long
// for an agent that does not answer would only delay the drain.
func (s *Server) deregister(id string) {
	if s.registry == nil || id == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.registry.Deregister(ctx, id); err != nil {
		s.logger.Warn("could not deregister from Consul; its check fails once this instance stops, and Consul removes it after registry.deregister_critical_after",
			"id", id, "err", err)
	}
	// The registry logs a deregistration that worked.
}

func (s *Server) close(ctx context.Context) error {
	var errs []error
	for _, c := range s.closers {
		errs = append(errs, c(ctx))
	}
	return errors.Join(errs...)
}

func (s *Server) mountStandard(health *grpchealth.StaticChecker) {
	// The same compression threshold as the services' handlers: a health
	// answer is a few bytes, and a probe should not pay for gzip.
	compress := connect.WithCompressMinBytes(s.cfg.CompressMinBytes)
	s.mux.Handle(grpchealth.NewHandler(&readyChecker{s: s, static: health}, compress))
	reflector := grpcreflect.NewStaticReflector(s.services...)
	s.mux.Handle(grpcreflect.NewHandlerV1(reflector, compress))
	s.mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector, compress))
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { writeStatus(w, http.StatusOK, "ok") })
	s.mux.HandleFunc("GET /readyz", s.serveReady)
	s.mux.Handle("GET /metrics", s.metrics.handler())
}

// serveReady answers 200 when the server is serving and every readiness
// check passes, 503 naming the failing checks otherwise.
func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	if !s.ready.Load() {
		writeStatus(w, http.StatusServiceUnavailable, "not ready: starting or shutting down")
		return
	}
	failed := s.failedReadiness(r.Context())
	var detail strings.Builder
	for _, d := range s.details {
		fmt.Fprintf(&detail, "\n%s: %s", d.name, d.detail())
	}
	if len(failed) > 0 {
		writeStatus(w, http.StatusServiceUnavailable, "not ready: "+strings.Join(failed, ", ")+detail.String())
		return
	}
	writeStatus(w, http.StatusOK, "ok"+detail.String())
}

// failedReadiness returns the names of the readiness checks that failed,
// running them at most once per [readinessReuse]; probes in between get
// the last verdict.
func (s *Server) failedReadiness(ctx context.Context) []string {
	s.verdictMu.Lock()
	defer s.verdictMu.Unlock()
	if now := time.Now(); now.Before(s.verdictExpiry) {
		return s.verdict
	}
	s.verdict = s.runReadiness(ctx)
	s.verdictExpiry = time.Now().Add(readinessReuse)
	return s.verdict
}

// runReadiness runs the readiness checks and returns the names of those
// that failed.
func (s *Server) runReadiness(ctx context.Context) []string {
	// Not the probe's own deadline or cancellation: the verdict answers
	// every probe for a while, so one impatient caller must not make it
	// "not ready" for all.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	var failed []string
	for _, c := range s.readiness {
		if err := c.check(ctx); err != nil {
			s.logger.WarnContext(ctx, "readiness check failed", "check", c.name, "err", err)
			failed = append(failed, c.name)
		}
	}
	return failed
}

// readyChecker answers gRPC health checks as /readyz does: NOT_SERVING
// while the server starts, shuts down or fails a readiness check, so a
// gRPC health probe (Consul's, Kubernetes') sees what an HTTP one sees.
// The static checker knows the services and the shutdown status.
type readyChecker struct {
	s      *Server
	static *grpchealth.StaticChecker
}

func (c *readyChecker) Check(ctx context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	res, err := c.static.Check(ctx, req)
	if err != nil || res.Status != grpchealth.StatusServing {
		return res, err
	}
	if !c.s.ready.Load() || len(c.s.failedReadiness(ctx)) > 0 {
		return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
	}
	return res, nil
}

func writeStatus(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(msg + "\n"))
}

// protocols serves HTTP/1.1 (Connect, gRPC-Web) and cleartext HTTP/2 (gRPC,
// and the other services, which call with prior knowledge).
func protocols() *http.Protocols {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return p
}

func (s *Server) recover(ctx context.Context, _ connect.Spec, _ http.Header, p any) error {
	// The observer, outside the recovery, has put the procedure in ctx.
	s.logger.ErrorContext(ctx, "panic in handler", "panic", fmt.Sprint(p), "stack", stack())
	return connect.NewError(connect.CodeInternal, errors.New("internal error"))
}
