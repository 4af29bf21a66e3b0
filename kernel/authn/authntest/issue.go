package authntest

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"time"
)

// TokenOption changes a token [Server.Issue] mints.
type TokenOption func(*tokenSpec)

type tokenSpec struct {
	kid     string                                    // key to sign with; "" means the current one
	alg     string                                    // with sign: the alg header of a foreign signer
	sign    func(signingInput []byte) ([]byte, error) // nil means the key's own signature
	header  map[string]any                            // overrides, nil values remove
	claims  map[string]any                            // overrides, nil values remove
	rawBody []byte                                    // replaces the claims entirely
}

// WithSubject sets `sub`; empty removes it.
func WithSubject(sub string) TokenOption { return withStringClaim("sub", sub) }

// WithIssuer sets `iss`; empty removes it.
func WithIssuer(iss string) TokenOption { return withStringClaim("iss", iss) }

// WithSessionID sets `sid`; empty removes it.
func WithSessionID(sid string) TokenOption { return withStringClaim("sid", sid) }

// WithAudience sets `aud`: one value as a string, several as an array,
// none removes it.
func WithAudience(aud ...string) TokenOption {
	switch len(aud) {
	case 0:
		return WithClaim("aud", nil)
	case 1:
		return WithClaim("aud", aud[0])
	}
	return WithClaim("aud", aud)
}

// WithExpiry sets `exp`; the zero time removes it.
func WithExpiry(t time.Time) TokenOption { return withTimeClaim("exp", t) }

// WithNotBefore sets `nbf`; the zero time removes it.
func WithNotBefore(t time.Time) TokenOption { return withTimeClaim("nbf", t) }

// WithIssuedAt sets `iat`; the zero time removes it.
func WithIssuedAt(t time.Time) TokenOption { return withTimeClaim("iat", t) }

// WithClaim sets the claim name to value, any JSON-encodable value; nil
// removes it.
func WithClaim(name string, value any) TokenOption {
	return func(s *tokenSpec) { s.claims[name] = value }
}

// WithPayload replaces the claims with payload, which need not be JSON.
func WithPayload(payload []byte) TokenOption {
	return func(s *tokenSpec) { s.rawBody = payload }
}

// WithHeader sets the JOSE header parameter name to value; nil removes it.
// It wins over what the other options put in the header.
func WithHeader(name string, value any) TokenOption {
	return func(s *tokenSpec) { s.header[name] = value }
}

// WithKey signs with the key kid, published or withdrawn, instead of the
// current one; alg and kid follow.
func WithKey(kid string) TokenOption {
	return func(s *tokenSpec) { s.kid = kid }
}

// WithAlgNone makes an unsecured JWS (RFC 7515 appendix A.5): alg none and
// an empty signature. The kid stays that of the current key.
func WithAlgNone() TokenOption {
	return WithSigner("none", func([]byte) ([]byte, error) { return nil, nil })
}

// WithHS256 signs with HMAC-SHA256 keyed with secret, such as the bytes of
// a public key: the algorithm confusion attack. The kid stays that of the
// current key.
func WithHS256(secret []byte) TokenOption {
	return WithSigner("HS256", func(input []byte) ([]byte, error) { return hmacSHA256(secret, input), nil })
}

// WithSigner signs with sign under the alg header alg, such as an RS256
// signature with a key the test made. The kid stays that of the current
// key.
func WithSigner(alg string, sign func(signingInput []byte) ([]byte, error)) TokenOption {
	return func(s *tokenSpec) { s.alg, s.sign = alg, sign }
}

func withStringClaim(name, v string) TokenOption {
	if v == "" {
		return WithClaim(name, nil)
	}
	return WithClaim(name, v)
}

func withTimeClaim(name string, t time.Time) TokenOption {
	if t.IsZero() {
		return WithClaim(name, nil)
	}
	return WithClaim(name, t.Unix())
}

// Issue mints an access token: by default valid, signed with the current
// key, typ at+jwt, from [Issuer] to [Audience] for [Subject] in
// [SessionID], issued now and expiring after [Lifetime], with a random
// jti. Options change it. Issue panics only if a claim cannot be encoded
// as JSON.
func (s *Server) Issue(opts ...TokenOption) string {
	spec := &tokenSpec{header: map[string]any{}, claims: map[string]any{}}
	for _, opt := range opts {
		opt(spec)
	}
	key := s.signingKey(spec.kid)

	now := s.now()
	header := map[string]any{"alg": key.alg, "kid": key.kid, "typ": "at+jwt"}
	if spec.sign != nil {
		header["alg"] = spec.alg
	}
	claims := map[string]any{
		"iss": Issuer,
		"sub": Subject,
		"aud": Audience,
		"sid": SessionID,
		"jti": randomID(),
		"iat": now.Unix(),
		"exp": now.Add(Lifetime).Unix(),
	}
	overlay(header, spec.header)
	overlay(claims, spec.claims)

	body := spec.rawBody
	if body == nil {
		body = must(json.Marshal(claims))
	}
	enc := base64.RawURLEncoding.EncodeToString
	input := enc(must(json.Marshal(header))) + "." + enc(body)
	sign := spec.sign
	if sign == nil {
		sign = key.sign
	}
	return input + "." + enc(must(sign([]byte(input))))
}

// sign returns k's JWS signature of input.
func (k *signingKey) sign(input []byte) ([]byte, error) {
	switch priv := k.signer.(type) {
	case ed25519.PrivateKey:
		return ed25519.Sign(priv, input), nil
	case *ecdsa.PrivateKey:
		h := sha256.Sum256(input)
		r, s, err := ecdsa.Sign(rand.Reader, priv, h[:])
		if err != nil {
			return nil, err
		}
		sig := make([]byte, 64) // RFC 7518 section 3.4: R || S, 32 bytes each
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
		return sig, nil
	}
	panic("authntest: unknown key type")
}

func overlay(dst, src map[string]any) {
	for k, v := range src {
		if v == nil {
			delete(dst, k)
		} else {
			dst[k] = v
		}
	}
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
