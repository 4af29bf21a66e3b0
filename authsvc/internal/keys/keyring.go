package keys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"portcullis.dev/authsvc/ent"
	"portcullis.dev/authsvc/ent/signingkey"
	"portcullis.dev/kernel/outbox"
	auditv1 "portcullis.dev/proto/audit/v1"
)

// lockSigningKeys is the transaction-scoped advisory lock that serialises
// key generation and rotation across replicas: two replicas starting
// together must not both make a first key, nor both rotate when the
// interval is up.
const lockSigningKeys int64 = 0x617574686b657973 // "authkeys"

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
}

// Keyring is the service's set of signing keys in the database. It is safe
// for concurrent use; create it with [NewKeyring].
type Keyring struct {
	db     *ent.Client
	sealer *Sealer
	cfg    Config
	now    func() time.Time

	mu       sync.Mutex
	active   *Key
	loadedAt time.Time
}

// NewKeyring returns a keyring over db's signing_keys table; now is its
// clock (nil means time.Now).
func NewKeyring(db *ent.Client, sealer *Sealer, cfg Config, now func() time.Time) *Keyring {
	if now == nil {
		now = time.Now
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	return &Keyring{db: db, sealer: sealer, cfg: cfg, now: now}
}

// Init makes the first key when there is none. It is safe to call from
// every replica at once.
func (r *Keyring) Init(ctx context.Context) error {
	_, err := r.Active(ctx)
	return err
}

// Active returns the key to sign with: the newest key not retired, read
// at most [Config.CacheTTL] ago. It makes the first key, and rotates
// when [Config.RotationInterval] is up.
func (r *Keyring) Active(ctx context.Context) (*Key, error) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.active != nil && now.Sub(r.loadedAt) < r.cfg.CacheTTL && !r.due(r.active, now) {
		return r.active, nil
	}
	k, err := r.load(ctx)
	if err != nil {
		return nil, err
	}
	if k == nil || r.due(k, now) {
		reason := "scheduled"
		if k == nil {
			reason = "first_key"
		}
		if k, err = r.rotate(ctx, reason, func(cur *ent.SigningKey) bool { return cur == nil || r.due(&Key{CreatedAt: cur.CreatedAt}, now) }); err != nil {
			return nil, err
		}
	}
	r.active, r.loadedAt = k, now
	return k, nil
}

func (r *Keyring) due(k *Key, now time.Time) bool {
	return r.cfg.RotationInterval > 0 && !now.Before(k.CreatedAt.Add(r.cfg.RotationInterval))
}

// Rotate makes a new key active now and retires the current one, which
// stays published for [Config.Retention].
func (r *Keyring) Rotate(ctx context.Context) (*Key, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k, err := r.rotate(ctx, "requested", func(*ent.SigningKey) bool { return true })
	if err != nil {
		return nil, err
	}
	r.active, r.loadedAt = k, r.now()
	return k, nil
}

// load returns the active key, or nil when there is none.
func (r *Keyring) load(ctx context.Context) (*Key, error) {
	row, err := r.db.SigningKey.Query().
		Where(signingkey.RetiredAtIsNil()).
		Order(ent.Desc(signingkey.FieldCreatedAt)).
		First(ctx)
	if ent.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("keys: load active key: %w", err)
	}
	return r.open(row)
}

func (r *Keyring) open(row *ent.SigningKey) (*Key, error) {
	der, err := r.sealer.Open(row.PrivateKeySealed, "signing_key:"+row.ID)
	if err != nil {
		return nil, fmt.Errorf("keys: key %s: %w", row.ID, err)
	}
	return parseKey(der, row.CreatedAt)
}

// rotate makes a new key active under the advisory lock, if need, given
// the current active row read under the lock, says it is still needed
// (another replica may have rotated meanwhile); otherwise it returns the
// current key.
func (r *Keyring) rotate(ctx context.Context, reason string, need func(cur *ent.SigningKey) bool) (_ *Key, err error) {
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
	cur, err := tx.SigningKey.Query().Where(signingkey.RetiredAtIsNil()).Order(ent.Desc(signingkey.FieldCreatedAt)).First(ctx)
	if err != nil && !ent.IsNotFound(err) {
		return nil, fmt.Errorf("keys: rotate: %w", err)
	}
	if !need(cur) {
		_ = tx.Rollback()
		return r.open(cur)
	}
	now := r.now()
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
	if _, err = tx.SigningKey.Update().Where(signingkey.RetiredAtIsNil()).SetRetiredAt(now).Save(ctx); err != nil {
		return nil, fmt.Errorf("keys: retire: %w", err)
	}
	// Keys retired so long ago that every token they signed has expired
	// are dropped, private halves and all.
	if _, err = tx.SigningKey.Delete().Where(signingkey.RetiredAtLT(now.Add(-r.published()))).Exec(ctx); err != nil {
		return nil, fmt.Errorf("keys: prune: %w", err)
	}
	if err = tx.SigningKey.Create().SetID(k.ID).SetAlg(k.Alg).SetPublicJwk(jwk).SetPrivateKeySealed(sealed).SetCreatedAt(now).Exec(ctx); err != nil {
		return nil, fmt.Errorf("keys: store: %w", err)
	}
	meta := map[string]string{"kid": k.ID, "alg": k.Alg, "reason": reason}
	if cur != nil {
		meta["previous_kid"] = cur.ID
	}
	if err = outbox.Enqueue(ctx, tx, outbox.NewEvent(ctx, "auth.signing_key.rotated", "signing_key:"+k.ID, auditv1.Outcome_OUTCOME_SUCCESS, meta)); err != nil {
		return nil, err
	}
	if err = tx.Commit(); err != nil {
		return nil, fmt.Errorf("keys: rotate: %w", err)
	}
	return k, nil
}

// published is how long a retired key stays in the JWKS: Retention after
// the last token any replica may have signed with it.
func (r *Keyring) published() time.Duration { return r.cfg.Retention + r.cfg.CacheTTL }

// JWKS returns the published keys, read from the database rather than a
// cache, so a key any replica signs with is in every replica's answer:
// the active key first, then the retired keys still within
// [Config.Retention] and [Config.CacheTTL], newest first.
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
