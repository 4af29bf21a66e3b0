// Package database gives a service its own PostgreSQL connection pool, pinned
// to the service's own schema, with its versioned migrations applied and an
// Ent client on top.
//
// Many services share one PostgreSQL instance; each lives in its own schema
// with its own pool, and may run as its own role that can touch only that
// schema ([EnsureRole]). [Open] creates the schema when it is missing and pins
// search_path on every pooled connection, so unqualified names always resolve
// inside the service's schema. [Migrate] applies the migrations embedded in
// the service binary in one transaction under an advisory lock keyed by the
// schema, so replicas that start together never race, and refuses to start
// when a migration file no longer matches its checksum. [NewEntClient] does
// all of that in one call and returns a [Client] with a readiness check and a
// graceful Close.
//
// Errors name the schema and the operation. A DSN's password never appears
// in an error or a log line.
package database
