package edge

import (
	"time"

	"portcullis.dev/proto/access"
	optionsv1 "portcullis.dev/proto/options/v1"

	"portcullis.dev/gateway/config"
)

// route is what the gateway knows of one procedure from the contracts: who
// may call it, how long a call may take, and whether it is a credential
// endpoint. Where it goes is not here: the Consul catalog says that at the
// time of the call.
type route struct {
	procedure string
	// service is the fully-qualified Connect service, the key of the
	// catalog's routes.
	service string
	rule    access.Rule
	timeout time.Duration
	// deadline is what the service is told of timeout.
	deadline *deadlineCap
	// clientStream means the request body is a stream, which is never
	// buffered for a retry.
	clientStream bool
	credential   bool
}

// routable reports whether the route may be called from outside at all.
// Everything but PUBLIC and AUTHENTICATED — INTERNAL, and a procedure
// without an access option — is refused as if it did not exist.
func (r *route) routable() bool {
	return r.rule.Level == optionsv1.Access_ACCESS_PUBLIC || r.rule.Level == optionsv1.Access_ACCESS_AUTHENTICATED
}

// buildRoutes makes the route of every procedure the contracts define. It
// is not a routing table: it holds the contracts' access options, which
// the gateway, like the services, reads instead of keeping lists.
func buildRoutes(cfg config.Config) (map[string]*route, error) {
	overrides, err := cfg.Routes.ParseTimeouts()
	if err != nil {
		return nil, err
	}
	credential := make(map[string]bool, len(cfg.RateLimit.CredentialProcedures))
	for _, p := range cfg.RateLimit.CredentialProcedures {
		credential[p] = true
	}
	routes := make(map[string]*route)
	for _, p := range access.All() {
		md := p.Method
		r := &route{
			procedure:    p.Name,
			service:      string(md.Parent().FullName()),
			rule:         p.Rule,
			timeout:      cfg.Routes.UnaryTimeout,
			clientStream: md.IsStreamingClient(),
			credential:   credential[p.Name],
		}
		if md.IsStreamingClient() || md.IsStreamingServer() {
			r.timeout = cfg.Routes.StreamTimeout
		}
		if d, ok := overrides["/"+r.service+"/"]; ok {
			r.timeout = d
		}
		if d, ok := overrides[p.Name]; ok {
			r.timeout = d
		}
		r.deadline = newDeadlineCap(r.timeout)
		routes[p.Name] = r
	}
	return routes, nil
}
