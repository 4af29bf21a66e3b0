// Package registry is how Portcullis services find each other through
// Consul.
//
// A service registers each of its instances with [Registry.Register] when it
// starts serving and removes it with [Registry.Deregister] before it stops.
// The registration carries the instance's version and the fully-qualified
// Connect services it serves (such as portcullis.identity.v1.IdentityService),
// and an HTTP health check against the instance's readiness endpoint, so
// Consul takes an instance that stops being ready out of rotation, and
// removes one that stays critical — a crashed instance that never
// deregistered — after [Config.DeregisterCriticalAfter].
//
// A [Resolver] holds the healthy instances of one service, kept current by
// Consul blocking queries; reading them costs no Consul call. A
// [CatalogWatcher] holds which Consul service serves each Connect service,
// so the gateway can route a procedure to its owner. Both keep serving what
// they last knew while Consul is unreachable and catch up by themselves when
// it answers again.
//
// # Blocking queries
//
// Both watchers follow Consul's rules for blocking queries
// (https://developer.hashicorp.com/consul/api-docs/features/blocking):
//
//   - an index that goes backwards — after a Consul restart or a snapshot
//     restore — restarts the loop from index 0, and so does a failed query,
//     since Consul may have restarted with an index still below ours, which
//     would hold our query for its whole wait time;
//   - an index of 0 in an answer is replaced by 1, since waiting on 0 does
//     not block;
//   - queries start at most every 100ms, so a result that changes constantly
//     cannot make the loop spin;
//   - the wait time is jittered, so that watchers started together do not
//     wake together;
//   - failed queries are retried with exponential backoff and jitter.
//
// An answer replaces what a watcher holds whenever it differs, an empty
// answer included: when the last instance of a service leaves, its
// Resolver holds none. The exception is the settling time after an outage
// or a restart ([WithSettle]): a restarted agent that lost its state knows
// nothing until each instance registers again ([Registry.KeepRegistered],
// which every kernel server runs) and passes a check, so for a few check
// intervals answers only add to what was known.
package registry
