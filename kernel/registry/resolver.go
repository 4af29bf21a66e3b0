package registry

import (
	"context"
	"fmt"
	"log/slog"
	"slices"

	"github.com/hashicorp/consul/api"
)

// Resolver returns the healthy instances of one service, kept current by
// Consul blocking queries on the service's health. Reading them costs no
// Consul call. While Consul is unreachable it keeps returning the instances
// it last knew, and logs a warning once per outage; it catches up by itself
// when Consul answers again, including after a Consul restart.
//
// A Resolver is safe for concurrent use. The zero value is not usable; call
// [Registry.Resolver], and [Resolver.Close] when done.
type Resolver struct {
	service string
	w       watch[[]Instance]
}

// Resolver starts watching the healthy instances of the Consul service
// named service: those whose every health check, the node's included,
// passes.
func (r *Registry) Resolver(service string, opts ...WatchOption) *Resolver {
	o := r.watchOptions(opts)
	res := &Resolver{service: service}
	res.w = watch[[]Instance]{
		query: func(q *api.QueryOptions) ([]Instance, *api.QueryMeta, error) {
			entries, meta, err := r.client.Health().Service(service, "", true, q)
			if err != nil {
				return nil, nil, fmt.Errorf("healthy instances of %q: %w", service, err)
			}
			instances := make([]Instance, 0, len(entries))
			for _, e := range entries {
				instances = append(instances, instanceFromEntry(e))
			}
			slices.SortFunc(instances, compareInstances)
			return instances, meta, nil
		},
		equal:  equalInstances,
		merge:  mergeInstances,
		size:   func(i []Instance) int { return len(i) },
		agent:  r.agentID,
		opts:   o,
		logger: o.logger.With(slog.String("resolve", service)),
	}
	res.w.changed = func(i []Instance) {
		res.w.logger.Debug("instances changed", slog.Int("healthy", len(i)))
	}
	res.w.start()
	return res
}

// Service returns the name of the service the resolver watches.
func (r *Resolver) Service() string { return r.service }

// Instances returns the healthy instances Consul last reported, ordered by
// address and port; none before the first answer (see [Resolver.Wait]).
// The slice is shared: callers must not modify it or its instances.
func (r *Resolver) Instances() []Instance { return r.w.load() }

// Updates returns a channel that receives a value after the set of
// instances changes — including to empty, when the last instance leaves.
// Notifications coalesce: one value may stand for several changes, so read
// [Resolver.Instances] after receiving. The channel has one buffer slot and
// is meant for one receiver; it is never closed.
func (r *Resolver) Updates() <-chan struct{} { return r.w.updates }

// Wait blocks until Consul has answered the resolver's first query —
// possibly with no instances — and returns nil. If that query failed, it
// returns Consul's error at once, as it does for as long as no query has
// been answered: a call to a service no one has resolved yet fails fast
// while Consul is unreachable, rather than wait out its deadline. If ctx
// ends first it returns ctx's error, joined with Consul's last error if
// there was one; if the resolver is closed first, [ErrClosed].
func (r *Resolver) Wait(ctx context.Context) error {
	if err := r.w.wait(ctx, true); err != nil {
		return fmt.Errorf("resolve %q: %w", r.service, err)
	}
	return nil
}

// Close stops watching and returns once the watch has stopped. Instances
// keeps returning the last known set. Calling Close again does nothing.
func (r *Resolver) Close() { r.w.close() }
