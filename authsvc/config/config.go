// Package config is the Auth service's configuration: its sections, their
// defaults (default.yaml, embedded in the binary) and their rules.
package config

import (
	"cmp"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"portcullis.dev/authsvc/internal/keys"
	"portcullis.dev/kernel/authn"
	kconfig "portcullis.dev/kernel/config"
	"portcullis.dev/kernel/service"
)

//go:embed default.yaml
var defaults []byte

// Config is the Auth service's configuration.
type Config struct {
	service.Config `koanf:",squash"`
	// Auth says how the service issues tokens: the `auth:` section. (The
	// kernel's `tokens:` section says how they are verified.)
	Auth Auth `koanf:"auth"`
	// Keys holds the key-encryption key: the `keys:` section.
	Keys Keys `koanf:"keys"`
}

// Validate checks what spans sections: the access tokens the service
// issues must be ones verifiers accept.
func (c Config) Validate() error {
	if limit := cmp.Or(c.Tokens.MaxLifetime, authn.DefaultMaxLifetime); c.Auth.AccessTTL > limit {
		return fmt.Errorf("auth.access_ttl %s is more than tokens.max_lifetime %s: every access token would be refused", c.Auth.AccessTTL, limit)
	}
	return nil
}

// Auth is the `auth:` section: what the tokens the service issues carry
// and how long they live.
type Auth struct {
	// Issuer is the `iss` of access tokens; it must equal tokens.issuer of
	// every verifier.
	Issuer string `koanf:"issuer" validate:"required"`
	// Audience is the `aud` of access tokens; it must equal
	// tokens.audience of every verifier.
	Audience string `koanf:"audience" validate:"required"`
	// AccessTTL is the lifetime of an access token.
	AccessTTL time.Duration `koanf:"access_ttl" validate:"min=1m,max=24h"`
	// RefreshIdleTTL ends a session that has not been refreshed for this
	// long.
	RefreshIdleTTL time.Duration `koanf:"refresh_idle_ttl" validate:"min=1m"`
	// RefreshAbsoluteTTL ends every session this long after login, however
	// recently it was refreshed.
	RefreshAbsoluteTTL time.Duration `koanf:"refresh_absolute_ttl" validate:"min=1m"`
	// SigningAlg is the algorithm of new signing keys: EdDSA or ES256.
	SigningAlg string `koanf:"signing_alg" validate:"oneof=EdDSA ES256"`
	// RotationInterval makes a new signing key active when the current one
	// is this old. Zero turns scheduled rotation off (RotateSigningKey
	// still rotates).
	RotationInterval time.Duration `koanf:"rotation_interval" validate:"min=0"`
	// TOTPIssuer is the issuer name authenticator apps show next to a code.
	TOTPIssuer string `koanf:"totp_issuer" validate:"required"`
	// RequireVerifiedEmail refuses to log in users whose email is not
	// verified.
	RequireVerifiedEmail bool `koanf:"require_verified_email"`
	// TOTPLockout limits wrong TOTP codes per user: the `totp_lockout:`
	// subsection.
	TOTPLockout TOTPLockout `koanf:"totp_lockout"`
}

// TOTPLockout says when wrong TOTP codes lock a user's second factor. A
// right password resets Identity's own lockout, so this is what stops
// someone who has the password from guessing codes.
type TOTPLockout struct {
	// Threshold wrong codes within Window lock the user's TOTP. There is no
	// off switch: six digits do not survive unlimited guessing.
	Threshold int `koanf:"threshold" validate:"min=1,max=100"`
	// Window is how long after the first counted wrong code later ones
	// still count with it.
	Window time.Duration `koanf:"window" validate:"min=1s,max=24h"`
	// Duration is how long every code of the user is refused, right ones
	// included.
	Duration time.Duration `koanf:"duration" validate:"min=1s,max=24h"`
}

// Validate checks the rules between fields.
func (a Auth) Validate() error {
	if a.RefreshIdleTTL > a.RefreshAbsoluteTTL {
		return errors.New("auth.refresh_idle_ttl must not exceed auth.refresh_absolute_ttl")
	}
	if a.RotationInterval > 0 && a.RotationInterval < 2*keys.DefaultPublishAhead {
		// The next key is published PublishAhead before it signs, and that
		// is at most half the interval: less than an hour would not give
		// verifiers, which keep a key set for minutes, time to fetch it.
		return fmt.Errorf("auth.rotation_interval must be 0 (off) or at least %s", 2*keys.DefaultPublishAhead)
	}
	return nil
}

// Keys is the `keys:` section.
type Keys struct {
	// KEK is the key-encryption key, 32 bytes in standard base64, that
	// encrypts signing keys and TOTP secrets at rest (AES-256-GCM). Losing
	// it makes them unreadable; `go tool task up` generates one.
	KEK kconfig.Secret `koanf:"kek" validate:"required"`
}

// Validate checks that the KEK decodes to 32 bytes.
func (k Keys) Validate() error {
	if _, err := k.Bytes(); err != nil {
		return err
	}
	return nil
}

// Bytes returns the decoded KEK.
func (k Keys) Bytes() ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(k.KEK.Value())
	if err != nil || len(b) != 32 {
		return nil, fmt.Errorf("keys.kek must be 32 bytes in standard base64")
	}
	return b, nil
}

// Load reads the configuration from the defaults, the file args or the
// environment names, and the environment (see default.yaml).
func Load(args []string) (Config, error) {
	return kconfig.Load[Config](defaults, kconfig.WithArgs(args))
}
