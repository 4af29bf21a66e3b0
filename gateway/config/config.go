// Package config is the gateway's configuration: its sections, their defaults
// (default.yaml, embedded in the binary) and their rules.
package config

import (
	_ "embed"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"

	"portcullis.dev/kernel/authn"
	kconfig "portcullis.dev/kernel/config"
	"portcullis.dev/kernel/logging"
	"portcullis.dev/kernel/registry"
)

//go:embed default.yaml
var defaults []byte

// Config is the gateway's configuration. Every key is documented, with its
// default, in default.yaml.
type Config struct {
	Logging  logging.Config  `koanf:"logging"`
	Registry registry.Config `koanf:"registry"`
	// Tokens says how access tokens are verified at the edge: against the
	// Auth service's JWKS, exactly as the services verify them.
	Tokens    authn.Config `koanf:"tokens"`
	Gateway   Gateway      `koanf:"gateway"`
	RateLimit RateLimit    `koanf:"ratelimit"`
	CORS      CORS         `koanf:"cors"`
	Limits    Limits       `koanf:"limits"`
	Routes    Routes       `koanf:"routes"`
}

// Gateway is the listener and the upstream side of the gateway.
type Gateway struct {
	// Addr is the listen address of all external traffic
	// (PORTCULLIS_GATEWAY_ADDR).
	Addr string `koanf:"addr" validate:"required"`
	// AdminAddr, when set, is a second listener for operators with the
	// metrics at MetricsPath, which then leave the public listener, and
	// /healthz and /readyz, which stay on both
	// (PORTCULLIS_GATEWAY_ADMIN_ADDR). Empty serves the metrics on Addr.
	AdminAddr string `koanf:"admin_addr"`
	// JWKSService is the Consul service /.well-known/jwks.json is routed to.
	JWKSService string `koanf:"jwks_service" validate:"required"`
	// TrustedProxies are the addresses or CIDR prefixes of load balancers in
	// front of the gateway whose X-Forwarded-For is believed when finding the
	// client's IP. Empty: the TCP peer is the client.
	TrustedProxies []string `koanf:"trusted_proxies"`
	// ProxyRequestIDs keeps the X-Request-Id a trusted proxy sends, for a
	// proxy that sets it itself, overwriting the client's: most pass a
	// client's on as it came. False: the gateway makes up every request's
	// ID, so that no client chooses the ID its calls are audited under.
	ProxyRequestIDs bool `koanf:"proxy_request_ids"`
	// DrainDelay is how long the gateway goes on serving new connections
	// and requests after it is told to stop, with /readyz answering 503,
	// before it drains: load balancers that probe /readyz stop sending it
	// new ones meanwhile, rather than have them refused.
	DrainDelay time.Duration `koanf:"drain_delay" validate:"min=0s,max=10m"`
	// ShutdownTimeout bounds the drain of in-flight requests on shutdown.
	ShutdownTimeout time.Duration `koanf:"shutdown_timeout" validate:"min=0s,max=10m"`
	// EjectAfter consecutive failures (transport errors, 503s, responses
	// cut short, no answer within the route's timeout) eject an upstream
	// instance for EjectFor.
	EjectAfter int           `koanf:"eject_after" validate:"min=1,max=1000"`
	EjectFor   time.Duration `koanf:"eject_for" validate:"min=1s,max=10m"`
	// MetricsPath is where Prometheus metrics are served; empty serves none.
	MetricsPath string `koanf:"metrics_path"`
	// HeapFloorBytes is how far the heap grows before the garbage
	// collector runs, while little is live (see package
	// portcullis.dev/kernel/heapfloor); zero leaves Go's default, GOGC's
	// growth over the live heap.
	HeapFloorBytes int64 `koanf:"heap_floor_bytes" validate:"min=0"`
}

// RateLimit configures the token buckets. Rates are requests per second and
// may be fractions (0.2 is one request every 5s); a burst is how many
// requests an idle client may make at once.
type RateLimit struct {
	// Enabled turns rate limiting on.
	Enabled bool `koanf:"enabled"`
	// IPRate and IPBurst bound every client IP address (an IPv6 client's
	// /64) across all routes.
	IPRate  float64 `koanf:"ip_rate" validate:"min=0,max=1000000"`
	IPBurst int     `koanf:"ip_burst" validate:"min=1,max=1000000"`
	// UserRate and UserBurst bound every authenticated user across all
	// routes.
	UserRate  float64 `koanf:"user_rate" validate:"min=0,max=1000000"`
	UserBurst int     `koanf:"user_burst" validate:"min=1,max=1000000"`
	// CredentialRate and CredentialBurst bound every client IP on the
	// credential procedures, on top of the IP limit.
	CredentialRate  float64 `koanf:"credential_rate" validate:"min=0,max=1000000"`
	CredentialBurst int     `koanf:"credential_burst" validate:"min=1,max=1000000"`
	// CredentialProcedures are the procedures the credential limit applies
	// to, in Connect form (/package.Service/Method).
	CredentialProcedures []string `koanf:"credential_procedures"`
	// RedisURL, when set, shares the limits among gateways through Redis
	// (redis://[:password@]host:port/db). Its password is never printed.
	RedisURL kconfig.DSN `koanf:"redis_url"`
	// KeyPrefix starts every Redis key, so that several platforms can share
	// one Redis.
	KeyPrefix string `koanf:"key_prefix" validate:"required"`
	// RedisTimeout bounds one Redis round trip; a slower Redis counts as down.
	RedisTimeout time.Duration `koanf:"redis_timeout" validate:"min=1ms,max=10s"`
	// RedisRetry is how long the gateway uses its local limits after Redis
	// failed before it tries Redis again.
	RedisRetry time.Duration `koanf:"redis_retry" validate:"min=10ms,max=10m"`
}

// CORS configures cross-origin access for browser clients.
type CORS struct {
	// AllowedOrigins are the origins browsers may call from, each with at
	// most one "*" wildcard, such as http://localhost:*. Empty allows none.
	AllowedOrigins []string `koanf:"allowed_origins"`
	// MaxAge is how long a browser may cache a preflight answer.
	MaxAge time.Duration `koanf:"max_age" validate:"min=0s,max=24h"`
}

// Limits protects the gateway from large and slow clients.
type Limits struct {
	// MaxBodyBytes caps a request body.
	MaxBodyBytes int64 `koanf:"max_body_bytes" validate:"min=1"`
	// MaxHeaderBytes caps the request line and headers (HTTP/1.1) or the
	// header list (HTTP/2).
	MaxHeaderBytes int `koanf:"max_header_bytes" validate:"min=1024"`
	// ReadHeaderTimeout is how long a client may take to send its headers,
	// or on HTTP/2 its connection preface and settings.
	ReadHeaderTimeout time.Duration `koanf:"read_header_timeout" validate:"min=1ms"`
	// ReadTimeout is how long an HTTP/1.1 client may take to send a whole
	// request, body included. Zero: no limit (client streams). On HTTP/2
	// the route's timeout bounds a request.
	ReadTimeout time.Duration `koanf:"read_timeout" validate:"min=0s"`
	// WriteTimeout bounds one write of a response that the client does not
	// take, then the connection closes (HTTP/1.1 and HTTP/2 alike); a
	// response as a whole, server streams included, runs as long as its
	// route's timeout. Zero: no limit.
	WriteTimeout time.Duration `koanf:"write_timeout" validate:"min=0s"`
	// IdleTimeout closes a keep-alive connection idle for this long.
	IdleTimeout time.Duration `koanf:"idle_timeout" validate:"min=1s"`
}

// Routes configures per-route behaviour.
type Routes struct {
	// UnaryTimeout bounds a unary call.
	UnaryTimeout time.Duration `koanf:"unary_timeout" validate:"min=1ms"`
	// StreamTimeout bounds a streaming call.
	StreamTimeout time.Duration `koanf:"stream_timeout" validate:"min=1ms"`
	// Timeouts override the two above per procedure or per service:
	// "/pkg.Service/Method=5s" or "/pkg.Service/=1m".
	Timeouts []string `koanf:"timeouts"`
}

// Load reads the configuration from the defaults, the file args or the
// environment names, and the environment (see default.yaml).
func Load(args []string, opts ...kconfig.Option) (Config, error) {
	return kconfig.Load[Config](defaults, append([]kconfig.Option{kconfig.WithArgs(args)}, opts...)...)
}

// Defaults returns the configuration of default.yaml alone, for tests and
// benchmarks that change a few keys.
func Defaults() (Config, error) {
	return kconfig.Load[Config](defaults, kconfig.WithLookupEnv(func(string) (string, bool) { return "", false }))
}

// minRate is the least rate limit, in requests a second: one a day.
const minRate = 1.0 / (24 * 60 * 60)

// maxWindow bounds the time an empty bucket takes to fill: a year is
// beyond any limit worth having, and far inside what the buckets can hold.
const maxWindow = 365 * 24 * time.Hour

// Validate checks the rules the validate tags cannot express.
func (c Config) Validate() error {
	var errs []error
	for _, p := range c.Gateway.TrustedProxies {
		if _, err := ParsePrefix(p); err != nil {
			errs = append(errs, &kconfig.KeyError{Key: "gateway.trusted_proxies", Err: err})
		}
	}
	for _, o := range c.CORS.AllowedOrigins {
		if strings.Count(o, "*") > 1 || (o != "*" && !strings.Contains(o, "://")) {
			errs = append(errs, &kconfig.KeyError{Key: "cors.allowed_origins", Err: fmt.Errorf("%q is not an origin with at most one *", o)})
		}
	}
	for _, p := range c.RateLimit.CredentialProcedures {
		if !strings.HasPrefix(p, "/") || strings.Count(p, "/") != 2 {
			errs = append(errs, &kconfig.KeyError{Key: "ratelimit.credential_procedures", Err: fmt.Errorf("%q is not a procedure /package.Service/Method", p)})
		}
	}
	// A rate under one a day is a typo; zero turns the bucket off. (A
	// million a second, the tags' maximum, is the finest interval Redis
	// keeps.)
	rl := c.RateLimit
	for _, r := range []struct {
		key   string
		rate  float64
		burst int
	}{{"ratelimit.ip_rate", rl.IPRate, rl.IPBurst}, {"ratelimit.user_rate", rl.UserRate, rl.UserBurst}, {"ratelimit.credential_rate", rl.CredentialRate, rl.CredentialBurst}} {
		switch {
		case r.rate == 0:
		case r.rate < minRate:
			errs = append(errs, &kconfig.KeyError{Key: r.key, Err: fmt.Errorf("must be 0 (off) or at least %.7f (one a day), got %g", math.Ceil(minRate*1e7)/1e7, r.rate)})
		case float64(r.burst)/r.rate > maxWindow.Seconds():
			// The bucket's window, burst/rate, is kept in nanoseconds (and
			// in microseconds in Redis, as a Lua number).
			errs = append(errs, &kconfig.KeyError{Key: r.key, Err: fmt.Errorf("with its burst of %d, a bucket would take %.0f days to fill; at most %.0f",
				r.burst, float64(r.burst)/r.rate/86400, maxWindow.Hours()/24)})
		}
	}
	if _, err := c.Routes.ParseTimeouts(); err != nil {
		errs = append(errs, &kconfig.KeyError{Key: "routes.timeouts", Err: err})
	}
	return errors.Join(errs...)
}

// ParsePrefix parses an address or a CIDR prefix.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// ParseTimeouts returns Timeouts as a map from procedure or service prefix
// ("/pkg.Service/") to timeout.
func (r Routes) ParseTimeouts() (map[string]time.Duration, error) {
	out := make(map[string]time.Duration, len(r.Timeouts))
	for _, t := range r.Timeouts {
		route, d, ok := strings.Cut(t, "=")
		if !ok || !strings.HasPrefix(route, "/") || strings.Count(route, "/") != 2 {
			return nil, fmt.Errorf("%q is not /pkg.Service/Method=duration or /pkg.Service/=duration", t)
		}
		dur, err := time.ParseDuration(d)
		if err != nil || dur <= 0 {
			return nil, fmt.Errorf("%q: %q is not a positive duration", t, d)
		}
		out[route] = dur
	}
	return out, nil
}
