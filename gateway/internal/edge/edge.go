// Package edge is the gateway: one http.Handler that routes every
// /<package>.<Service>/<Method> to the healthy instances of the service that
// serves it, found in Consul, after checking at the edge what the contracts
// say about the procedure — INTERNAL ones do not exist from outside,
// AUTHENTICATED ones need a valid access token — and the rate limits.
//
// Clients that speak HTTP/2 with prior knowledge — gRPC and Connect clients
// outside browsers — are served by h2proxy, which forwards each stream frame
// by frame to an instance the kernel's balancer picks. HTTP/1.1 clients —
// browsers with connect-web or gRPC-Web — are served by net/http and
// net/http/httputil.ReverseProxy over the kernel's balancing transport. Both
// speak HTTP/2 cleartext to the services, so gRPC trailers and server
// streams pass unchanged whatever the protocol, and both go through the
// same checks, limits, logs and metrics.
package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	connectcors "connectrpc.com/cors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/rs/cors"

	"portcullis.dev/kernel/authn"
	"portcullis.dev/kernel/logging"
	"portcullis.dev/kernel/registry"
	"portcullis.dev/kernel/rpc"
	optionsv1 "portcullis.dev/proto/options/v1"

	"portcullis.dev/gateway/config"
	"portcullis.dev/gateway/internal/envelope"
	"portcullis.dev/gateway/internal/h2proxy"
	"portcullis.dev/gateway/internal/ratelimit"
)

// retryBodyMax is the largest unary request body kept in memory so that the
// balancer can send it to another instance when the first one refused the
// connection. Larger ones are streamed and not retried.
const retryBodyMax = 64 << 10

// Gateway is the edge proxy. Create it with [New], serve it with
// [Gateway.Serve] (or mount [Gateway.Handler]), and [Gateway.Close] it.
type Gateway struct {
	cfg      config.Config
	logger   *slog.Logger
	catalog  *registry.CatalogWatcher
	clients  *rpc.ClientFactory
	verifier authn.Authenticator
	limiter  ratelimit.Limiter // nil: no rate limits
	redis    *redis.Client
	routes   map[string]*route
	trusted  []netip.Prefix
	// requestIDsFrom are the peers whose X-Request-Id is kept.
	requestIDsFrom []netip.Prefix
	proxy          *httputil.ReverseProxy
	h2             *h2proxy.Transport
	metrics        *metrics
	errors         *connect.ErrorWriter
	handler        http.Handler

	ready    atomic.Bool // the catalog answered and the gateway is not stopping
	draining atomic.Bool
}

// Option configures a [Gateway].
type Option func(*options)

type options struct {
	logger  *slog.Logger
	limiter ratelimit.Limiter
}

// WithLogger sets the logger of the access log and of events. Nil, the
// default, discards.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithLimiter replaces the limiter the configuration describes, for tests of
// failure modes. Nil means the configured one.
func WithLimiter(l ratelimit.Limiter) Option { return func(o *options) { o.limiter = l } }

// New returns a gateway for cfg that learns its routes and instances from
// reg. It contacts neither Consul nor Redis: both may come up later.
func New(cfg config.Config, reg *registry.Registry, opts ...Option) (*Gateway, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	g := &Gateway{
		cfg:     cfg,
		logger:  logging.OrDiscard(o.logger),
		metrics: newMetrics(),
		errors:  connect.NewErrorWriter(),
	}
	var err error
	if g.routes, err = buildRoutes(cfg); err != nil {
		return nil, err
	}
	for _, p := range cfg.Gateway.TrustedProxies {
		prefix, err := config.ParsePrefix(p)
		if err != nil {
			return nil, fmt.Errorf("gateway.trusted_proxies: %w", err)
		}
		g.trusted = append(g.trusted, prefix)
	}
	if cfg.Gateway.ProxyRequestIDs {
		g.requestIDsFrom = g.trusted
	}
	g.clients = rpc.NewClientFactory(reg,
		rpc.WithClientLogger(g.logger),
		rpc.WithEjection(cfg.Gateway.EjectAfter, cfg.Gateway.EjectFor))
	verifier, err := authn.NewVerifier(cfg.Tokens, authn.WithHTTPClient(g.clients.HTTPClient()), authn.WithLogger(g.logger))
	if err != nil {
		g.clients.Close()
		return nil, fmt.Errorf("tokens: %w", err)
	}
	g.verifier = verifier
	if err := g.setupLimiter(o.limiter); err != nil {
		g.clients.Close()
		return nil, err
	}
	g.catalog = reg.WatchCatalog(registry.WithWatchLogger(g.logger))
	// FlushInterval zero: ReverseProxy still flushes every write of a
	// response of unknown length — gRPC, gRPC-Web and Connect streams — so
	// server streams reach the client message by message, but a response
	// of known length (a Connect unary answer) goes out with its headers
	// and end of stream together rather than flushed write by write.
	g.proxy = &httputil.ReverseProxy{
		Rewrite:        g.rewrite,
		ModifyResponse: keepOwnHeaders,
		Transport:      g.clients.HTTPClient().Transport,
		FlushInterval:  0,
		BufferPool:     bufferPool{},
		ErrorHandler:   g.upstreamError,
		ErrorLog:       slog.NewLogLogger(g.logger.Handler(), slog.LevelDebug),
	}
	g.h2 = &h2proxy.Transport{Logger: g.logger}
	g.handler = g.withCORS(http.HandlerFunc(g.route))
	return g, nil
}

func (g *Gateway) setupLimiter(override ratelimit.Limiter) error {
	rl := g.cfg.RateLimit
	switch {
	case override != nil:
		g.limiter = override
	case !rl.Enabled:
	case rl.RedisURL == "":
		g.limiter = ratelimit.NewMemory(nil)
	default:
		client, err := ratelimit.NewRedisClient(rl.RedisURL.Value(), rl.RedisTimeout, g.logger)
		if err != nil {
			return fmt.Errorf("ratelimit.redis_url: %w", err)
		}
		g.redis = client
		// Nothing asks Redis until the first request: say where limits
		// are kept, so that a wrong address is not silent until then.
		g.logger.Info("rate limits shared through Redis", "addr", client.Options().Addr, "db", client.Options().DB)
		g.limiter = ratelimit.NewFallback(
			ratelimit.NewRedis(client, rl.KeyPrefix, rl.RedisTimeout),
			ratelimit.NewMemory(nil), rl.RedisRetry, g.logger, g.metrics.fallback.Inc)
	}
	return nil
}

// withCORS answers preflights and adds CORS headers for the configured
// origins, with the header lists Connect, gRPC-Web and the gateway's own
// responses need. Without origins it adds nothing.
func (g *Gateway) withCORS(next http.Handler) http.Handler {
	if len(g.cfg.CORS.AllowedOrigins) == 0 {
		return next
	}
	return cors.New(cors.Options{
		AllowedOrigins: g.cfg.CORS.AllowedOrigins,
		AllowedMethods: connectcors.AllowedMethods(),
		AllowedHeaders: append(connectcors.AllowedHeaders(), "Authorization", rpc.RequestIDHeader, rpc.TraceparentHeader, rpc.TracestateHeader),
		ExposedHeaders: append(connectcors.ExposedHeaders(), rpc.RequestIDHeader,
			"Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy"),
		MaxAge: int(g.cfg.CORS.MaxAge / time.Second),
	}).Handler(next)
}

// Handler returns the gateway's handler: routes, /healthz, /readyz and the
// metrics.
func (g *Gateway) Handler() http.Handler { return g }

// Ready reports whether the gateway has its first catalog and is not
// shutting down.
func (g *Gateway) Ready() bool { return g.ready.Load() && !g.draining.Load() }

// WaitCatalog blocks until Consul answered the first catalog query, then
// marks the gateway ready.
func (g *Gateway) WaitCatalog(ctx context.Context) error {
	if err := g.catalog.Wait(ctx); err != nil {
		return err
	}
	g.ready.Store(true)
	return nil
}

// Close stops the watchers and closes the upstream and Redis connections.
func (g *Gateway) Close() {
	g.catalog.Close()
	g.clients.Close()
	g.h2.Close()
	if g.redis != nil {
		_ = g.redis.Close()
	}
}

// state is what one request carries from the handler to the proxy's
// callbacks and back to the access log.
type state struct {
	route     string       // metric label
	deadline  *deadlineCap // the route's; nil for the JWKS
	upstream  string       // Consul service
	forwarded string       // X-Forwarded-For to send
	principal string
	// stream is the client's HTTP/2 stream when h2proxy serves it; the
	// call is then forwarded with it rather than through ReverseProxy.
	stream *h2proxy.Stream
	// result is how the forwarded stream went, for the log and metrics.
	result *h2proxy.Result
	// client is the caller's address, behind any trusted proxies.
	client netip.Addr
	// answer is the header of the gateway's answer, where it sets the
	// request ID and the CORS and rate-limit fields before forwarding.
	answer http.Header
}

// keepOwnHeaders drops from an upstream's response the fields the gateway
// sets on its answer itself, as h2proxy does: ReverseProxy adds the
// upstream's to them, and the service's echo of the request ID would go
// out twice. Vary, a list, takes both.
func keepOwnHeaders(res *http.Response) error {
	st, _ := res.Request.Context().Value(stateKey{}).(*state)
	if st == nil {
		return nil
	}
	for k := range st.answer {
		if k != "Vary" {
			res.Header.Del(k)
		}
	}
	return nil
}

type stateKey struct{}

// ServeHTTP implements http.Handler: every request gets an ID, a trace
// context, an access log line and its metrics.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.serve(w, r, nil) }

// serveStream serves a stream of an HTTP/2 client h2proxy took.
func (g *Gateway) serveStream(s *h2proxy.Stream) {
	r, err := s.Request()
	if err != nil {
		http.Error(s.ResponseWriter(), "bad request path", http.StatusBadRequest)
		return
	}
	g.serve(s.ResponseWriter(), r, s)
}

func (g *Gateway) serve(w http.ResponseWriter, r *http.Request, stream *h2proxy.Stream) {
	start := time.Now()
	g.metrics.inFlight.Inc()
	defer g.metrics.inFlight.Dec()

	id, kept := requestID(r, g.requestIDsFrom)
	if !kept {
		r.Header.Set(rpc.RequestIDHeader, id)
	}
	w.Header().Set(rpc.RequestIDHeader, id)
	traceID := propagateTrace(r.Header)

	st := &state{route: routeUnknown, stream: stream, answer: w.Header()}
	ctx := context.WithValue(logging.WithRequestID(r.Context(), id), stateKey{}, st)
	rec := &recorder{ResponseWriter: w}
	if stream == nil {
		rec.writeTimeout = g.cfg.Limits.WriteTimeout // h2proxy bounds its own writes
		// A bound as the handler returns, for what net/http writes itself
		// then (the end of a response); it clears the deadline after that.
		defer rec.bound()
	}
	defer func() {
		// ReverseProxy ends a response it cannot finish (the client or
		// the upstream left, the stream's timeout passed) by panicking
		// with http.ErrAbortHandler, and net/http drops the connection:
		// the call is logged and counted all the same, as cut short. So is
		// any other panic, which net/http then logs.
		aborted := recover()
		if aborted != nil && st.result == nil {
			st.result = &h2proxy.Result{Started: true}
			if st.upstream != "" {
				g.cutShort(r, st)
			}
		}
		g.record(r, st, rec, id, traceID, time.Since(start))
		if aborted != nil {
			panic(aborted)
		}
	}()
	g.handler.ServeHTTP(rec, r.WithContext(ctx))
}

// record writes a call's access log line and its metrics.
func (g *Gateway) record(r *http.Request, st *state, rec *recorder, id, traceID string, elapsed time.Duration) {
	code, status := rec.code(), rec.status
	if st.result != nil {
		code, status = resultCode(st.result), st.result.Status
	}
	g.metrics.requests.WithLabelValues(st.route, code).Inc()
	g.metrics.duration.WithLabelValues(st.route).Observe(elapsed.Seconds())
	level := slog.LevelInfo
	if st.route == routeHealth || st.route == routeMetrics {
		level = slog.LevelDebug
	}
	// The access line names its request itself, with the request's own
	// context rather than the one that carries its ID for other lines: the
	// ID is there with any logger, and once.
	ctx := r.Context()
	if g.logger.Enabled(ctx, level) {
		g.logger.LogAttrs(ctx, level, "request",
			slog.String(logging.RequestIDKey, id),
			slog.String(logging.TraceIDKey, traceID),
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.String("route", st.route),
			slog.String("upstream", st.upstream),
			slog.String("principal", st.principal),
			slog.String("client", clientString(st.client, r.RemoteAddr)),
			slog.String("peer", r.RemoteAddr),
			slog.String("proto", r.Proto),
			slog.Int("status", max(status, http.StatusOK)),
			slog.String("code", code),
			slog.Duration("latency", elapsed))
	}
}

// refused counts and logs a request the HTTP/2 layer answered itself,
// malformed or with headers too large, as the access log and the metrics
// would have had it served.
func (g *Gateway) refused(st *h2proxy.Stream, status int) {
	route, code := routeUnknown, "protocol_error"
	path, _, _ := strings.Cut(st.Path, "?")
	if rt, ok := g.routes[path]; ok && rt.routable() {
		route = rt.procedure
	}
	if status != 0 {
		code = statusText(status)
	}
	g.metrics.requests.WithLabelValues(route, code).Inc()
	// Refused as its headers were read, in the same pass: its latency is
	// taken as zero, so that the histogram counts every request.
	g.metrics.duration.WithLabelValues(route).Observe(0)
	ctx := context.Background() // the stream's has ended
	if g.logger.Enabled(ctx, slog.LevelInfo) {
		g.logger.LogAttrs(ctx, slog.LevelInfo, "request refused",
			slog.String("method", st.Method),
			slog.String("path", st.Path),
			slog.String("route", route),
			slog.String("peer", st.RemoteAddr),
			slog.String("proto", "HTTP/2.0"),
			slog.String("code", code))
	}
}

// route serves one request after CORS.
func (g *Gateway) route(w http.ResponseWriter, r *http.Request) {
	st := r.Context().Value(stateKey{}).(*state)
	switch path := r.URL.Path; {
	case path == "/healthz":
		st.route = routeHealth
		if readOnly(w, r) {
			serveHealth(w, r)
		}
	case path == "/readyz":
		st.route = routeHealth
		if readOnly(w, r) {
			g.serveReady(w, r)
		}
	case g.cfg.Gateway.AdminAddr == "" && g.cfg.Gateway.MetricsPath != "" && path == g.cfg.Gateway.MetricsPath:
		st.route = routeMetrics
		if readOnly(w, r) {
			g.serveMetrics(w, r)
		}
	case path == routeJWKS:
		st.route = routeJWKS
		g.serveJWKS(w, r, st)
	default:
		g.serveProcedure(w, r, st)
	}
}

// readOnly answers 405 to a request that is not GET or HEAD, and reports
// whether the request may go on: the gateway's own pages, and the JWKS,
// are read and nothing else.
func readOnly(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}

func serveHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "ok\n")
}

func (g *Gateway) serveReady(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !g.Ready() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "not ready\n")
		return
	}
	_, _ = io.WriteString(w, "ok\n")
}

func (g *Gateway) serveMetrics(w http.ResponseWriter, r *http.Request) {
	promhttp.HandlerFor(g.metrics.registry, promhttp.HandlerOpts{}).ServeHTTP(w, r)
}

// AdminHandler serves what gateway.admin_addr offers operators: /healthz,
// /readyz and, at gateway.metrics_path, the metrics. Paths match exactly,
// as on the public listener.
func (g *Gateway) AdminHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !readOnly(w, r) {
			return
		}
		switch path := r.URL.Path; {
		case path == "/healthz":
			serveHealth(w, r)
		case path == "/readyz":
			g.serveReady(w, r)
		case g.cfg.Gateway.MetricsPath != "" && path == g.cfg.Gateway.MetricsPath:
			g.serveMetrics(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}

// ServeAdmin serves [Gateway.AdminHandler] on ln until ctx ends. End ctx
// after [Gateway.Serve] returns, so that probes see /readyz answer 503
// while the gateway drains.
func (g *Gateway) ServeAdmin(ctx context.Context, ln net.Listener) error {
	lim := g.cfg.Limits
	srv := &http.Server{
		Handler:           g.AdminHandler(),
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout:       lim.ReadTimeout,
		WriteTimeout:      lim.WriteTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(g.logger.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	g.logger.InfoContext(ctx, "admin listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serve admin %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	// Scrapes and probes are short: they get the drain's own bound.
	shutdownCtx, cancel := context.WithTimeout(context.Background(), g.cfg.Gateway.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("shutdown admin: %w", err)
	}
	<-errc
	return nil
}

// serveJWKS passes the Auth service's key set through, for clients and
// resource servers outside the platform that verify tokens themselves.
func (g *Gateway) serveJWKS(w http.ResponseWriter, r *http.Request, st *state) {
	if !readOnly(w, r) {
		return
	}
	stripTrusted(r.Header)
	r.Header.Del("Authorization")
	client, forwarded := clientAddr(r, g.trusted)
	st.client, st.forwarded = client, forwarded
	if !g.allow(w, r, st, g.buckets(client, nil, "")) {
		return
	}
	st.upstream = g.cfg.Gateway.JWKSService
	ctx, cancel := rpc.WithInstanceTimeout(r.Context(), g.cfg.Routes.UnaryTimeout)
	defer cancel()
	g.proxy.ServeHTTP(w, r.WithContext(ctx))
}

func (g *Gateway) serveProcedure(w http.ResponseWriter, r *http.Request, st *state) {
	rt, ok := g.routes[r.URL.Path]
	if !ok || !rt.routable() {
		// An internal procedure answers exactly as a missing one, so its
		// existence is not confirmed from outside.
		g.writeError(w, r, connect.CodeUnimplemented, "procedure not found")
		return
	}
	st.route, st.deadline = rt.procedure, rt.deadline
	upstream, ok := g.catalog.Routes()[rt.service]
	if !ok {
		g.writeError(w, r, connect.CodeUnavailable, "service unavailable")
		return
	}
	stripTrusted(r.Header)
	client, forwarded := clientAddr(r, g.trusted)
	st.client, st.forwarded = client, forwarded

	if r.ContentLength > g.cfg.Limits.MaxBodyBytes {
		g.writeError(w, r, connect.CodeResourceExhausted, "request too large")
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = http.MaxBytesReader(w, r.Body, g.cfg.Limits.MaxBodyBytes)
	}

	// The token is checked before the rate limit so that the user's bucket
	// applies, but a refusal is sent only after the limit, so that failed
	// attempts cost the client's IP bucket like any other request.
	var (
		principal authn.Principal
		authErr   error
	)
	if token, found := bearer(r.Header); found {
		principal, authErr = g.verifier.Authenticate(r.Context(), token)
	} else {
		authErr = authn.ErrTokenMissing
	}
	user := ""
	if authErr == nil {
		user = principal.Subject
		st.principal = "user:" + user
	}
	if !g.allow(w, r, st, g.buckets(client, rt, user)) {
		return
	}
	if rt.rule.Level == optionsv1.Access_ACCESS_AUTHENTICATED && errors.Is(authErr, authn.ErrKeysUnavailable) {
		// The token could not be checked, which says nothing of it: the
		// client retries, as the services would have it, rather than
		// logging its user in again.
		g.logger.WarnContext(r.Context(), "access token not checked: signing keys unavailable", "route", rt.procedure, "err", authErr)
		g.writeError(w, r, connect.CodeUnavailable, "token verification unavailable; retry later")
		return
	}
	if rt.rule.Level == optionsv1.Access_ACCESS_AUTHENTICATED && authErr != nil {
		// The reason stays in the log; the client learns only that its token
		// did not do, as from the services.
		g.logger.DebugContext(r.Context(), "access token refused", "route", rt.procedure, "err", authErr)
		g.writeError(w, r, connect.CodeUnauthenticated, "missing or invalid access token")
		return
	}

	st.upstream = upstream
	if st.stream != nil {
		g.forwardStream(w, r, st, rt)
		return
	}
	if !rt.clientStream {
		if err := bufferBody(r); err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				g.writeError(w, r, connect.CodeResourceExhausted, "request too large")
				return
			}
			g.writeError(w, r, connect.CodeCanceled, "request body not received")
			return
		}
	}

	ctx, cancel := rpc.WithInstanceTimeout(r.Context(), rt.timeout)
	defer cancel()
	g.proxy.ServeHTTP(w, r.WithContext(ctx))
}

// forwardStream forwards an HTTP/2 client's stream frame by frame to an
// instance of st.upstream, which the kernel picks and replaces when the
// call could not reach it, as for its own clients.
func (g *Gateway) forwardStream(w http.ResponseWriter, r *http.Request, st *state, rt *route) {
	ctx, cancel := rpc.WithInstanceTimeout(r.Context(), rt.timeout)
	defer cancel()
	h := r.Header
	for _, k := range [...]string{"Host", "Forwarded", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		delete(h, k)
	}
	setForwarded(h, st, r.Host, false)
	rt.deadline.apply(h)
	var res h2proxy.Result
	err := g.clients.Call(ctx, st.upstream, func(addr string) (healthy, retry bool, err error) {
		res, err = st.stream.Forward(ctx, g.h2, addr, h, w.Header())
		notSent, retry := errors.AsType[*h2proxy.NotSentError](err)
		switch {
		case retry && notSent.Shared:
			// Another stream's dial, counted with that stream.
			return false, true, rpc.NotTheInstance(err)
		case err != nil && !res.Started && rpc.InstanceTimedOut(ctx):
			if !res.Sent {
				// The client was still sending: the instance was
				// never asked for all of it.
				return false, false, rpc.NotTheInstance(err)
			}
			return false, false, err // unanswered
		}
		return !retry && !isReset(err) && res.Status != http.StatusServiceUnavailable, retry, err
	})
	switch {
	case err == nil:
		st.result = &res
	case res.Started:
		// The answer was cut short after it started: the log and metrics
		// say so rather than the status that went out.
		res.Status, res.GRPCStatus = 0, ""
		st.result = &res
		g.cutShort(r, st)
	default:
		g.upstreamError(w, r.WithContext(ctx), err)
	}
}

// cutShort counts a forwarded answer that ended after it started as an
// upstream error, unless the client was the one to leave.
func (g *Gateway) cutShort(r *http.Request, st *state) {
	if r.Context().Err() == nil {
		g.metrics.upstreamErr.WithLabelValues(st.route).Inc()
	}
}

func isReset(err error) bool {
	_, reset := errors.AsType[*h2proxy.ResetError](err)
	return reset
}

// resultCode is the outcome of a forwarded stream for logs and metrics,
// as recorder.code says it for ReverseProxy.
func resultCode(res *h2proxy.Result) string {
	if c := envelope.GRPCLabel(res.GRPCStatus); c != "" {
		return c
	}
	switch {
	case res.BodyCode != "":
		return res.BodyCode
	case res.Status == 0:
		return "reset" // the response started, then was cut short
	}
	return statusText(res.Status)
}

// bearer returns the token of an Authorization: Bearer header.
func bearer(h http.Header) (string, bool) {
	v := h.Get("Authorization")
	if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return strings.TrimSpace(v[7:]), true
	}
	return "", false
}

// bufferBody reads a small unary request body into memory and lets it be
// read again, so that the balancer may retry the call on another instance
// when the first refused the connection. Larger bodies stay streamed.
func bufferBody(r *http.Request) error {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength > retryBodyMax {
		return nil
	}
	if r.ContentLength > 0 {
		// The server holds the body to its declared length, so a buffer of
		// that size is enough: no growing, no copying.
		data := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, data); err != nil {
			return err
		}
		setBody(r, data)
		return nil
	}
	b := bytes.NewBuffer(make([]byte, 0, 4096))
	n, err := b.ReadFrom(io.LimitReader(r.Body, retryBodyMax+1))
	if err != nil {
		return err
	}
	data := b.Bytes()
	if n > retryBodyMax { // of unknown size and larger: stream the rest
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(data), r.Body), r.Body}
		return nil
	}
	setBody(r, data)
	return nil
}

// setBody replaces the request's body with data, which it can send again.
func setBody(r *http.Request, data []byte) {
	_ = r.Body.Close()
	r.ContentLength = int64(len(data))
	r.Body = io.NopCloser(bytes.NewReader(data))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
}

// buckets lists the buckets a request falls in.
func (g *Gateway) buckets(client netip.Addr, rt *route, user string) []ratelimit.Bucket {
	if g.limiter == nil {
		return nil
	}
	rl := g.cfg.RateLimit
	key := limitKey(client)
	b := make([]ratelimit.Bucket, 0, 3)
	b = append(b, ratelimit.Bucket{Name: "ip", Key: key, Limit: ratelimit.Limit{Rate: rl.IPRate, Burst: rl.IPBurst}})
	if rt != nil && rt.credential {
		b = append(b, ratelimit.Bucket{Name: "credential", Key: key, Limit: ratelimit.Limit{Rate: rl.CredentialRate, Burst: rl.CredentialBurst}})
	}
	if user != "" {
		b = append(b, ratelimit.Bucket{Name: "user", Key: user, Limit: ratelimit.Limit{Rate: rl.UserRate, Burst: rl.UserBurst}})
	}
	return b
}

// allow applies the rate limits, sets the RateLimit headers
// (draft-ietf-httpapi-ratelimit-headers) and, over the limit, answers
// ResourceExhausted (HTTP 429) with Retry-After. It reports whether the
// request may go on.
func (g *Gateway) allow(w http.ResponseWriter, r *http.Request, st *state, buckets []ratelimit.Bucket) bool {
	if len(buckets) == 0 {
		return true
	}
	d, err := g.limiter.Allow(r.Context(), buckets...)
	if err != nil {
		// Only a custom limiter can fail here (Fallback never does): let
		// the request through rather than refuse everyone, but say so.
		g.logger.ErrorContext(r.Context(), "rate limiter failed; request let through", "err", err)
		return true
	}
	if d.Bucket == "" {
		return true
	}
	h := w.Header()
	burst := max(d.Limit.Burst, 1)
	// One array holds the four values: they go on every answer.
	v := []string{
		strconv.Itoa(burst) + ";w=" + strconv.Itoa(policyWindow(d.Limit)),
		strconv.Itoa(burst),
		strconv.Itoa(max(d.Remaining, 0)),
		strconv.Itoa(ceilSeconds(d.Reset)),
	}
	h["Ratelimit-Policy"], h["Ratelimit-Limit"] = v[0:1:1], v[1:2:2]
	h["Ratelimit-Remaining"], h["Ratelimit-Reset"] = v[2:3:3], v[3:4:4]
	if d.Allowed {
		return true
	}
	h.Set("Retry-After", strconv.Itoa(max(ceilSeconds(d.RetryAfter), 1)))
	g.metrics.rejected.WithLabelValues(st.route, d.Bucket).Inc()
	g.writeError(w, r, connect.CodeResourceExhausted, "rate limit exceeded")
	return false
}

// policyWindow is the "w" of RateLimit-Policy: the seconds an empty bucket
// takes to fill, in whole seconds as the header has them, and never 0,
// which would mean no window at all.
func policyWindow(l ratelimit.Limit) int { return max(ceilSeconds(l.Window()), 1) }

func ceilSeconds(d time.Duration) int { return int((d + time.Second - 1) / time.Second) }

// rewrite turns the client's request into the upstream one. ReverseProxy
// has already removed hop-by-hop headers (but kept "TE: trailers", which
// gRPC needs), Forwarded and X-Forwarded-*.
func (g *Gateway) rewrite(pr *httputil.ProxyRequest) {
	st := pr.In.Context().Value(stateKey{}).(*state)
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = st.upstream // resolved to an instance by the balancer
	pr.Out.Host = ""
	// The gateway's own server answered the client's Expect (net/http
	// sends 100 Continue as the body is first read). Passed on, it would
	// bring the service's 100 back through ReverseProxy, which writes it
	// and then clears the answer's header: the request ID, RateLimit-* and
	// CORS fields the gateway set would be lost.
	pr.Out.Header.Del("Expect")
	setForwarded(pr.Out.Header, st, pr.In.Host, pr.In.TLS != nil)
	if st.deadline != nil {
		st.deadline.apply(pr.Out.Header)
	}
	if pr.Out.Trailer != nil && pr.Out.Body != nil {
		pr.Out.Body = &trailerStripper{ReadCloser: pr.Out.Body, trailer: pr.Out.Trailer}
	}
}

// trailerStripper strips the fields the services trust from a request's
// trailers as its body ends: net/http fills the trailers in only then,
// and the transport sends them right after.
type trailerStripper struct {
	io.ReadCloser
	trailer http.Header
}

func (b *trailerStripper) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		stripTrusted(b.trailer)
	}
	return n, err
}

// setForwarded sets the X-Forwarded-* headers and X-Real-Ip, which the
// services read.
func setForwarded(h http.Header, st *state, host string, tls bool) {
	h.Set("X-Forwarded-For", st.forwarded)
	// The client the gateway decided on, so that the services need not
	// know its trusted proxies: a forwarded chain of one address is it.
	client := st.forwarded
	if strings.IndexByte(client, ',') >= 0 {
		client = st.client.String()
	}
	h.Set(rpc.ClientIPHeader, client)
	h.Set("X-Forwarded-Host", host)
	if tls {
		h.Set("X-Forwarded-Proto", "https")
	} else {
		h.Set("X-Forwarded-Proto", "http")
	}
}

// upstreamError answers a request that got no response from upstream.
func (g *Gateway) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	st := r.Context().Value(stateKey{}).(*state)
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		g.writeError(w, r, connect.CodeResourceExhausted, "request too large")
		return
	case errors.Is(err, h2proxy.ErrBodyTooLarge):
		g.writeError(w, r, connect.CodeResourceExhausted, "request too large")
		return
	case r.Context().Err() != nil && !errors.Is(r.Context().Err(), context.DeadlineExceeded):
		// The client went away; nobody reads the answer.
		w.WriteHeader(499)
		return
	}
	g.metrics.upstreamErr.WithLabelValues(st.route).Inc()
	if errors.Is(err, context.DeadlineExceeded) && r.Context().Err() != nil {
		g.writeError(w, r, connect.CodeDeadlineExceeded, "deadline exceeded")
		return
	}
	g.logger.WarnContext(r.Context(), "upstream failed", "route", st.route, "upstream", st.upstream, "err", err)
	g.writeError(w, r, connect.CodeUnavailable, "service unavailable")
}

// writeError answers with a Connect error in the form the client's protocol
// expects: Connect JSON with the matching HTTP status (404 for
// Unimplemented, 401, 429, ...), or HTTP 200 with grpc-status for gRPC and
// gRPC-Web. The message is fixed: nothing internal reaches the client.
func (g *Gateway) writeError(w http.ResponseWriter, r *http.Request, code connect.Code, msg string) {
	if code == connect.CodeUnimplemented && unaryOrUnknown(r) {
		// Connect maps Unimplemented to 501, but a procedure the gateway does
		// not route is missing, as a service's own mux would say with 404;
		// Connect clients read the code from the body either way.
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"code":"unimplemented","message":"`+msg+`"}`)
		return
	}
	_ = g.errors.Write(w, r, connect.NewError(code, errors.New(msg)))
}

// unaryOrUnknown reports whether r is neither gRPC, gRPC-Web nor a Connect
// stream: a Connect unary call, or something that is no RPC at all.
func unaryOrUnknown(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	return !strings.HasPrefix(ct, "application/grpc") && !strings.HasPrefix(ct, "application/connect+")
}

// bufferPool recycles the buffers ReverseProxy copies bodies through,
// which would otherwise be 32 KiB of garbage per request.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *buffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }

// Serve serves on ln until ctx ends, then drains: /readyz turns 503 and,
// after gateway.drain_delay, new connections are refused, and in-flight
// requests — streams included — get up to gateway.shutdown_timeout to
// finish before their connections are closed. It returns nil after a
// clean drain.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	lim := g.cfg.Limits
	// No WriteTimeout: net/http would bound the whole response with it,
	// server streams included; each write is bounded instead (recorder).
	srv := &http.Server{
		Handler:           g,
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout:       lim.ReadTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		Protocols:         new(http.Protocols),
		HTTP2:             &http.HTTP2Config{MaxReceiveBufferPerStream: 1 << 20},
		ErrorLog:          slog.NewLogLogger(g.logger.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true) // gRPC clients speak h2c with prior knowledge

	waitCtx, stopWait := context.WithCancel(ctx)
	defer stopWait()
	go func() {
		if err := g.WaitCatalog(waitCtx); err != nil && waitCtx.Err() == nil {
			g.logger.Error("catalog", "err", err)
		}
	}()

	h2 := &h2proxy.Server{
		Handler:           g.serveStream,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		MaxBodyBytes:      lim.MaxBodyBytes,
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		IdleTimeout:       lim.IdleTimeout,
		WriteTimeout:      lim.WriteTimeout,
		BaseContext:       context.WithoutCancel(ctx),
		Logger:            g.logger,
		Refused:           g.refused,
		StripTrailer:      trusted,
	}
	split := newSplitListener(ln, lim.ReadHeaderTimeout, h2.ServeConn, g.logger)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(split) }()
	g.logger.InfoContext(ctx, "listening", "addr", ln.Addr().String())

	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	g.draining.Store(true)
	if d := g.cfg.Gateway.DrainDelay; d > 0 {
		g.logger.Info("not ready; serving for gateway.drain_delay before draining", "drain_delay", d.String())
		time.Sleep(d)
	}
	g.logger.Info("draining", "timeout", g.cfg.Gateway.ShutdownTimeout.String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), g.cfg.Gateway.ShutdownTimeout)
	defer cancel()
	h2done := make(chan error, 1)
	go func() { h2done <- h2.Shutdown(shutdownCtx) }()
	var shutdownErr error
	if err := srv.Shutdown(shutdownCtx); err != nil {
		_ = srv.Close()
		shutdownErr = fmt.Errorf("shutdown: %w", err)
	}
	if err := <-h2done; err != nil {
		shutdownErr = errors.Join(shutdownErr, fmt.Errorf("shutdown http/2: %w", err))
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return errors.Join(shutdownErr, fmt.Errorf("serve %s: %w", ln.Addr(), err))
	}
	g.logger.Info("stopped")
	return shutdownErr
}
