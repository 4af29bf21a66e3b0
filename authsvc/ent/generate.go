// Package ent is the Auth service's generated Ent client, with its
// versioned migrations embedded. The schema is in ./schema.
package ent

import "embed"

// GOWORK=off: ent resolves its imports like goimports, and in the workspace
// every service has a package named ent to mistake for entgo.io/ent.
// GOMAXPROCS=1: ent runs goimports on its files in parallel, one of which
// once came out of a CI run without its database/sql import.
//go:generate env GOWORK=off GOMAXPROCS=1 go tool ent generate --feature sql/versioned-migration,sql/execquery,sql/lock,sql/upsert ./schema
//go:generate go run ./newmigration -name=${MIGRATION_NAME}

// migrations are the versioned migrations of the schema in ./schema.
//
//go:embed migrations
var migrations embed.FS
