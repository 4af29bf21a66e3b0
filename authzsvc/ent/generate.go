// Package ent is the Authz service's generated Ent client, with its
// versioned migrations embedded.
package ent

import (
	"embed"
	"io/fs"
)

// GOWORK=off: ent resolves its imports like goimports, and in the workspace
// every service has a package named ent to mistake for entgo.io/ent.
// GOMAXPROCS=1: ent runs goimports on its files in parallel, one of which
// once came out of a CI run without its database/sql import.
//go:generate env GOWORK=off GOMAXPROCS=1 go tool ent generate --feature sql/versioned-migration,sql/execquery ./schema
//go:generate go run ./newmigration -name=${MIGRATION_NAME}

//go:embed migrations
var migrations embed.FS

// Migrations returns the migrations directory as the root of an fs.FS, the
// form database.NewEntClient takes.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the embedded directory is there at compile time
	}
	return sub
}
