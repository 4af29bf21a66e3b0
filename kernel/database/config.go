package database

import (
	"cmp"
	"errors"
	"fmt"
	"regexp"
	"time"

	"portcullis.dev/kernel/config"
)

// Config is a service's database section (`database:` in its
// config/default.yaml). Zero durations and counts mean the defaults below.
type Config struct {
	// DSN is the PostgreSQL connection string, as a URL
	// (postgres://user:pass@host:5432/db?sslmode=disable) or key=value pairs.
	DSN config.DSN `koanf:"dsn" validate:"required"`
	// Schema is the service's own schema; it is created when missing.
	Schema string `koanf:"schema" validate:"required"`
	// MaxOpenConns caps the pool. Zero means 10.
	MaxOpenConns int `koanf:"max_open_conns" validate:"min=0,max=10000"`
	// MaxIdleConns is how many idle connections the pool keeps, at most
	// MaxOpenConns: an operator who lowers only max_open_conns (a small
	// server, PgBouncer) lowers both. Zero means MaxOpenConns.
	MaxIdleConns int `koanf:"max_idle_conns" validate:"min=0,max=10000"`
	// ConnMaxLifetime recycles connections after this long, so a failover
	// or a new role password takes effect. Zero means 30m.
	ConnMaxLifetime time.Duration `koanf:"conn_max_lifetime" validate:"min=0"`
	// ConnMaxIdleTime closes connections idle for this long. Zero means 5m.
	ConnMaxIdleTime time.Duration `koanf:"conn_max_idle_time" validate:"min=0"`
	// ConnectTimeout bounds how long start-up waits for an unreachable
	// database, retrying with backoff. Zero means 30s.
	ConnectTimeout time.Duration `koanf:"connect_timeout" validate:"min=0"`
	// PingTimeout bounds one readiness check. Zero means 2s.
	PingTimeout time.Duration `koanf:"ping_timeout" validate:"min=0"`
}

// Defaults of the zero Config fields.
const (
	DefaultMaxOpenConns    = 10
	DefaultConnMaxLifetime = 30 * time.Minute
	DefaultConnMaxIdleTime = 5 * time.Minute
	DefaultConnectTimeout  = 30 * time.Second
	DefaultPingTimeout     = 2 * time.Second
)

// withDefaults returns c with its zero fields set to the defaults.
func (c Config) withDefaults() Config {
	c.MaxOpenConns = cmp.Or(c.MaxOpenConns, DefaultMaxOpenConns)
	c.MaxIdleConns = min(cmp.Or(c.MaxIdleConns, c.MaxOpenConns), c.MaxOpenConns)
	c.ConnMaxLifetime = cmp.Or(c.ConnMaxLifetime, DefaultConnMaxLifetime)
	c.ConnMaxIdleTime = cmp.Or(c.ConnMaxIdleTime, DefaultConnMaxIdleTime)
	c.ConnectTimeout = cmp.Or(c.ConnectTimeout, DefaultConnectTimeout)
	c.PingTimeout = cmp.Or(c.PingTimeout, DefaultPingTimeout)
	return c
}

// schemaName is what a schema or role may be called: a plain lower-case
// identifier, so it never needs quoting and cannot smuggle SQL.
var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// MaxSchemaLen is the longest schema name a service may have. PostgreSQL
// names may be 63 bytes, but the notification channels named after a
// schema must fit in as many: the outbox's portcullis_outbox_<schema>, 18
// bytes more, would otherwise fail every audited write.
const MaxSchemaLen = 45

// Validate checks the fields the config loader cannot check alone.
func (c Config) Validate() error {
	var errs []error
	if c.Schema != "" && (!schemaName.MatchString(c.Schema) || len(c.Schema) > MaxSchemaLen) {
		errs = append(errs, fmt.Errorf("database.schema: %q is not a lower-case identifier (a-z, 0-9, _) of at most %d bytes", c.Schema, MaxSchemaLen))
	}
	if c.Schema == "public" || c.Schema == "pg_catalog" || c.Schema == "information_schema" {
		errs = append(errs, fmt.Errorf("database.schema: %q is shared; give the service a schema of its own", c.Schema))
	}
	return errors.Join(errs...)
}
