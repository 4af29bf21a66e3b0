package database

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/lib/pq"
)

// Option configures [Open], [Migrate] and [NewEntClient].
type Option func(*options)

type options struct {
	logger      *slog.Logger
	lockTimeout time.Duration
}

// WithLogger logs connection retries and applied migrations. A nil logger,
// the default, discards.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// defaultLockTimeout is [WithLockTimeout]'s zero value.
const defaultLockTimeout = 5 * time.Second

// WithLockTimeout bounds how long one try of a migration waits for a lock
// on a table another transaction uses; zero means 5s. See [Migrate].
func WithLockTimeout(d time.Duration) Option {
	return func(o *options) { o.lockTimeout = d }
}

func newOptions(opts []Option) options {
	o := options{}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	if o.lockTimeout <= 0 {
		o.lockTimeout = defaultLockTimeout
	}
	return o
}

// Open opens a pool of connections to cfg.DSN whose search_path is pinned to
// cfg.Schema, creating the schema when it is missing. A database that is not
// reachable yet is retried with backoff until cfg.ConnectTimeout; then Open
// fails with the last error. The pool settings of cfg are applied.
func Open(ctx context.Context, cfg Config, opts ...Option) (*sql.DB, error) {
	o := newOptions(opts)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Schema == "" {
		return nil, errors.New("database.schema: required")
	}
	cfg = cfg.withDefaults()
	dsn, err := pinSearchPath(cfg.DSN.Value(), cfg.Schema)
	if err != nil {
		return nil, fmt.Errorf("open schema %q: %w", cfg.Schema, redact(err, cfg.DSN.Value()))
	}
	connector, err := newConnector(dsn)
	if err != nil {
		return nil, fmt.Errorf("open schema %q: %w", cfg.Schema, redact(err, cfg.DSN.Value()))
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(cfg.MaxOpenConns)
	db.SetMaxIdleConns(cfg.MaxIdleConns)
	db.SetConnMaxLifetime(cfg.ConnMaxLifetime)
	db.SetConnMaxIdleTime(cfg.ConnMaxIdleTime)

	if err := waitReachable(ctx, db, cfg, o.logger); err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := ensureSchema(ctx, db, cfg.Schema); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("create schema %q: %w", cfg.Schema, redact(err, cfg.DSN.Value()))
	}
	return db, nil
}

// handshakeTimeout bounds the opening of a connection, TCP and PostgreSQL's
// start-up, when the DSN sets no connect_timeout: lib/pq otherwise waits
// without end on a server that accepts and says nothing (one that hangs,
// or a proxy in front of a dead one), whatever the context.
const handshakeTimeout = 10 * time.Second

// newConnector returns lib/pq's connector for dsn, with handshakeTimeout
// and a dialer that notices a vanished server.
func newConnector(dsn string) (*pq.Connector, error) {
	cfg, err := pq.NewConfig(dsn)
	if err != nil {
		return nil, err
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = handshakeTimeout
	}
	c, err := pq.NewConnectorConfig(cfg)
	if err != nil {
		return nil, err
	}
	c.Dialer(&keepAliveDialer{net.Dialer{KeepAliveConfig: net.KeepAliveConfig{
		Enable: true, Idle: 5 * time.Second, Interval: 5 * time.Second, Count: 3,
	}}})
	return c, nil
}

// lib/pq dials with the caller's context only through a DialerContext:
// net.Dialer's DialContext has a pointer receiver, so only a
// *keepAliveDialer is one.
var _ pq.DialerContext = (*keepAliveDialer)(nil)

// keepAliveDialer probes an idle connection after 5s, and gives it up
// after three unanswered probes 5s apart. lib/pq waits on a query's socket
// until the server answers, even once the query's context has ended (it
// only asks the server to cancel): across a network partition, or with a
// server host that died, Go's default probes would hold the query, and its
// pool connection, for over two minutes.
type keepAliveDialer struct{ net.Dialer }

func (d keepAliveDialer) Dial(network, address string) (net.Conn, error) {
	return d.Dialer.Dial(network, address)
}

func (d keepAliveDialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, network, address)
}

// waitReachable pings until the database answers, backing off from 100ms to
// 2s, for at most cfg.ConnectTimeout.
func waitReachable(parent context.Context, db *sql.DB, cfg Config, logger *slog.Logger) error {
	ctx, cancel := context.WithTimeout(parent, cfg.ConnectTimeout)
	defer cancel()
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		pingCtx, cancelPing := context.WithTimeout(ctx, cfg.PingTimeout)
		err := db.PingContext(pingCtx)
		cancelPing()
		if err == nil {
			return nil
		}
		err = redact(err, cfg.DSN.Value())
		if !retryable(err) {
			return fmt.Errorf("connect for schema %q: %w", cfg.Schema, err)
		}
		logger.WarnContext(ctx, "database not reachable yet; retrying", "schema", cfg.Schema, "attempt", attempt, "retry_in", backoff.String(), "err", err)
		select {
		case <-ctx.Done():
			if parent.Err() != nil { // stopped, not timed out
				return fmt.Errorf("connect for schema %q: stopped after %d attempts: %w", cfg.Schema, attempt, errors.Join(err, context.Cause(parent)))
			}
			return fmt.Errorf("connect for schema %q: gave up after %s and %d attempts: %w", cfg.Schema, cfg.ConnectTimeout, attempt, err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// retryable reports whether a failed ping may succeed later: the server is
// down or starting, not refusing our credentials or our database name.
func retryable(err error) bool {
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		switch pqErr.Code.Class() {
		case "28", "3D": // invalid authorization, invalid catalog (database) name
			return false
		}
		// 57P03 cannot_connect_now: the server is starting up.
		return true
	}
	return true
}

// ensureSchema creates schema unless it exists. It checks first because
// CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege on the database even
// when the schema is there, which a least-privilege role does not have.
func ensureSchema(ctx context.Context, db *sql.DB, schema string) error {
	var exists bool
	if err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, schema).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	_, err := db.ExecContext(ctx, "CREATE SCHEMA IF NOT EXISTS "+pq.QuoteIdentifier(schema))
	// Replicas starting together race here: IF NOT EXISTS is not atomic in
	// PostgreSQL, and the loser gets a unique violation on pg_namespace.
	var pqErr *pq.Error
	if errors.As(err, &pqErr) && (pqErr.Code == "23505" || pqErr.Code == "42P06") {
		return nil
	}
	return err
}

// pinSearchPath adds search_path=schema to dsn, as a URL query parameter or a
// key=value pair. lib/pq sends unknown parameters as run-time parameters in
// the start-up message, so every connection the pool opens (or reopens) gets
// it, without a per-connection SET that a reset could undo.
func pinSearchPath(dsn, schema string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", errors.New("the DSN is not a valid URL")
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String(), nil
	}
	return strings.TrimSpace(dsn) + " search_path=" + schema, nil
}

// redact removes the DSN's password from err's text, should a driver ever
// echo the connection string back.
func redact(err error, dsn string) error {
	if err == nil {
		return nil
	}
	pw := dsnPassword(dsn)
	if pw == "" || !strings.Contains(err.Error(), pw) {
		return err
	}
	return &redactedError{msg: strings.ReplaceAll(err.Error(), pw, "[REDACTED]"), err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

func dsnPassword(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		pw, _ := u.User.Password()
		return pw
	}
	for _, field := range strings.Fields(dsn) {
		if v, ok := strings.CutPrefix(field, "password="); ok {
			return strings.Trim(v, "'")
		}
	}
	return ""
}
