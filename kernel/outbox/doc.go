// Package outbox delivers a service's audit events to the Audit service
// without losing one, even while Audit is down: the transactional outbox
// pattern.
//
// A service writes each event with [Enqueue] in the same database
// transaction as the change it describes, into an outbox table in its own
// schema (declared in its Ent schema with [Schema], so the service's
// migrations create it). Either both commit or neither does. A [Relay] in
// the same service wakes on PostgreSQL LISTEN/NOTIFY (and a slow timer as a
// backstop), sends pending events in batches to the Audit service's Record,
// and marks them delivered only when Record succeeded. Delivery is at least
// once; every event carries an idempotency key, so Audit stores it exactly
// once. An event Audit refuses as invalid is isolated from its batch and set
// aside, logged and counted, so it cannot hold up the events behind it.
package outbox
