package registry

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"

	"github.com/hashicorp/consul/api"
)

// catalogFilter selects the services registered by [Registry.Register] with
// Connect services: others' tags are not Connect service names.
const catalogFilter = `"` + MetaConnectServices + `" in ServiceMeta`

// CatalogWatcher holds which Consul service serves each Connect service, as
// learned from the registrations [Registry.Register] made, kept current by
// Consul blocking queries on the catalog. The gateway uses it to route a
// procedure such as /portcullis.identity.v1.IdentityService/GetUser to the
// Consul service "identity", and a [Resolver] per Consul service to find its
// healthy instances.
//
// A route exists while any instance of the service is registered, healthy
// or not: health is the Resolver's business. A Connect service that several
// Consul services claim — a service renamed while both names run — routes
// to the first by name, the same on every gateway replica, and each change
// of the routes while that lasts logs a warning. Like a Resolver, a
// CatalogWatcher serves what it last knew while Consul is unreachable.
//
// A CatalogWatcher is safe for concurrent use. The zero value is not usable;
// call [Registry.WatchCatalog], and [CatalogWatcher.Close] when done.
type CatalogWatcher struct {
	w watch[routeTable]
}

// routeTable is one answer of the catalog query.
type routeTable struct {
	// routes maps each Connect service to the Consul service serving it.
	routes map[string]string
	// conflicts lists, for a Connect service that several Consul services
	// claim, all of them in order; routes holds the first.
	conflicts map[string][]string
}

func (t routeTable) equal(u routeTable) bool {
	return maps.Equal(t.routes, u.routes) && maps.EqualFunc(t.conflicts, u.conflicts, slices.Equal)
}

// WatchCatalog starts watching the catalog for the Connect services
// registered instances serve.
func (r *Registry) WatchCatalog(opts ...WatchOption) *CatalogWatcher {
	o := r.watchOptions(opts)
	c := &CatalogWatcher{}
	c.w = watch[routeTable]{
		query: func(q *api.QueryOptions) (routeTable, *api.QueryMeta, error) {
			q.Filter = catalogFilter
			services, meta, err := r.client.Catalog().Services(q)
			if err != nil {
				return routeTable{}, nil, fmt.Errorf("catalog services: %w", err)
			}
			return newRouteTable(services), meta, nil
		},
		equal:  routeTable.equal,
		merge:  mergeRoutes,
		size:   func(t routeTable) int { return len(t.routes) },
		agent:  r.agentID,
		opts:   o,
		logger: o.logger.With(slog.String("watch", "catalog")),
	}
	c.w.changed = func(t routeTable) {
		c.w.logger.Debug("routes changed", slog.Int("connect_services", len(t.routes)))
		for connect, services := range t.conflicts {
			c.w.logger.Warn("several Consul services serve one Connect service; routing to the first",
				slog.String("connect_service", connect), slog.Any("consul_services", services))
		}
	}
	c.w.start()
	return c
}

// mergeRoutes returns newer's routes plus those of earlier's Connect
// services that newer does not route.
func mergeRoutes(earlier, newer routeTable) routeTable {
	merged := routeTable{routes: maps.Clone(newer.routes), conflicts: newer.conflicts}
	if merged.routes == nil {
		merged.routes = map[string]string{}
	}
	for connect, service := range earlier.routes {
		if _, ok := merged.routes[connect]; !ok {
			merged.routes[connect] = service
		}
	}
	return merged
}

// newRouteTable builds the routes from the catalog's services and their
// tags. A Connect service claimed by several Consul services goes to the
// first by name.
func newRouteTable(services map[string][]string) routeTable {
	t := routeTable{routes: map[string]string{}}
	for _, name := range slices.Sorted(maps.Keys(services)) {
		for _, connect := range services[name] {
			first, taken := t.routes[connect]
			switch {
			case !taken:
				t.routes[connect] = name
			case first != name:
				if t.conflicts == nil {
					t.conflicts = map[string][]string{}
				}
				if len(t.conflicts[connect]) == 0 {
					t.conflicts[connect] = []string{first}
				}
				t.conflicts[connect] = append(t.conflicts[connect], name)
			}
		}
	}
	return t
}

// Routes returns, for each Connect service, the Consul service that serves
// it, as Consul last reported; none before the first answer (see
// [CatalogWatcher.Wait]). The map is shared: callers must not modify it.
func (c *CatalogWatcher) Routes() map[string]string { return c.w.load().routes }

// Updates returns a channel that receives a value after the routes change,
// including to none. Notifications coalesce: read [CatalogWatcher.Routes]
// after receiving. The channel has one buffer slot and is meant for one
// receiver; it is never closed.
func (c *CatalogWatcher) Updates() <-chan struct{} { return c.w.updates }

// Wait blocks until Consul has answered the first query and returns nil. If
// ctx ends first it returns ctx's error, joined with Consul's last error if
// there was one; if the watcher is closed first, [ErrClosed].
func (c *CatalogWatcher) Wait(ctx context.Context) error {
	if err := c.w.wait(ctx, false); err != nil {
		return fmt.Errorf("watch catalog: %w", err)
	}
	return nil
}

// Close stops watching and returns once the watch has stopped. Routes keeps
// returning the last known routes. Calling Close again does nothing.
func (c *CatalogWatcher) Close() { c.w.close() }
