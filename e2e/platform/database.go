package platform

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/lib/pq"

	"portcullis.dev/kernel/database"
)

// EnsureDatabase creates the database dbURL names unless it exists,
// connecting to the server's `postgres` database to do so, and installs the
// extensions the services need in it (see [ensureExtensions]).
func EnsureDatabase(ctx context.Context, dbURL string) error {
	if err := ensureDatabase(ctx, dbURL); err != nil {
		return err
	}
	return ensureExtensions(ctx, dbURL)
}

// extensions are the PostgreSQL extensions the services use. A service's
// role owns only its schema and cannot create an extension, so the platform
// does it as the administrator of dbURL: pg_trgm backs Identity's trigram
// index for searching users by email or name. They go into public rather
// than into any one service's schema.
var extensions = []string{"pg_trgm"}

func ensureExtensions(ctx context.Context, dbURL string) error {
	db, err := sql.Open("postgres", dbURL)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer db.Close()
	for _, ext := range extensions {
		_, err := db.ExecContext(ctx, "CREATE EXTENSION IF NOT EXISTS "+pq.QuoteIdentifier(ext)+" WITH SCHEMA public")
		var pqErr *pq.Error
		// Two platforms starting on one database race to create it:
		// IF NOT EXISTS does not cover the loser, which sees a unique
		// violation on pg_extension instead.
		if errors.As(err, &pqErr) && (pqErr.Code == "23505" || pqErr.Code == "42710") {
			continue
		}
		if err != nil {
			return fmt.Errorf("create extension %s (it comes with PostgreSQL's contrib modules): %w", ext, err)
		}
	}
	return nil
}

func ensureDatabase(ctx context.Context, dbURL string) error {
	u, err := url.Parse(dbURL)
	if err != nil {
		return fmt.Errorf("database URL: not a valid URL")
	}
	name := strings.TrimPrefix(u.Path, "/")
	if name == "" {
		return fmt.Errorf("database URL names no database")
	}
	admin := *u
	admin.Path = "/postgres"
	db, err := sql.Open("postgres", admin.String())
	if err != nil {
		return err
	}
	defer db.Close()
	var exists bool
	if err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return fmt.Errorf("look up database %q on %s: %w", name, u.Host, err)
	}
	if exists {
		return nil
	}
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(name)); err != nil {
		var pqErr *pq.Error
		if errors.As(err, &pqErr) && pqErr.Code == "42P04" { // created meanwhile
			return nil
		}
		return fmt.Errorf("create database %q: %w", name, err)
	}
	return nil
}

// DropDatabase drops the database dbURL names, closing its connections.
func DropDatabase(ctx context.Context, dbURL string) error {
	u, err := url.Parse(dbURL)
	if err != nil {
		return fmt.Errorf("database URL: not a valid URL")
	}
	name := strings.TrimPrefix(u.Path, "/")
	admin := *u
	admin.Path = "/postgres"
	db, err := sql.Open("postgres", admin.String())
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err = db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+pq.QuoteIdentifier(name)+" WITH (FORCE)"); err != nil {
		return err
	}
	var errs []error
	for _, schema := range schemas {
		_, err := db.ExecContext(ctx, "DROP ROLE IF EXISTS "+pq.QuoteIdentifier(roleName(u, schema)))
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func roleName(dbURL *url.URL, schema string) string {
	return strings.TrimPrefix(dbURL.Path, "/") + "_" + schema
}

// schemas are the services' own schemas.
var schemas = map[string]string{"identitysvc": "identity", "authsvc": "auth", "authzsvc": "authz", "auditsvc": "audit"}

// serviceDSNs gives each service a role of its own that owns only its
// schema (database.EnsureRole), and returns each service's DSN: dbURL with
// that role's credentials. secret holds the roles' passwords.
func serviceDSNs(ctx context.Context, dbURL string, secret map[string]string) (map[string]string, error) {
	u, err := url.Parse(dbURL)
	if err != nil {
		return nil, errors.New("database URL: not a valid URL")
	}
	admin, err := sql.Open("postgres", dbURL)
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	dsns := map[string]string{}
	for service, schema := range schemas {
		// Roles are cluster-wide: name them after the database too, so two
		// platforms on one server never share (and re-password) a role.
		role, password := roleName(u, schema), secret[rolePasswordVar(service)]
		if err := database.EnsureRole(ctx, admin, role, password, schema); err != nil {
			return nil, err
		}
		su := *u
		su.User = url.UserPassword(role, password)
		dsns[service] = su.String()
	}
	return dsns, nil
}

// keysNeedTheirKEK refuses to start on a database whose Auth schema holds
// signing keys when stateDir keeps no secrets (secrets.env lost, or another
// PORTCULLIS_RUN_DIR) and none is passed in: a KEK made up now would not
// open them, and Auth would stop with an error that names no cause. A
// database the platform's role cannot read is left to the services.
func keysNeedTheirKEK(ctx context.Context, dbURL, stateDir string) error {
	path := secretsFile(stateDir)
	if path == "" || os.Getenv("PORTCULLIS_KEYS_KEK") != "" {
		return nil
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		return nil
	}
	db, err := sql.Open("postgres", dbURL)
	if err != nil {
		return nil
	}
	defer db.Close()
	var keys bool
	err = db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM `+pq.QuoteIdentifier(schemas["authsvc"])+`.signing_keys)`).Scan(&keys)
	if err != nil || !keys {
		return nil
	}
	u, _ := url.Parse(dbURL)
	return fmt.Errorf("the database holds signing keys sealed with a key-encryption key that %s does not have (lost, or another run directory): "+
		"restore that file, pass the key as PORTCULLIS_KEYS_KEK, or start over with `dropdb -U %s %s`",
		path, cmp.Or(u.User.Username(), "postgres"), strings.TrimPrefix(u.Path, "/"))
}
