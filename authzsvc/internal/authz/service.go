package authz

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/google/uuid"
	"github.com/lib/pq"

	"portcullis.dev/authzsvc/ent"
	"portcullis.dev/kernel/logging"
)

// Built-in role names. The service creates these roles on start; they
// cannot be changed or deleted.
const (
	// AdminRole grants everything (`*`).
	AdminRole = "admin"
	// UserRole is the role of an ordinary user. It grants nothing: what an
	// ordinary user may do to themselves (read and update their profile,
	// list their own roles and permissions, manage their own sessions) is
	// self-service, which the kernel lets through without a permission
	// (the contracts' subject_field), so a permission here would only
	// widen access to other users. It exists so deployments and other
	// services can name "an ordinary user" with a role that always exists.
	UserRole = "user"
)

var builtIns = []struct {
	name, description string
	permissions       []string
}{
	{AdminRole, "Administrators: every permission of every service.", []string{Superuser}},
	{UserRole, "Ordinary users: self-service only, no permission beyond it.", nil},
}

// Service is the Authz domain: role administration and decisions. The
// zero value is not usable; call [New].
type Service struct {
	client  *ent.Client
	channel string
	dsn     string
	cfg     Config
	cache   *decisionCache
	audit   AuditRecorder
	logger  *slog.Logger
	now     func() time.Time
}

// Option configures a [Service].
type Option func(*Service)

// WithLogger sets the logger. A nil logger discards.
func WithLogger(l *slog.Logger) Option { return func(s *Service) { s.logger = logging.OrDiscard(l) } }

// WithAuditRecorder sets where audit events go; the default is the outbox
// ([OutboxRecorder]).
func WithAuditRecorder(r AuditRecorder) Option { return func(s *Service) { s.audit = r } }

// channelName is a PostgreSQL identifier the schema name is part of.
var channelName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// New returns the domain over client, whose pool is pinned to schema; dsn
// is the same database's connection string, for the notification
// connection [Service.Run] keeps. Call [Service.Bootstrap] before serving.
func New(client *ent.Client, schema, dsn string, cfg Config, opts ...Option) (*Service, error) {
	// Changes are announced on a channel per schema, so that services
	// sharing a database (and tests sharing one) never hear each other.
	channel := "authz_changes_" + schema
	if !channelName.MatchString(channel) {
		return nil, fmt.Errorf("authz: schema %q makes an invalid notification channel name", schema)
	}
	cfg = cfg.withDefaults()
	s := &Service{
		client:  client,
		channel: channel,
		dsn:     dsn,
		cfg:     cfg,
		cache:   newDecisionCache(cfg.MaxSubjects),
		audit:   OutboxRecorder{},
		logger:  logging.Discard(),
		now:     time.Now,
	}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// Bootstrap creates the built-in roles and binds the configured bootstrap
// admins, idempotently: replicas starting together each run it, and the
// unique constraints make the second a no-op.
func (s *Service) Bootstrap(ctx context.Context) error {
	err := s.inTx(ctx, func(tx *ent.Tx, ch *changes) error {
		var adminID uuid.UUID
		for _, b := range builtIns {
			now := s.now()
			res, err := tx.ExecContext(ctx, `INSERT INTO roles (id, name, description, built_in, created_at, updated_at)
				VALUES ($1, $2, $3, true, $4, $4) ON CONFLICT (name) DO NOTHING`, uuid.New(), b.name, b.description, now)
			if err != nil {
				return err
			}
			created := affected(res) > 0
			var id uuid.UUID
			var builtIn bool
			if err := queryRow(ctx, tx, `SELECT id, built_in FROM roles WHERE name = $1`, []any{b.name}, &id, &builtIn); err != nil {
				return err
			}
			if !builtIn {
				return fmt.Errorf("a custom role is named %q, which is reserved for a built-in role; rename it", b.name)
			}
			// Granted again on every start, so that a built-in role
			// tampered with in the database is repaired, and the repair
			// recorded.
			granted, err := s.grantReturning(ctx, tx, id, b.permissions, now)
			if err != nil {
				return err
			}
			if len(granted) > 0 {
				ch.roles = append(ch.roles, id)
			}
			switch {
			case created:
				if err := s.audit.Record(ctx, tx, AuditEvent{Action: ActionRoleCreated, Target: "role:" + id.String(),
					Metadata: withPermissions(map[string]string{"name": b.name, "built_in": "true"}, granted)}); err != nil {
					return err
				}
			case len(granted) > 0:
				if err := s.audit.Record(ctx, tx, AuditEvent{Action: ActionPermissionsGranted, Target: "role:" + id.String(),
					Metadata: withPermissions(map[string]string{"name": b.name, "built_in": "true", "reason": "restored"}, granted)}); err != nil {
					return err
				}
			}
			if b.name == AdminRole {
				adminID = id
			}
		}
		for _, user := range s.cfg.BootstrapAdmins {
			if err := checkUserID(user); err != nil {
				return fmt.Errorf("bootstrap admin: %w", err)
			}
			if _, created, err := s.bind(ctx, tx, ch, user, adminID, AdminRole, ""); err != nil {
				return err
			} else if created {
				s.logger.InfoContext(ctx, "bootstrap admin bound", "user_id", user)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("authz: create built-in roles: %w", err)
	}
	return nil
}

// changes are what a transaction changed, announced to every replica at
// commit.
type changes struct {
	users []string
	roles []uuid.UUID
}

// inTx runs fn in a transaction and announces its changes: NOTIFY inside
// the transaction, so that replicas hear of the change only if, and as
// soon as, it commits; and directly to this replica's cache after commit,
// so that its caller reads its own write without waiting for the
// notification to come back.
func (s *Service) inTx(ctx context.Context, fn func(tx *ent.Tx, ch *changes) error) (err error) {
	tx, err := s.client.Tx(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	ch := &changes{}
	if err := fn(tx, ch); err != nil {
		return err
	}
	for _, u := range ch.users {
		if err := s.notify(ctx, tx, "user:"+u); err != nil {
			return err
		}
	}
	for _, r := range ch.roles {
		if err := s.notify(ctx, tx, "role:"+r.String()); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	s.apply(ch)
	return nil
}

func (s *Service) notify(ctx context.Context, tx *ent.Tx, payload string) error {
	_, err := tx.ExecContext(ctx, `SELECT pg_notify($1, $2)`, s.channel, payload)
	return err
}

func (s *Service) apply(ch *changes) {
	if len(ch.users) > 0 {
		s.cache.invalidateSubjects(ch.users...)
	}
	for _, r := range ch.roles {
		s.cache.invalidateRole(r)
	}
}

// querier is an Ent client or transaction (the sql/execquery feature).
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// queryRow scans the one row of query into dest; no row is
// [errNoRows].
func queryRow(ctx context.Context, q querier, query string, args []any, dest ...any) error {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return err
		}
		return errNoRows
	}
	if err := rows.Scan(dest...); err != nil {
		return err
	}
	return rows.Close()
}

var errNoRows = errors.New("no rows")

func affected(res interface{ RowsAffected() (int64, error) }) int64 {
	n, _ := res.RowsAffected()
	return n
}

// pqCode is the SQLSTATE of a PostgreSQL error in err's chain, or "".
func pqCode(err error) string {
	var pe *pq.Error
	if errors.As(err, &pe) {
		return string(pe.Code)
	}
	return ""
}

const (
	uniqueViolation     = "23505"
	foreignKeyViolation = "23503"
)
