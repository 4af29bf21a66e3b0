package database

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"

	"ariga.io/atlas/sql/migrate"
	"entgo.io/ent/dialect"
	entschema "entgo.io/ent/dialect/sql/schema"
	"github.com/lib/pq"

	"portcullis.dev/kernel/config"
)

// GenerateMigration writes a new migration named name into the directory at
// dirPath (creating it) that takes the schema its migrations describe to the
// one tables (an Ent client's migrate.Tables) describe, and updates its
// atlas.sum. It replays the existing migrations in a throw-away schema of the
// PostgreSQL at devURL to learn where they lead. It writes nothing and
// returns false when they already match.
func GenerateMigration(ctx context.Context, devURL, dirPath, name string, tables []*entschema.Table) (bool, error) {
	if err := os.MkdirAll(dirPath, 0o755); err != nil {
		return false, err
	}
	dir, err := migrate.NewLocalDir(dirPath)
	if err != nil {
		return false, fmt.Errorf("open migration directory %s: %w", dirPath, err)
	}
	before, err := dir.Files()
	if err != nil {
		return false, err
	}
	if err := diff(ctx, devURL, dir, name, tables); err != nil {
		return false, err
	}
	after, err := dir.Files()
	if err != nil {
		return false, err
	}
	return len(after) > len(before), nil
}

// ErrMigrationMissing is returned by [CheckMigrations] when the Ent schema has
// changes no migration describes.
var ErrMigrationMissing = errors.New("the Ent schema and the migrations disagree")

// CheckMigrations replays migrations in a throw-away schema of the
// PostgreSQL at devURL and compares the result with tables. It returns an
// error wrapping [ErrMigrationMissing], with the SQL that would be missing,
// when they differ. Each service calls it from a test, so CI fails when
// someone changes the Ent schema without generating a migration.
func CheckMigrations(ctx context.Context, devURL string, migrations fs.FS, tables []*entschema.Table) error {
	dir, err := memDir(migrations)
	if err != nil {
		return fmt.Errorf("read migrations: %w", err)
	}
	before, err := dir.Files()
	if err != nil {
		return err
	}
	if err := diff(ctx, devURL, dir, "missing", tables); err != nil {
		return err
	}
	after, err := dir.Files()
	if err != nil {
		return err
	}
	if len(after) > len(before) {
		return fmt.Errorf("%w; run `MIGRATION_NAME=<name> go tool task generate` to generate this migration:\n%s", ErrMigrationMissing, after[len(after)-1].Bytes())
	}
	return nil
}

func diff(ctx context.Context, devURL string, dir migrate.Dir, name string, tables []*entschema.Table) (err error) {
	scratch := "dev_" + rand.Text()[:12]
	scratch = lowerASCII(scratch)
	db, err := Open(ctx, Config{DSN: config.DSN(devURL), Schema: scratch, MaxOpenConns: 1})
	if err != nil {
		return fmt.Errorf("open the dev database: %w", err)
	}
	defer func() {
		_, dropErr := db.ExecContext(context.WithoutCancel(ctx), "DROP SCHEMA IF EXISTS "+pq.QuoteIdentifier(scratch)+" CASCADE")
		err = errors.Join(err, dropErr, db.Close())
	}()
	// From a URL with search_path, atlas scopes its driver to the scratch
	// schema: it plans unqualified names and ignores the other schemas.
	url, err := pinSearchPath(devURL, scratch)
	if err != nil {
		return err
	}
	m, err := entschema.NewMigrateURL(url,
		entschema.WithDir(dir),
		entschema.WithMigrationMode(entschema.ModeReplay),
		entschema.WithDialect(dialect.Postgres),
		entschema.WithFormatter(migrate.DefaultFormatter),
		entschema.WithDropColumn(true),
		entschema.WithDropIndex(true),
	)
	if err != nil {
		return fmt.Errorf("plan migration: %w", err)
	}
	if err := m.NamedDiff(ctx, name, tables...); err != nil {
		return fmt.Errorf("plan migration: %w", err)
	}
	return nil
}

func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// RunMigrationGenerator is the body of a service's `newmigration` command,
// run by `go generate` beside its Ent schema: it writes the migration that
// brings dirPath up to tables, if one is needed. args may hold the flag
// -name NAME (default "changes"); the dev database is
// PORTCULLIS_DEV_DATABASE_URL, else PORTCULLIS_TEST_DATABASE_URL, else the
// local PostgreSQL.
func RunMigrationGenerator(ctx context.Context, dirPath string, tables []*entschema.Table, args []string) error {
	fset := flag.NewFlagSet("newmigration", flag.ContinueOnError)
	name := fset.String("name", "changes", "name of the new migration")
	if err := fset.Parse(args); err != nil {
		return err
	}
	*name = cmp.Or(*name, "changes") // go:generate passes an unset $MIGRATION_NAME as ""

	devURL := cmp.Or(os.Getenv("PORTCULLIS_DEV_DATABASE_URL"), os.Getenv("PORTCULLIS_TEST_DATABASE_URL"), "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	wrote, err := GenerateMigration(ctx, devURL, dirPath, *name, tables)
	if err != nil {
		return err
	}
	if wrote {
		fmt.Fprintf(os.Stderr, "wrote a new migration to %s; review and commit it\n", dirPath)
	}
	return nil
}
