// Package schema is the Authz service's Ent schema: roles, the permissions
// granted to them, the bindings that give users roles, and the outbox of
// audit events.
package schema
