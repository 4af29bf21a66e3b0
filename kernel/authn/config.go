package authn

import (
	"cmp"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"time"

	"portcullis.dev/kernel/config"
)

// Config is what an operator sets for a [Verifier] of access tokens: a
// service's `authn:` section. Zero durations, sizes and lists mean the
// defaults below.
type Config struct {
	// JWKSURL is where the Auth service publishes its keys, such as
	// http://authsvc/.well-known/jwks.json. The host may be a service name
	// that the HTTP client given with [WithHTTPClient] resolves.
	JWKSURL string `koanf:"jwks_url" validate:"required"`
	// Issuer is the exact `iss` access tokens must carry.
	Issuer string `koanf:"issuer" validate:"required"`
	// Audience must be one of the token's `aud` values.
	Audience string `koanf:"audience" validate:"required"`
	// Algorithms are the signature algorithms accepted, a subset of
	// [AlgEdDSA] and [AlgES256]. Nothing else is implemented, so neither
	// `none` nor an HMAC algorithm can ever be accepted. Empty means both.
	Algorithms []string `koanf:"algorithms" validate:"oneof=EdDSA ES256"`
	// Leeway is the clock skew tolerated when checking `exp`, `nbf` and
	// `iat`. Zero means 30s.
	Leeway time.Duration `koanf:"leeway" validate:"min=0,max=5m"`
	// RefreshInterval is the least time between two fetches of the key set
	// for an unknown `kid`, so a flood of tokens with made-up key IDs cannot
	// hammer the Auth service. Before a first key set, fetches start 250ms
	// apart and back off to it. Zero means 1s: after RotateSigningKey, the
	// tokens the new key signs are refused for at most that long by a verifier
	// that fetched the set just before.
	RefreshInterval time.Duration `koanf:"refresh_interval" validate:"min=0,max=1h"`
	// CacheTTL is how long a fetched key set is used before it is fetched
	// again, in the background; a shorter Cache-Control max-age from the
	// Auth service wins. Zero means 5m.
	CacheTTL time.Duration `koanf:"cache_ttl" validate:"min=0,max=24h"`
	// TokenCacheSize is how many verified tokens are remembered, until they
	// expire, so each one's signature is checked once. Zero means 10000.
	TokenCacheSize int `koanf:"token_cache_size" validate:"min=0,max=10000000"`
	// MaxLifetime is the longest an access token may live, from `iat` to
	// `exp`, which a token must both carry: a signing key stolen and
	// revoked cannot have minted tokens that outlive it by years. Zero
	// means 24h, the longest auth.access_ttl.
	MaxLifetime time.Duration `koanf:"max_lifetime" validate:"min=0,max=720h"`
}

// The signature algorithms (RFC 7518 section 3.1, RFC 8037 section 3.1) the
// package implements.
const (
	// AlgEdDSA is EdDSA with an Ed25519 key: the Auth service's default, and
	// the only algorithm of service tokens.
	AlgEdDSA = "EdDSA"
	// AlgES256 is ECDSA with P-256 and SHA-256.
	AlgES256 = "ES256"
)

// Defaults of the zero [Config] and [ServiceConfig] fields.
const (
	DefaultLeeway          = 30 * time.Second
	DefaultRefreshInterval = time.Second
	DefaultCacheTTL        = 5 * time.Minute
	DefaultTokenCacheSize  = 10000
	DefaultMaxLifetime     = 24 * time.Hour
	DefaultServiceTokenTTL = 60 * time.Second
)

// withDefaults returns c with its zero fields set to the defaults.
func (c Config) withDefaults() Config {
	if len(c.Algorithms) == 0 {
		c.Algorithms = []string{AlgEdDSA, AlgES256}
	}
	c.Leeway = cmp.Or(c.Leeway, DefaultLeeway)
	c.RefreshInterval = cmp.Or(c.RefreshInterval, DefaultRefreshInterval)
	c.CacheTTL = cmp.Or(c.CacheTTL, DefaultCacheTTL)
	c.TokenCacheSize = cmp.Or(c.TokenCacheSize, DefaultTokenCacheSize)
	c.MaxLifetime = cmp.Or(c.MaxLifetime, DefaultMaxLifetime)
	return c
}

// Validate checks c. The config loader calls it after the validate tags
// passed; [NewVerifier] calls it too, for a Config built in code.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &config.KeyError{Key: key, Err: fmt.Errorf(format, args...)})
	}
	if c.JWKSURL == "" {
		bad("jwks_url", "is required")
	} else if u, err := url.Parse(c.JWKSURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("jwks_url", "must be an absolute http or https URL, got %q", c.JWKSURL)
	}
	if c.Issuer == "" {
		bad("issuer", "is required")
	}
	if c.Audience == "" {
		bad("audience", "is required")
	}
	for i, alg := range c.Algorithms {
		if alg != AlgEdDSA && alg != AlgES256 {
			bad(fmt.Sprintf("algorithms[%d]", i), "must be %s or %s, got %q", AlgEdDSA, AlgES256, alg)
		}
	}
	if c.Leeway < 0 || c.RefreshInterval < 0 || c.CacheTTL < 0 || c.TokenCacheSize < 0 {
		bad("", "leeway, refresh_interval, cache_ttl and token_cache_size must not be negative")
	}
	return errors.Join(errs...)
}

// allows reports whether alg is among c's algorithms.
func (c Config) allows(alg string) bool { return slices.Contains(c.Algorithms, alg) }

// ServiceConfig is what an operator sets for service tokens, which
// [ServiceTokenSource] mints and [ServiceVerifier] checks. Its keys carry a
// service_ prefix so that a service may squash it into the same section as
// [Config]. Zero durations mean the defaults.
//
// Every service holds the same key, so any service can mint a token naming
// any other: the key proves "a Portcullis service", not which one. That is
// the price of needing nothing but configuration; keep the key as secret as
// a database password, and rotate it with ServicePreviousKeys. Mutual TLS
// with per-service certificates (SPIFFE IDs) is the upgrade path: it proves
// which service calls, and fits behind the same [Authenticator] interface.
type ServiceConfig struct {
	// ServiceKey is the platform service key: a base64-encoded 32-byte
	// Ed25519 seed, the same in every service. Generate one with
	// `head -c32 /dev/urandom | base64`.
	ServiceKey config.Secret `koanf:"service_key" validate:"required"`
	// ServicePreviousKeys are keys whose tokens are still accepted but
	// which never sign. To rotate: deploy the new key with the old one
	// here, then, once every service runs it, remove the old one.
	ServicePreviousKeys []config.Secret `koanf:"service_previous_keys"`
	// ServiceTokenTTL is the lifetime of a service token. Zero means 60s.
	ServiceTokenTTL time.Duration `koanf:"service_token_ttl" validate:"min=0,max=1h"`
	// ServiceLeeway is the clock skew tolerated when checking a service
	// token's times. Zero means 30s.
	ServiceLeeway time.Duration `koanf:"service_leeway" validate:"min=0,max=5m"`
}

// withDefaults returns c with its zero fields set to the defaults.
func (c ServiceConfig) withDefaults() ServiceConfig {
	c.ServiceTokenTTL = cmp.Or(c.ServiceTokenTTL, DefaultServiceTokenTTL)
	c.ServiceLeeway = cmp.Or(c.ServiceLeeway, DefaultLeeway)
	return c
}

// Validate checks c, including that the keys decode, without ever
// repeating a key in a message. The config loader calls it after the
// validate tags passed; the constructors call it too.
func (c ServiceConfig) Validate() error {
	var errs []error
	if c.ServiceKey == "" {
		errs = append(errs, &config.KeyError{Key: "service_key", Err: errors.New("is required")})
	} else if _, err := parseServiceKey(c.ServiceKey); err != nil {
		errs = append(errs, &config.KeyError{Key: "service_key", Err: err})
	}
	for i, k := range c.ServicePreviousKeys {
		if _, err := parseServiceKey(k); err != nil {
			errs = append(errs, &config.KeyError{Key: fmt.Sprintf("service_previous_keys[%d]", i), Err: err})
		}
	}
	if c.ServiceTokenTTL < 0 || c.ServiceLeeway < 0 {
		errs = append(errs, &config.KeyError{Err: errors.New("service_token_ttl and service_leeway must not be negative")})
	}
	return errors.Join(errs...)
}
