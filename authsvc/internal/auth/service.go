// Package auth is the Auth service's domain: logins checked against the
// Identity service and a TOTP second factor, sessions and their rotating
// refresh tokens with reuse detection (RFC 9700 section 4.14), access
// tokens signed with the keyring's active key, and TOTP enrollment.
// Errors are the domain values in errors.go; the handler maps them to
// Connect codes.
package auth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"portcullis.dev/authsvc/ent"
	"portcullis.dev/authsvc/internal/keys"
	identityv1 "portcullis.dev/proto/identity/v1"
)

// Identity is the part of the Identity service's client Login and
// EnrollTOTP need: the generated identityv1connect.IdentityServiceClient is
// one.
type Identity interface {
	VerifyCredentials(context.Context, *connect.Request[identityv1.VerifyCredentialsRequest]) (*connect.Response[identityv1.VerifyCredentialsResponse], error)
	VerifyPassword(context.Context, *connect.Request[identityv1.VerifyPasswordRequest]) (*connect.Response[identityv1.VerifyPasswordResponse], error)
}

// Config is what the domain needs from the service's configuration.
type Config struct {
	Issuer, Audience     string
	AccessTTL            time.Duration
	RefreshIdleTTL       time.Duration
	RefreshAbsoluteTTL   time.Duration
	TOTPIssuer           string
	RequireVerifiedEmail bool
	// TOTPLockout limits wrong TOTP codes per user; zero fields take the
	// defaults.
	TOTPLockout TOTPLockout
}

// Service is the Auth domain. It is safe for concurrent use; create it
// with [New].
type Service struct {
	db       *ent.Client
	keyring  *keys.Keyring
	sealer   *keys.Sealer
	identity Identity
	cfg      Config
	now      func() time.Time
}

// Option configures a [Service].
type Option func(*Service)

// WithClock sets the service's clock; nil, or no option, means time.Now.
func WithClock(now func() time.Time) Option {
	return func(s *Service) {
		if now != nil {
			s.now = now
		}
	}
}

// New returns the domain over db, signing with keyring, sealing TOTP
// secrets with sealer and checking passwords with identity.
func New(db *ent.Client, keyring *keys.Keyring, sealer *keys.Sealer, identity Identity, cfg Config, opts ...Option) *Service {
	cfg.TOTPLockout = cfg.TOTPLockout.withDefaults()
	s := &Service{db: db, keyring: keyring, sealer: sealer, identity: identity, cfg: cfg, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Keyring returns the signing keys the service uses.
func (s *Service) Keyring() *keys.Keyring { return s.keyring }

// randomID returns n random bytes, base64url-encoded.
func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// withTx runs fn in a transaction, committing when it returns nil.
func (s *Service) withTx(ctx context.Context, fn func(tx *ent.Tx) error) error {
	tx, err := s.db.Tx(ctx)
	if err != nil {
		return fmt.Errorf("auth: begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("auth: commit: %w", err)
	}
	return nil
}
