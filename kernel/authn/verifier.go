package authn

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
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
//     a non-empty `sub`, `exp` present and not past, and `nbf` and `iat`
//     not in the future, all with [Config.Leeway].
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
	t, err := parseCompact(token)
	if err != nil {
		return Principal{}, err
	}
	h := &t.header
	if !isAccessTokenType(h.Typ) {
		return Principal{}, errorf(ErrTokenInvalid, "typ %s is not an access token", quote(h.Typ))
	}
	if !v.cfg.allows(h.Alg) {
		return Principal{}, errorf(ErrTokenInvalid, "alg %s not allowed", quote(h.Alg))
	}
	if err := h.check(); err != nil {
		return Principal{}, err
	}
	key, err := v.keys.key(ctx, h.Kid)
	if err != nil {
		return Principal{}, err
	}
	if key.alg != h.Alg {
		return Principal{}, errorf(ErrTokenInvalid, "alg %s does not match key %s, an %s key", quote(h.Alg), quote(key.kid), key.alg)
	}
	v.signatureChecks.Add(1)
	if !key.verify(t.signingInput, t.signature) {
		return Principal{}, errorf(ErrTokenInvalid, "signature does not verify with key %s", quote(key.kid))
	}
	c, err := decodeClaims(t.payload)
	if err != nil {
		return Principal{}, err
	}
	if c.Iss != v.cfg.Issuer {
		return Principal{}, errorf(ErrTokenInvalid, "iss %s is not %s", quote(c.Iss), quote(v.cfg.Issuer))
	}
	if !c.Aud.contains(v.cfg.Audience) {
		return Principal{}, errorf(ErrTokenInvalid, "aud does not contain %s", quote(v.cfg.Audience))
	}
	if c.Sub == "" {
		return Principal{}, errorf(ErrTokenInvalid, "sub claim missing")
	}
	if err := c.checkTimes(now, v.cfg.Leeway); err != nil {
		return Principal{}, err
	}
	return c.principal(KindUser), nil
}

// isAccessTokenType reports whether typ may head an access token: absent,
// the generic JWT, or at+jwt (RFC 9068 section 2.1), with or without the
// application/ prefix and in any case (RFC 7515 section 4.1.9).
func isAccessTokenType(typ string) bool {
	typ = strings.TrimPrefix(strings.ToLower(typ), "application/")
	return typ == "" || typ == "jwt" || typ == "at+jwt"
}
