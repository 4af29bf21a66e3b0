// Command newmigration writes a migration for whatever the Ent schema in
// ../schema has that ../migrations does not; it does nothing when they agree.
// `go generate ./ent/...` runs it.
package main

import (
	"context"
	"fmt"
	"os"

	"portcullis.dev/auditsvc/ent/migrate"
	"portcullis.dev/kernel/database"
)

func main() {
	if err := database.RunMigrationGenerator(context.Background(), "migrations", migrate.Tables, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "newmigration:", err)
		os.Exit(1)
	}
}
