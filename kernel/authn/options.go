package authn

import (
	"log/slog"
	"net/http"
	"time"
)

// Option wires a [Verifier], [ServiceVerifier] or [ServiceTokenSource] into
// the program; what operators set belongs in [Config] and [ServiceConfig].
// An option that does not apply to a constructor is ignored by it.
type Option func(*options)

type options struct {
	client *http.Client
	now    func() time.Time
	logger *slog.Logger
}

func newOptions(opts []Option) options {
	o := options{now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	if o.client == nil {
		o.client = &http.Client{Timeout: jwksFetchTimeout}
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// WithHTTPClient sets the client a [Verifier] fetches the key set with; in a
// service, the kernel's discovery-backed client, which resolves the host of
// [Config.JWKSURL] to healthy Auth service instances. Nil, or no option,
// means a plain client with a 10s timeout.
func WithHTTPClient(c *http.Client) Option {
	return func(o *options) { o.client = c }
}

// WithClock sets the clock tokens are checked and minted against. Nil, or no
// option, means [time.Now]. Tests pass a fake clock.
func WithClock(now func() time.Time) Option {
	return func(o *options) {
		if now != nil {
			o.now = now
		}
	}
}

// WithLogger sets where a [Verifier] reports key set fetches that failed and
// key sets that changed. Nil, or no option, discards.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}
