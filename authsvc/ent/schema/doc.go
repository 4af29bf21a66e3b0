// Package schema is the Auth service's Ent schema, in the PostgreSQL schema
// `auth`: signing keys, sessions with their refresh tokens, TOTP
// credentials, and the outbox of audit events.
package schema
