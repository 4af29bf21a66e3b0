package audit

import (
	"database/sql"
	"hash/fnv"
	"time"

	"portcullis.dev/auditsvc/ent"
)

// Service is the audit log of one schema. It is safe for concurrent use, and
// any number of Services (replicas) may share a schema. The zero value is not
// usable; call [NewService].
type Service struct {
	db      *sql.DB
	ent     *ent.Client
	cfg     Config
	lockKey int64
	now     func() time.Time
}

// Option configures a [Service].
type Option func(*Service)

// WithConfig sets the limits; without it every limit has its default.
func WithConfig(cfg Config) Option { return func(s *Service) { s.cfg = cfg.withDefaults() } }

// WithClock sets where record times come from; nil means time.Now.
func WithClock(now func() time.Time) Option {
	return func(s *Service) {
		if now != nil {
			s.now = now
		}
	}
}

// NewService returns the audit log kept in schema, reached through db (a
// pool pinned to schema, as database.NewEntClient makes) and client (the Ent
// client on the same pool).
func NewService(db *sql.DB, client *ent.Client, schema string, opts ...Option) *Service {
	s := &Service{db: db, ent: client, cfg: Config{}.withDefaults(), lockKey: chainLockKey(schema), now: time.Now}
	for _, o := range opts {
		o(s)
	}
	return s
}

// chainLockKey is the advisory lock that serialises appends to schema's
// chain. Advisory locks are database-wide, so the key names the schema: two
// platforms (or tests) on one database never wait for each other.
func chainLockKey(schema string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("portcullis:audit:chain:" + schema))
	return int64(h.Sum64())
}
