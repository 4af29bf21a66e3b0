// Package authz is the Authz service's domain: role-based access control
// with roles, the permissions granted to them, and the bindings that give
// users roles everywhere or on one resource; and the decisions other
// services ask for on every request.
//
// Decisions come from an in-memory index per subject ([Service.Check]),
// loaded from the database on first use. Every change to roles, grants or
// bindings sends a PostgreSQL NOTIFY in the same transaction; every replica
// LISTENs ([Service.Run]) and drops the entries the change touches, so no
// replica answers from stale data for longer than the notification takes. A
// replica whose notification connection is down cannot know what changed,
// so it drops its whole index and answers from the database until the
// connection is back.
//
// [Handler] serves the portcullis.authz.v1 contract over a [Service].
package authz
