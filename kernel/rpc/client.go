package rpc

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"

	"portcullis.dev/kernel/logging"
	"portcullis.dev/kernel/registry"
	"portcullis.dev/proto/access"
	optionsv1 "portcullis.dev/proto/options/v1"
)

// ServiceTokens issues the calling service's token for a target service.
// [authn.ServiceTokenSource] is one.
type ServiceTokens interface {
	Token(audience string) (string, error)
}

// ClientFactory builds clients for other services, found through Consul.
// Create it with [NewClientFactory] and build clients with [NewClient].
type ClientFactory struct {
	registry *registry.Registry
	logger   *slog.Logger
	tokens   ServiceTokens
	timeout  time.Duration
	http     *http.Client
	balancer *balancer

	mu        sync.Mutex
	resolvers map[string]*registry.Resolver
	closed    bool
}

// ClientOption configures a [ClientFactory].
type ClientOption func(*ClientFactory)

// WithClientLogger sets the factory's logger. Nil, the default, discards.
func WithClientLogger(l *slog.Logger) ClientOption {
	return func(f *ClientFactory) { f.logger = l }
}

// WithServiceTokens attaches the service's token to calls of INTERNAL
// procedures. Without it such calls are refused by the callee.
func WithServiceTokens(t ServiceTokens) ClientOption {
	return func(f *ClientFactory) { f.tokens = t }
}

// WithCallTimeout bounds unary calls whose context has no deadline. Zero
// means 10s.
func WithCallTimeout(d time.Duration) ClientOption {
	return func(f *ClientFactory) { f.timeout = d }
}

// WithEjection ejects an instance for d after n consecutive failures
// (transport errors, 503s, calls left unanswered past a
// [WithInstanceTimeout] deadline). Zero values mean 3 and 10s.
func WithEjection(n int, d time.Duration) ClientOption {
	return func(f *ClientFactory) {
		if n > 0 {
			f.balancer.ejectAfter = int32(n)
		}
		if d > 0 {
			f.balancer.ejectFor = d
		}
	}
}

// NewClientFactory returns a factory whose clients find instances through
// reg's resolvers, one per service, created on first use.
func NewClientFactory(reg *registry.Registry, opts ...ClientOption) *ClientFactory {
	f := &ClientFactory{registry: reg, timeout: 10 * time.Second, resolvers: map[string]*registry.Resolver{}}
	f.balancer = newBalancer(h2cTransport(), f.instances)
	for _, opt := range opts {
		opt(f)
	}
	f.logger = logging.OrDiscard(f.logger)
	f.balancer.logger = f.logger
	// Services never redirect one another: a redirect is answered as it
	// is, not followed to a host that would get a resolver of its own, kept
	// for as long as the process runs.
	f.http = &http.Client{Transport: f.balancer, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return f
}

// NewClient returns the generated Connect client newClient builds (such as
// identityv1connect.NewIdentityServiceClient) for the Consul service
// service, calling its healthy instances in turn. It attaches the service
// token to internal procedures, forwards the request ID of the context, and
// applies the factory's call timeout.
func NewClient[T any](f *ClientFactory, service string, newClient func(connect.HTTPClient, string, ...connect.ClientOption) T, opts ...connect.ClientOption) T {
	opts = append([]connect.ClientOption{connect.WithInterceptors(&clientInterceptor{f: f, service: service})}, opts...)
	return newClient(f.http, "http://"+service, opts...)
}

// HTTPClient is a plain HTTP client over the same balancer: a request to
// http://<service>/path reaches a healthy instance of <service>. The kernel's
// token verifier fetches the Auth service's JWKS with it.
func (f *ClientFactory) HTTPClient() *http.Client { return f.http }

// Close stops the resolvers the factory started.
func (f *ClientFactory) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for name, r := range f.resolvers {
		r.Close()
		delete(f.resolvers, name)
	}
	f.balancer.base.(*http.Transport).CloseIdleConnections()
}

// instances returns service's healthy instances, starting a resolver and
// waiting for its first answer on the first call; while Consul has not
// answered and has failed, it fails at once (see [registry.Resolver.Wait]).
func (f *ClientFactory) instances(ctx context.Context, service string) ([]registry.Instance, error) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil, fmt.Errorf("resolve %q: the client factory is closed", service)
	}
	r, ok := f.resolvers[service]
	if !ok {
		r = f.registry.Resolver(service, registry.WithWatchLogger(f.logger))
		f.resolvers[service] = r
	}
	f.mu.Unlock()
	if err := r.Wait(ctx); err != nil {
		return nil, fmt.Errorf("resolve %q: %w", service, err)
	}
	return r.Instances(), nil
}

// clientInterceptor adds what every outgoing call carries.
type clientInterceptor struct {
	f       *ClientFactory
	service string
}

func (c *clientInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if err := c.decorate(ctx, req.Spec(), req.Header()); err != nil {
			return nil, err
		}
		if _, ok := ctx.Deadline(); !ok && c.f.timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = WithInstanceTimeout(ctx, c.f.timeout)
			defer cancel()
		}
		return next(ctx, req)
	}
}

func (c *clientInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		_ = c.decorate(ctx, spec, conn.RequestHeader()) // a missing token shows as the callee's refusal
		return conn
	}
}

func (c *clientInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

func (c *clientInterceptor) decorate(ctx context.Context, spec connect.Spec, h http.Header) error {
	if id := logging.RequestID(ctx); id != "" {
		h.Set(RequestIDHeader, id)
	}
	if ip := logging.ClientIP(ctx); ip != "" {
		h.Set(ClientIPHeader, ip)
	}
	if ua := ClientUserAgent(ctx); ua != "" {
		h.Set(UserAgentHeader, ua)
	}
	setTrace(ctx, h)
	if c.f.tokens == nil || access.ForSpec(spec).Level != optionsv1.Access_ACCESS_INTERNAL {
		return nil
	}
	token, err := c.f.tokens.Token(c.service)
	if err != nil {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("issue service token for %s: %w", c.service, err))
	}
	h.Set(ServiceTokenHeader, token)
	return nil
}

// Call makes a call the way the factory's clients do, for a caller that
// talks to the instances itself, such as the gateway's HTTP/2 proxy:
// attempt runs on the less busy of two healthy instances of service
// (host:port), and on up to two others while it reports retry — the call
// never reached the instance. It reports too whether the instance is to be
// counted healthy (false after a transport failure or a 503), which ejects
// one that keeps failing; once ctx has ended, nothing is counted (unless at
// a [WithInstanceTimeout] deadline) or retried, and an error marked
// [NotTheInstance] counts for nobody. The instance counts the call as in
// flight while attempt runs. Call returns attempt's last error, or why no
// instance could be picked.
func (f *ClientFactory) Call(ctx context.Context, service string, attempt func(addr string) (healthy, retry bool, err error)) error {
	instances, err := f.instances(ctx, service)
	if err != nil {
		return err
	}
	return f.balancer.call(ctx, service, instances, func(addr string, ep *endpoint, _ bool) (bool, bool, error) {
		ep.inFlight.Add(1)
		defer ep.inFlight.Add(-1)
		return attempt(addr)
	})
}
