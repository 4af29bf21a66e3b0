package database

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"
)

// Client is a service's database: its Ent client and the pool under it.
type Client[E any] struct {
	// Ent is the service's generated Ent client, bound to the pool.
	Ent E
	// DB is the pool, pinned to Schema, for what Ent does not do.
	DB *sql.DB
	// Schema is the service's schema.
	Schema string

	cfg Config
}

// NewEntClient opens the service's pool ([Open]), applies its migrations
// ([Migrate]) and returns its Ent client on top, in one call. newEnt builds
// the generated client from a driver, usually
//
//	func(d dialect.Driver) *ent.Client { return ent.NewClient(ent.Driver(d)) }
//
// A nil migrations applies none.
func NewEntClient[E any](ctx context.Context, cfg Config, migrations fs.FS, newEnt func(dialect.Driver) E, opts ...Option) (*Client[E], error) {
	db, err := Open(ctx, cfg, opts...)
	if err != nil {
		return nil, err
	}
	if migrations != nil {
		if _, err := Migrate(ctx, db, cfg.Schema, migrations, opts...); err != nil {
			_ = db.Close()
			return nil, err
		}
	}
	return &Client[E]{
		Ent:    newEnt(entsql.OpenDB(dialect.Postgres, db)),
		DB:     db,
		Schema: cfg.Schema,
		cfg:    cfg.withDefaults(),
	}, nil
}

// Ready reports whether the database answers a ping within the configured
// ping timeout; it is the service's readiness check.
func (c *Client[E]) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.PingTimeout)
	defer cancel()
	// A ping that finds a pooled connection dead (the server restarted, or
	// ended its sessions) drops it and fails, and database/sql tries no
	// other: each probe would fail on the next dead one, and a healthy
	// database look down for as many probes as the pool kept idle.
	var err error
	for range c.cfg.MaxIdleConns + 1 {
		if err = c.DB.PingContext(ctx); !errors.Is(err, driver.ErrBadConn) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("ping schema %q: %w", c.Schema, redact(err, c.cfg.DSN.Value()))
	}
	return nil
}

// Close waits for the queries in flight (connections in use) to finish,
// then closes the pool. If ctx ends first, Close closes the pool anyway —
// connections still in use are closed as they are released — and returns an
// error wrapping ctx's. Call it after the server has stopped taking requests.
func (c *Client[E]) Close(ctx context.Context) error {
	return closeDB(ctx, c.DB, c.Schema)
}

// closeDB exists because [sql.DB.Close] does not wait for connections in
// use: it would return while a query is still running on one of them.
func closeDB(ctx context.Context, db *sql.DB, schema string) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var waitErr error
	for db.Stats().InUse > 0 && waitErr == nil {
		select {
		case <-ctx.Done():
			waitErr = fmt.Errorf("close schema %q: %d queries still running: %w", schema, db.Stats().InUse, ctx.Err())
		case <-tick.C:
		}
	}
	if err := db.Close(); err != nil {
		return errors.Join(waitErr, fmt.Errorf("close schema %q: %w", schema, err))
	}
	return waitErr
}
