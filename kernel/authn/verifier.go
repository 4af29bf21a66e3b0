package authn

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// Verifier verifies access tokens: JWTs the Auth service signs with a key
// it publishes in its JWK Set. It fetches and caches the set (see
// [Config.CacheTTL] and [Config.RefreshInterval]) and remembers verified
// tokens until they expire. It is safe for concurrent use. The zero value
// is not usable; call [NewVerifier].
type Verifier struct {
	cfg    Config
	now    func() time.Time
	keys   *keyCache
	tokens *tokenCache

	signatureChecks atomic.Int64 // for tests
}

// NewVerifier returns a Verifier for cfg, or an error naming what in cfg is
// wrong. It fetches nothing: the key set is fetched on the first
// verification, so a service can start before the Auth service. Options
// used: [WithHTTPClient], [WithClock], [WithLogger].
func NewVerifier(cfg Config, opts ...Option) (*Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("authn: %w", err)
	}
	cfg = cfg.withDefaults()
	o := newOptions(opts)
	v := &Verifier{cfg: cfg, now: o.now, tokens: newTokenCache(cfg.TokenCacheSize)}
	v.keys = &keyCache{
		url:       cfg.JWKSURL,
		client:    o.client,
		ttl:       cfg.CacheTTL,
		interval:  cfg.RefreshInterval,
		now:       o.now,
		logger:    o.logger,
		onRemoved: v.tokens.clear,
	}
	return v, nil
}

// Verify checks token and returns the user it names:
//
//   - a compact JWS whose `typ`, if present, is JWT or at+jwt (RFC 9068),
//     so a service token is never taken for an access token;
//   - `alg` in [Config.Algorithms] and equal to the algorithm of the key
//     named by `kid`, which must be in the key set; an unknown kid fetches
//     the set again, at most once per [Config.RefreshInterval];
//   - a valid signature;
//   - `iss` equal to [Config.Issuer], `aud` containing [Config.Audience],
//     a non-empty `sub`, `exp` present and not past, `iat` present and
//     `nbf` and `iat` not in the future, all with [Config.Leeway], and at
//     most [Config.MaxLifetime] from `iat` to `exp`.
//
// A token that passed is remembered until it expires, so Verify checks each
// signature once. Errors wrap [ErrTokenMissing], [ErrTokenMalformed],
// [ErrTokenInvalid], [ErrTokenExpired], [ErrTokenNotYetValid],
// [ErrKeyUnknown] or [ErrKeysUnavailable]; ctx bounds only the wait for a
// key set fetch.
func (v *Verifier) Verify(ctx context.Context, token string) (Principal, error) {
	if err := checkSize(token); err != nil {
		return Principal{}, err
	}
	now := v.now()
	if p, ok := v.tokens.get(token, now); ok {
		// A cached token looks up no key: the key set is refreshed when
		// due all the same, or a key withdrawn after a compromise would
		// go on vouching for its cached tokens until they expire.
		v.keys.refreshIfDue(ctx, now)
		return p, nil
	}
	epoch := v.tokens.currentEpoch()
	p, err := v.verify(ctx, token, now)
	if err != nil {
		return Principal{}, err
	}
	v.tokens.put(token, p, p.ExpiresAt.Add(v.cfg.Leeway), epoch, now)
	return p, nil
}

// Authenticate implements [Authenticator]; it is [Verifier.Verify].
func (v *Verifier) Authenticate(ctx context.Context, token string) (Principal, error) {
	return v.Verify(ctx, token)
}

// verify checks token without the cache.
func (v *Verifier) verify(ctx context.Context, token string, now time.Time) (Principal, error) {
	t, err := verifyJWT(ctx, token, v.accessKey, now, v.cfg.Leeway,
		jwt.WithIssuer(v.cfg.Issuer), jwt.WithAudience(v.cfg.Audience),
		jwt.WithRequiredClaim(jwt.IssuedAtKey))
	if err != nil {
		return Principal{}, err
	}
	if life := t.Expiration().Sub(t.IssuedAt()); life > v.cfg.MaxLifetime {
		return Principal{}, errorf(ErrTokenInvalid, "lifetime %s exceeds %s", life, v.cfg.MaxLifetime)
	}
	if t.Subject() == "" {
		return Principal{}, errorf(ErrTokenInvalid, "sub claim missing")
	}
	return principal(t, KindUser), nil
}

// accessKey checks the header of an access token and returns the key it
// names, fetching the key set when the kid is new.
func (v *Verifier) accessKey(ctx context.Context, h jws.Headers) (*publicKey, error) {
	if typ := h.Type(); !isAccessTokenType(typ) {
		return nil, errorf(ErrTokenInvalid, "typ %s is not an access token", quote(typ))
	}
	alg := h.Algorithm().String()
	if !v.cfg.allows(alg) {
		return nil, errorf(ErrTokenInvalid, "alg %s not allowed", quote(alg))
	}
	if err := checkHeader(h); err != nil {
		return nil, err
	}
	key, err := v.keys.key(ctx, h.KeyID())
	if err != nil {
		return nil, err
	}
	if key.alg.String() != alg {
		return nil, errorf(ErrTokenInvalid, "alg %s does not match key %s, an %s key", quote(alg), quote(key.kid), key.alg)
	}
	v.signatureChecks.Add(1)
	return key, nil
}

// isAccessTokenType reports whether typ may head an access token: absent,
// the generic JWT, or at+jwt (RFC 9068 section 2.1), with or without the
// application/ prefix and in any case (RFC 7515 section 4.1.9).
func isAccessTokenType(typ string) bool {
	typ = strings.TrimPrefix(strings.ToLower(typ), "application/")
	return typ == "" || typ == "jwt" || typ == "at+jwt"
}
