package keys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"portcullis.dev/authsvc/ent"
	"portcullis.dev/authsvc/ent/signingkey"
	"portcullis.dev/kernel/logging"
	"portcullis.dev/kernel/outbox"
	auditv1 "portcullis.dev/proto/audit/v1"
)

// lockSigningKeys is the transaction-scoped advisory lock that serialises
// key generation and rotation across replicas: two replicas starting
// together must not both make a first key, nor both rotate when the
// interval is up.
const lockSigningKeys int64 = 0x617574686b657973 // "authkeys"

// DefaultPublishAhead is how long before a scheduled rotation the next key
// is published: longer than verifiers keep a key set (the kernel's
// verifier five minutes, the JWKS answer's max-age one), so that every
// verifier knows a key before its first token.
const DefaultPublishAhead = time.Hour

// DefaultCacheTTL is how long a replica keeps using the active key it
// read before reading it again, so a rotation made by another replica
// reaches it this fast.
const DefaultCacheTTL = 5 * time.Second

// Config says how a [Keyring] makes and keeps keys.
type Config struct {
	// Alg is the algorithm of new keys, [AlgEdDSA] or [AlgES256].
	Alg string
	// RotationInterval makes a new key active when the current one is
	// this old; zero never rotates on a schedule.
	RotationInterval time.Duration
	// Retention is how long a retired key stays published: the lifetime
	// of an access token plus the verifiers' leeway, so every token it
	// signed has expired everywhere before it leaves the JWKS. The keyring
	// keeps it CacheTTL longer, since other replicas may sign with it that
	// long after it retired.
	Retention time.Duration
	// CacheTTL bounds how stale the active key a replica signs with may
	// be. Zero means [DefaultCacheTTL].
	CacheTTL time.Duration
	// PublishAhead is how long a scheduled rotation publishes the next
	// key before it signs with it; zero means [DefaultPublishAhead], and
	// it is at most half the RotationInterval. Rotate does not wait: a
	// key rotated by hand (after a compromise) signs at once.
	PublishAhead time.Duration
}

// Keyring is the service's set of signing keys in the database. It is safe
// for concurrent use; create it with [NewKeyring].
type Keyring struct {
	db     *ent.Client
	sealer *Sealer
	cfg    Config
	now    func() time.Time

	logger *slog.Logger

	mu          sync.Mutex
	active      *Key
	activeUntil time.Time // when the next key takes over; zero while none is due
	loadedAt    time.Time
	publishAt   time.Time // when to try again to publish the next key, after a failure
}

// KeyringOption configures a [Keyring].
type KeyringOption func(*Keyring)

// WithLogger sets the keyring's logger, which hears of a next key that
// could not be published; nil, the default, discards.
func WithLogger(l *slog.Logger) KeyringOption {
	return func(r *Keyring) { r.logger = logging.OrDiscard(l) }
}

// NewKeyring returns a keyring over db's signing_keys table; now is its
// clock (nil means time.Now).
func NewKeyring(db *ent.Client, sealer *Sealer, cfg Config, now func() time.Time, opts ...KeyringOption) *Keyring {
	if now == nil {
		now = time.Now
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.PublishAhead == 0 {
		cfg.PublishAhead = DefaultPublishAhead
	}
	if cfg.RotationInterval > 0 {
		cfg.PublishAhead = min(cfg.PublishAhead, cfg.RotationInterval/2)
	}
	r := &Keyring{db: db, sealer: sealer, cfg: cfg, now: now, logger: logging.OrDiscard(nil)}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Init makes the first key when there is none. It is safe to call from
// every replica at once.
func (r *Keyring) Init(ctx context.Context) error {
	_, err := r.Active(ctx)
	return err
}

// Active returns the key to sign with: the newest key activated and not
// retired, read at most [Config.CacheTTL] ago. It makes the first key,
// and publishes the next one [Config.PublishAhead] before
// [Config.RotationInterval] is up (or, if it is late, PublishAhead before
// the next key takes over: it is never used sooner); the next key takes
// over by itself when its time comes.
func (r *Keyring) Active(ctx context.Context) (*Key, error) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.active != nil && now.Sub(r.loadedAt) < r.cfg.CacheTTL && (!r.nextDue(r.active.CreatedAt, r.activeUntil, now) || now.Before(r.publishAt)) &&
		(r.activeUntil.IsZero() || now.Before(r.activeUntil)) {
		return r.active, nil
	}
	row, err := r.load(ctx, r.db, now)
	if err != nil {
		return nil, err
	}
	switch {
	case row == nil:
		if row, err = r.rotate(ctx, "first_key", now, func(cur *ent.SigningKey) bool { return cur == nil }); err != nil {
			return nil, err
		}
	case r.nextDue(activation(row), until(row), now):
		// Activated when the interval is up, or, if that is too soon for
		// verifiers to have seen it (this service was down), a full
		// PublishAhead from now.
		at := maxTime(activation(row).Add(r.cfg.RotationInterval), now.Add(r.cfg.PublishAhead))
		next, err := r.rotate(ctx, "scheduled", at, func(cur *ent.SigningKey) bool {
			return cur == nil || r.nextDue(activation(cur), until(cur), now)
		})
		if err != nil {
			// The current key signs on meanwhile (it stays valid and
			// published); the next call past CacheTTL tries again.
			r.logger.ErrorContext(ctx, "cannot publish the next signing key; signing on with the current one", "kid", row.ID, "err", err)
			r.publishAt = now.Add(r.cfg.CacheTTL)
			break
		}
		row = next
	}
	k, err := r.open(row)
	if err != nil {
		return nil, err
	}
	r.active, r.activeUntil, r.loadedAt = k, until(row), now
	return k, nil
}

// nextDue reports whether the next key must be published now: the key
// that began to sign at since has no successor yet (retires is zero), and
// its interval ends within PublishAhead.
func (r *Keyring) nextDue(since, retires, now time.Time) bool {
	return r.cfg.RotationInterval > 0 && retires.IsZero() &&
		!now.Before(since.Add(r.cfg.RotationInterval-r.cfg.PublishAhead))
}

// activation is when row began, or begins, to sign.
func activation(row *ent.SigningKey) time.Time {
	if row.ActivatesAt != nil {
		return *row.ActivatesAt
	}
	return row.CreatedAt
}

// until is when row stops signing, zero when no successor is set.
func until(row *ent.SigningKey) time.Time {
	if row.RetiredAt != nil {
		return *row.RetiredAt
	}
	return time.Time{}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Rotate makes a new key active now and retires the current one (and a
// next key published ahead, if any), which stay published for
// [Config.Retention].
func (r *Keyring) Rotate(ctx context.Context) (*Key, error) {
	return r.rotateNow(ctx, "requested")
}

// Revoke makes a new key active now and deletes every other one, private
// halves and all, after a compromise: the JWKS drops them at once, and the
// tokens they signed stop verifying as soon as verifiers fetch it again.
// Other replicas sign with the revoked key until they reload the active
// one, [Config.CacheTTL] at most; those tokens fail the same way.
func (r *Keyring) Revoke(ctx context.Context) (*Key, error) {
	return r.rotateNow(ctx, reasonCompromised)
}

// reasonCompromised is the reason of a rotation by [Keyring.Revoke].
const reasonCompromised = "compromised"

func (r *Keyring) rotateNow(ctx context.Context, reason string) (*Key, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	row, err := r.rotate(ctx, reason, now, func(*ent.SigningKey) bool { return true })
	if err != nil {
		return nil, err
	}
	k, err := r.open(row)
	if err != nil {
		return nil, err
	}
	r.active, r.activeUntil, r.loadedAt = k, time.Time{}, now
	return k, nil
}

// load returns the key that signs at now, or nil when there is none.
func (r *Keyring) load(ctx context.Context, c *ent.Client, now time.Time) (*ent.SigningKey, error) {
	row, err := c.SigningKey.Query().
		Where(
			signingkey.Or(signingkey.RetiredAtIsNil(), signingkey.RetiredAtGT(now)),
			signingkey.Or(signingkey.ActivatesAtIsNil(), signingkey.ActivatesAtLTE(now)),
		).
		Order(ent.Desc(signingkey.FieldCreatedAt)).
		First(ctx)
	if ent.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("keys: load active key: %w", err)
	}
	return row, nil
}

func (r *Keyring) open(row *ent.SigningKey) (*Key, error) {
	der, err := r.sealer.Open(row.PrivateKeySealed, "signing_key:"+row.ID)
	if err != nil {
		return nil, fmt.Errorf("keys: key %s: %w", row.ID, err)
	}
	return parseKey(der, activation(row))
}

// rotate makes a new key under the advisory lock, if need, given the row
// that signs now read under the lock, says it is still needed (another
// replica may have done it meanwhile). The new key signs from at: now, or
// later for a key published ahead, and every key signing then retires at
// at. It returns the row that signs now.
func (r *Keyring) rotate(ctx context.Context, reason string, at time.Time, need func(cur *ent.SigningKey) bool) (_ *ent.SigningKey, err error) {
	tx, err := r.db.Tx(ctx)
	if err != nil {
		return nil, fmt.Errorf("keys: rotate: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if _, err = tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", lockSigningKeys); err != nil {
		return nil, fmt.Errorf("keys: lock: %w", err)
	}
	now := r.now()
	cur, err := r.load(ctx, tx.Client(), now)
	if err != nil {
		return nil, err
	}
	if !need(cur) {
		_ = tx.Rollback()
		return cur, nil
	}
	k, der, err := generateKey(r.cfg.Alg, now)
	if err != nil {
		return nil, err
	}
	sealed, err := r.sealer.Seal(der, "signing_key:"+k.ID)
	if err != nil {
		return nil, err
	}
	jwk, err := json.Marshal(k.Public)
	if err != nil {
		return nil, err
	}
	if cur == nil {
		at = now // nothing signs meanwhile
	}
	at = maxTime(at, now)
	meta := map[string]string{"kid": k.ID, "alg": k.Alg, "reason": reason}
	if reason == reasonCompromised {
		// Every other key goes, private halves and all, its tokens with it:
		// nothing is left to retire or prune.
		revoked, err := deleteAllKeys(ctx, tx)
		if err != nil {
			return nil, fmt.Errorf("keys: revoke: %w", err)
		}
		meta["revoked_kids"] = strings.Join(revoked, ",")
	} else {
		// The keys that sign, or would, at at retire then: the current one,
		// and, rotated by hand, a next key published ahead.
		if _, err = tx.SigningKey.Update().Where(signingkey.Or(signingkey.RetiredAtIsNil(), signingkey.RetiredAtGT(at))).
			SetRetiredAt(at).Save(ctx); err != nil {
			return nil, fmt.Errorf("keys: retire: %w", err)
		}
		// Keys retired so long ago that every token they signed has
		// expired are dropped, private halves and all.
		if _, err = tx.SigningKey.Delete().Where(signingkey.RetiredAtLT(now.Add(-r.published()))).Exec(ctx); err != nil {
			return nil, fmt.Errorf("keys: prune: %w", err)
		}
	}
	create := tx.SigningKey.Create().SetID(k.ID).SetAlg(k.Alg).SetPublicJwk(jwk).SetPrivateKeySealed(sealed).SetCreatedAt(now)
	if at.After(now) {
		create.SetActivatesAt(at)
		meta["activates_at"] = at.UTC().Format(time.RFC3339)
	}
	row, err := create.Save(ctx)
	if err != nil {
		return nil, fmt.Errorf("keys: store: %w", err)
	}
	if cur != nil {
		meta["previous_kid"] = cur.ID
	}
	if err = outbox.Enqueue(ctx, tx, outbox.NewEvent(ctx, "auth.signing_key.rotated", "signing_key:"+k.ID, auditv1.Outcome_OUTCOME_SUCCESS, meta)); err != nil {
		return nil, err
	}
	if err = tx.Commit(); err != nil {
		return nil, fmt.Errorf("keys: rotate: %w", err)
	}
	if at.After(now) {
		cur.RetiredAt = &at // it signs until the new key takes over
		return cur, nil
	}
	return row, nil
}

// deleteAllKeys deletes every signing key in one statement and returns
// their IDs.
func deleteAllKeys(ctx context.Context, tx *ent.Tx) ([]string, error) {
	rows, err := tx.QueryContext(ctx, `DELETE FROM signing_keys RETURNING id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// published is how long a retired key stays in the JWKS: Retention after
// the last token any replica may have signed with it.
func (r *Keyring) published() time.Duration { return r.cfg.Retention + r.cfg.CacheTTL }

// JWKS returns the published keys, read from the database rather than a
// cache, so a key any replica signs with is in every replica's answer:
// newest first, the next key published ahead of its use, the active key,
// then the retired keys still within [Config.Retention] and
// [Config.CacheTTL].
func (r *Keyring) JWKS(ctx context.Context) ([]JWK, error) {
	now := r.now()
	rows, err := r.db.SigningKey.Query().
		Where(signingkey.Or(signingkey.RetiredAtIsNil(), signingkey.RetiredAtGT(now.Add(-r.published())))).
		Order(ent.Desc(signingkey.FieldCreatedAt)).
		All(ctx)
	if err != nil {
		return nil, fmt.Errorf("keys: JWKS: %w", err)
	}
	out := make([]JWK, 0, len(rows))
	for _, row := range rows {
		var j JWK
		if err := json.Unmarshal(row.PublicJwk, &j); err != nil {
			return nil, fmt.Errorf("keys: key %s: %w", row.ID, err)
		}
		out = append(out, j)
	}
	if len(out) == 0 {
		return nil, errors.New("keys: no signing key yet")
	}
	return out, nil
}
