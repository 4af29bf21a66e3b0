package authn

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"portcullis.dev/kernel/config"
)

// Service tokens prove "a Portcullis service calls" on internal procedures.
// They are JWTs of their own type so that neither kind of token passes for
// the other (RFC 8725 section 3.11):
//
//	header  {"alg":"EdDSA","kid":<RFC 7638 thumbprint of the key>,"typ":"portcullis-service+jwt"}
//	claims  {"iss":<caller>,"sub":<caller>,"aud":<callee or "portcullis">,"exp":..,"iat":..,"jti":..}
//
// They are signed with the platform service key every service shares (see
// [ServiceConfig] for that trade-off and the path to mTLS).
const (
	// ServiceTokenType is the `typ` header of service tokens, which access
	// tokens never carry.
	ServiceTokenType = "portcullis-service+jwt"
	// AnyService is the audience of a service token any service accepts.
	AnyService = "portcullis"
	// maxServiceTokenLifetime is the longest exp-iat a service token may
	// span, the largest [ServiceConfig.ServiceTokenTTL].
	maxServiceTokenLifetime = time.Hour
	// serviceTokenCacheSize bounds a [ServiceVerifier]'s cache: callers
	// reuse a token for half its life, so there are few at a time.
	serviceTokenCacheSize = 4096
	// maxSourceAudiences bounds a [ServiceTokenSource]'s cache, which holds
	// one token per audience; the audiences are the platform's services.
	maxSourceAudiences = 256
)

// serviceKey is the platform service key.
type serviceKey struct {
	kid  string
	priv ed25519.PrivateKey
}

// parseServiceKey decodes a base64 Ed25519 seed, in any of the base64
// alphabets, with or without padding. Its errors never show the secret.
func parseServiceKey(s config.Secret) (serviceKey, error) {
	v := strings.TrimSpace(s.Value())
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		seed, err := enc.DecodeString(v)
		if err != nil {
			continue
		}
		if len(seed) != ed25519.SeedSize {
			return serviceKey{}, fmt.Errorf("decodes to %d bytes; an Ed25519 seed has %d", len(seed), ed25519.SeedSize)
		}
		priv := ed25519.NewKeyFromSeed(seed)
		kid, err := thumbprint(priv.Public())
		if err != nil {
			return serviceKey{}, err
		}
		return serviceKey{kid: kid, priv: priv}, nil
	}
	return serviceKey{}, errors.New("is not base64")
}

// serviceClaims are the claims of a service token as minted.
type serviceClaims struct {
	Iss string `json:"iss"`
	Sub string `json:"sub"`
	Aud string `json:"aud"`
	Exp int64  `json:"exp"`
	Iat int64  `json:"iat"`
	Jti string `json:"jti"`
}

// ServiceTokenSource mints the service tokens a service attaches to its
// internal calls. A token is reused until half its lifetime is left, so
// [ServiceTokenSource.Token] is a map lookup on almost every call, and a
// callee always receives a token with at least half its lifetime to run.
// It is safe for concurrent use. The zero value is not usable; call
// [NewServiceTokenSource].
type ServiceTokenSource struct {
	name   string
	key    serviceKey
	header jws.Headers // the protected header, the same for every token (alg included: jws.Sign sets it again, to the same value, under the header's lock)
	ttl    time.Duration
	now    func() time.Time

	mu     sync.Mutex
	tokens map[string]mintedToken // by audience
}

type mintedToken struct {
	token    string
	issuedAt time.Time
	renewAt  time.Time
}

// NewServiceTokenSource returns a source of tokens naming the service
// called name, signed with cfg's service key, or an error naming what in
// cfg is wrong. Options used: [WithClock].
func NewServiceTokenSource(name string, cfg ServiceConfig, opts ...Option) (*ServiceTokenSource, error) {
	if name == "" {
		return nil, errors.New("authn: service token source: empty service name")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("authn: %w", err)
	}
	cfg = cfg.withDefaults()
	key, _ := parseServiceKey(cfg.ServiceKey) // checked by Validate
	o := newOptions(opts)
	header := jws.NewHeaders()
	if err := errors.Join(header.Set(jws.AlgorithmKey, jwa.EdDSA), header.Set(jws.KeyIDKey, key.kid), header.Set(jws.TypeKey, ServiceTokenType)); err != nil {
		return nil, fmt.Errorf("authn: service token header: %w", err)
	}
	return &ServiceTokenSource{
		name:   name,
		key:    key,
		header: header,
		ttl:    cfg.ServiceTokenTTL,
		now:    o.now,
		tokens: make(map[string]mintedToken),
	}, nil
}

// Token returns a service token for calling the service named audience,
// or any service if audience is [AnyService].
func (s *ServiceTokenSource) Token(audience string) (string, error) {
	if audience == "" {
		return "", errors.New("authn: service token: empty audience")
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.tokens[audience]; ok && now.Before(t.renewAt) && !now.Before(t.issuedAt) {
		return t.token, nil
	}
	token, err := s.mint(audience, now)
	if err != nil {
		return "", err
	}
	if len(s.tokens) >= maxSourceAudiences {
		clear(s.tokens)
	}
	s.tokens[audience] = mintedToken{token: token, issuedAt: now, renewAt: now.Add(s.ttl / 2)}
	return token, nil
}

// mint signs a new token for audience.
func (s *ServiceTokenSource) mint(audience string, now time.Time) (string, error) {
	var jti [16]byte
	_, _ = rand.Read(jti[:]) // never fails (crypto/rand)
	claims, err := json.Marshal(serviceClaims{
		Iss: s.name,
		Sub: s.name,
		Aud: audience,
		Exp: now.Add(s.ttl).Unix(),
		Iat: now.Unix(),
		Jti: base64.RawURLEncoding.EncodeToString(jti[:]),
	})
	if err != nil {
		return "", fmt.Errorf("authn: service token claims: %w", err)
	}
	token, err := jws.Sign(claims, jws.WithKey(jwa.EdDSA, s.key.priv, jws.WithProtectedHeaders(s.header)))
	if err != nil {
		return "", fmt.Errorf("authn: sign service token: %w", err)
	}
	return string(token), nil
}

// ServiceVerifier verifies the service tokens presented to the service it
// belongs to, and remembers verified ones until they expire. It is safe for
// concurrent use. The zero value is not usable; call [NewServiceVerifier].
type ServiceVerifier struct {
	name   string
	keys   map[string]*publicKey // current and previous service keys, by kid
	leeway time.Duration
	now    func() time.Time
	tokens *tokenCache

	signatureChecks atomic.Int64 // for tests
}

// NewServiceVerifier returns a verifier for the service called name, which
// accepts tokens whose audience is name or [AnyService], signed with cfg's
// service key or one of its previous keys; or an error naming what in cfg
// is wrong. Options used: [WithClock].
func NewServiceVerifier(name string, cfg ServiceConfig, opts ...Option) (*ServiceVerifier, error) {
	if name == "" {
		return nil, errors.New("authn: service verifier: empty service name")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("authn: %w", err)
	}
	cfg = cfg.withDefaults()
	o := newOptions(opts)
	v := &ServiceVerifier{name: name, keys: map[string]*publicKey{}, leeway: cfg.ServiceLeeway, now: o.now, tokens: newTokenCache(serviceTokenCacheSize)}
	for _, secret := range append([]config.Secret{cfg.ServiceKey}, cfg.ServicePreviousKeys...) {
		key, _ := parseServiceKey(secret) // checked by Validate
		v.keys[key.kid] = &publicKey{kid: key.kid, alg: jwa.EdDSA, raw: key.priv.Public()}
	}
	return v, nil
}

// Verify checks a service token and returns the calling service as a
// [KindService] principal: `typ` [ServiceTokenType], alg EdDSA with a
// service key named by `kid`, a valid signature, `iss` and `sub` the same
// non-empty name, `aud` this service or [AnyService], `exp` and `iat`
// present, and the times valid with [ServiceConfig.ServiceLeeway]. Errors
// wrap the package's sentinel errors, as [Verifier.Verify]'s do.
func (v *ServiceVerifier) Verify(ctx context.Context, token string) (Principal, error) {
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
	v.tokens.put(token, p, p.ExpiresAt.Add(v.leeway), epoch, now)
	return p, nil
}

// Authenticate implements [Authenticator]; it is [ServiceVerifier.Verify].
func (v *ServiceVerifier) Authenticate(ctx context.Context, token string) (Principal, error) {
	return v.Verify(ctx, token)
}

// verify checks token without the cache.
func (v *ServiceVerifier) verify(ctx context.Context, token string, now time.Time) (Principal, error) {
	t, err := verifyJWT(ctx, token, v.serviceKey, now, v.leeway, jwt.WithRequiredClaim(jwt.IssuedAtKey))
	if err != nil {
		return Principal{}, err
	}
	if iss := t.Issuer(); iss == "" || t.Subject() != iss {
		return Principal{}, errorf(ErrTokenInvalid, "iss %s and sub %s must name the same service", quote(iss), quote(t.Subject()))
	}
	if aud := t.Audience(); !slices.Contains(aud, v.name) && !slices.Contains(aud, AnyService) {
		return Principal{}, errorf(ErrTokenInvalid, "aud is neither %s nor %s", quote(v.name), AnyService)
	}
	if life := t.Expiration().Sub(t.IssuedAt()); life > maxServiceTokenLifetime {
		return Principal{}, errorf(ErrTokenInvalid, "lifetime %s exceeds %s", life, maxServiceTokenLifetime)
	}
	return principal(t, KindService), nil
}

// serviceKey checks the header of a service token and returns the service
// key it names.
func (v *ServiceVerifier) serviceKey(_ context.Context, h jws.Headers) (*publicKey, error) {
	if typ := h.Type(); typ != ServiceTokenType {
		return nil, errorf(ErrTokenInvalid, "typ %s is not %s", quote(typ), ServiceTokenType)
	}
	if alg := h.Algorithm(); alg != jwa.EdDSA {
		return nil, errorf(ErrTokenInvalid, "alg %s not allowed", quote(alg.String()))
	}
	if err := checkHeader(h); err != nil {
		return nil, err
	}
	key := v.keys[h.KeyID()]
	if key == nil {
		return nil, errorf(ErrKeyUnknown, "kid %s is not a service key", quote(h.KeyID()))
	}
	v.signatureChecks.Add(1)
	return key, nil
}
