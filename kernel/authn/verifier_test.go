package authn_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/authn"
	"portcullis.dev/kernel/authn/authntest"
)

// epoch is the fake "now" of the tests.
var epoch = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// newServer starts a JWKS server on a fake clock showing epoch.
func newServer(t *testing.T) (*authntest.Server, *authntest.Clock) {
	t.Helper()
	clock := authntest.NewClock(epoch)
	return authntest.NewServer(t, authntest.WithClock(clock.Now)), clock
}

func TestVerify(t *testing.T) {
	t.Parallel()
	leeway := authn.DefaultLeeway
	tests := []struct {
		name string
		// token mints the token under test.
		token func(t *testing.T, srv *authntest.Server) string
		// config changes the verifier's configuration.
		config  func(c *authn.Config)
		wantErr error
	}{
		{
			name:  "valid EdDSA",
			token: issue(),
		},
		{
			name: "valid ES256",
			token: func(t *testing.T, srv *authntest.Server) string {
				return srv.Issue(authntest.WithKey(srv.AddKey(authn.AlgES256)))
			},
		},
		{
			name:  "audience among several",
			token: issue(authntest.WithAudience("billing", authntest.Audience)),
		},
		{
			name:  "typ JWT",
			token: issue(authntest.WithHeader("typ", "JWT")),
		},
		{
			name:  "typ application/at+jwt",
			token: issue(authntest.WithHeader("typ", "application/AT+JWT")),
		},
		{
			name:  "no typ",
			token: issue(authntest.WithHeader("typ", nil)),
		},
		{
			name:  "expired within leeway",
			token: issue(authntest.WithExpiry(epoch.Add(-leeway + time.Second))),
		},
		{
			name:  "not yet valid within leeway",
			token: issue(authntest.WithNotBefore(epoch.Add(leeway - time.Second))),
		},
		{
			// The Auth service always sets it; without it the lifetime,
			// and so what a stolen key could mint, has no bound.
			name:    "no iat",
			token:   issue(authntest.WithIssuedAt(time.Time{})),
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name:    "lifetime over max_lifetime",
			token:   issue(authntest.WithIssuedAt(epoch), authntest.WithExpiry(epoch.Add(authn.DefaultMaxLifetime+time.Second))),
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name:  "lifetime of max_lifetime",
			token: issue(authntest.WithIssuedAt(epoch), authntest.WithExpiry(epoch.Add(authn.DefaultMaxLifetime))),
		},
		{
			name:    "expired",
			token:   issue(authntest.WithExpiry(epoch.Add(-leeway))),
			wantErr: authn.ErrTokenExpired,
		},
		{
			name:    "expired long ago",
			token:   issue(authntest.WithIssuedAt(epoch.Add(-2*time.Hour)), authntest.WithExpiry(epoch.Add(-time.Hour))),
			wantErr: authn.ErrTokenExpired,
		},
		{
			name:    "not yet valid",
			token:   issue(authntest.WithNotBefore(epoch.Add(leeway + time.Second))),
			wantErr: authn.ErrTokenNotYetValid,
		},
		{
			name:    "issued in the future",
			token:   issue(authntest.WithIssuedAt(epoch.Add(time.Hour)), authntest.WithExpiry(epoch.Add(2*time.Hour))),
			wantErr: authn.ErrTokenNotYetValid,
		},
		{
			name:    "no exp",
			token:   issue(authntest.WithExpiry(time.Time{})),
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name:    "exp not a number",
			token:   issue(authntest.WithClaim("exp", "tomorrow")),
			wantErr: authn.ErrTokenMalformed,
		},
		{
			// jwx reads a time of 0 as no time at all: never expires.
			name:    "exp 0",
			token:   issue(authntest.WithClaim("exp", 0)),
			wantErr: authn.ErrTokenMalformed,
		},
		{
			name:    "exp under a second",
			token:   issue(authntest.WithClaim("exp", 0.5)),
			wantErr: authn.ErrTokenMalformed,
		},
		{
			name:    "wrong audience",
			token:   issue(authntest.WithAudience("billing")),
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name:    "no audience",
			token:   issue(authntest.WithAudience()),
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name:    "wrong issuer",
			token:   issue(authntest.WithIssuer("https://evil.example")),
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name:    "issuer differs in case",
			token:   issue(authntest.WithIssuer(strings.ToUpper(authntest.Issuer))),
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name:    "no sub",
			token:   issue(authntest.WithSubject("")),
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name:    "alg none",
			token:   issue(authntest.WithAlgNone()),
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name:    "alg None",
			token:   issue(authntest.WithSigner("None", func([]byte) ([]byte, error) { return nil, nil })),
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name: "HS256 keyed with the public key",
			token: func(t *testing.T, srv *authntest.Server) string {
				pub := srv.PublicKey(srv.KeyID()).(ed25519.PublicKey)
				return srv.Issue(authntest.WithHS256(pub))
			},
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name: "HS256 keyed with the public JWK's x",
			token: func(t *testing.T, srv *authntest.Server) string {
				pub := srv.PublicKey(srv.KeyID()).(ed25519.PublicKey)
				return srv.Issue(authntest.WithHS256([]byte(base64.RawURLEncoding.EncodeToString(pub))))
			},
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name: "HS256 even when configured",
			token: func(t *testing.T, srv *authntest.Server) string {
				pub := srv.PublicKey(srv.KeyID()).(ed25519.PublicKey)
				return srv.Issue(authntest.WithHS256(pub))
			},
			config:  func(c *authn.Config) { c.Algorithms = []string{authn.AlgEdDSA} },
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name:    "RS256",
			token:   issue(authntest.WithSigner("RS256", rs256Signer(t))),
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name: "ES256 not allowed",
			token: func(t *testing.T, srv *authntest.Server) string {
				return srv.Issue(authntest.WithKey(srv.AddKey(authn.AlgES256)))
			},
			config:  func(c *authn.Config) { c.Algorithms = []string{authn.AlgEdDSA} },
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name: "ES256 header on an Ed25519 key",
			token: func(t *testing.T, srv *authntest.Server) string {
				priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				require.NoError(t, err)
				return srv.Issue(authntest.WithSigner(authn.AlgES256, es256Signer(priv)))
			},
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name: "EdDSA header on an EC key",
			token: func(t *testing.T, srv *authntest.Server) string {
				ecKid := srv.AddKey(authn.AlgES256)
				return srv.Issue(authntest.WithHeader("kid", ecKid))
			},
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name:    "unknown kid",
			token:   issue(authntest.WithHeader("kid", "nope")),
			wantErr: authn.ErrKeyUnknown,
		},
		{
			name:    "no kid",
			token:   issue(authntest.WithHeader("kid", nil)),
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name:    "crit header",
			token:   issue(authntest.WithHeader("crit", []string{"exp"})),
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name:    "service token type",
			token:   issue(authntest.WithHeader("typ", authn.ServiceTokenType)),
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name:    "other type",
			token:   issue(authntest.WithHeader("typ", "refresh+jwt")),
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name: "tampered payload",
			token: func(t *testing.T, srv *authntest.Server) string {
				good := strings.Split(srv.Issue(), ".")
				other := strings.Split(srv.Issue(authntest.WithSubject("admin")), ".")
				return good[0] + "." + other[1] + "." + good[2]
			},
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name: "tampered signature",
			token: func(t *testing.T, srv *authntest.Server) string {
				return tamperSignature(t, srv.Issue(), func(sig []byte) []byte { sig[10] ^= 1; return sig })
			},
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name: "truncated signature",
			token: func(t *testing.T, srv *authntest.Server) string {
				return tamperSignature(t, srv.Issue(), func(sig []byte) []byte { return sig[:len(sig)-3] })
			},
			wantErr: authn.ErrTokenInvalid,
		},
		{
			// 64 signature bytes leave 4 unused bits in the last of 86
			// characters; lenient decoders read both spellings alike.
			name: "signature with unused bits set",
			token: func(t *testing.T, srv *authntest.Server) string {
				const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
				token := srv.Issue()
				last := strings.IndexByte(alphabet, token[len(token)-1])
				return token[:len(token)-1] + string(alphabet[last^1])
			},
			wantErr: authn.ErrTokenMalformed,
		},
		{
			name:    "exp as a string",
			token:   issue(authntest.WithClaim("exp", "4102444800")),
			wantErr: authn.ErrTokenMalformed,
		},
		{
			name: "signature with padding",
			token: func(t *testing.T, srv *authntest.Server) string {
				return srv.Issue() + "=="
			},
			wantErr: authn.ErrTokenMalformed,
		},
		{
			name:    "payload not JSON",
			token:   issue(authntest.WithPayload([]byte("hello"))),
			wantErr: authn.ErrTokenMalformed,
		},
		{
			name:    "payload a JSON array",
			token:   issue(authntest.WithPayload([]byte(`["sub"]`))),
			wantErr: authn.ErrTokenMalformed,
		},
		{
			name:    "aud a number",
			token:   issue(authntest.WithClaim("aud", 7)),
			wantErr: authn.ErrTokenMalformed,
		},
		{
			name:    "empty",
			token:   literal(""),
			wantErr: authn.ErrTokenMissing,
		},
		{
			name:    "one segment",
			token:   literal("abc"),
			wantErr: authn.ErrTokenMalformed,
		},
		{
			name:    "two segments",
			token:   literal("eyJhbGciOiJFZERTQSJ9.e30"),
			wantErr: authn.ErrTokenMalformed,
		},
		{
			name:    "JWE (five segments)",
			token:   literal("eyJhbGciOiJkaXIifQ..aXY.Y3Q.dGFn"),
			wantErr: authn.ErrTokenMalformed,
		},
		{
			name:    "header not base64url",
			token:   literal("ey$$.e30.AAAA"),
			wantErr: authn.ErrTokenMalformed,
		},
		{
			name:    "header not JSON",
			token:   literal(b64("alg=EdDSA") + ".e30.AAAA"),
			wantErr: authn.ErrTokenMalformed,
		},
		{
			name:    "header JSON null",
			token:   literal(b64("null") + ".e30.AAAA"),
			wantErr: authn.ErrTokenMalformed,
		},
		{
			name:    "too long",
			token:   issue(authntest.WithClaim("padding", strings.Repeat("x", 9000))),
			wantErr: authn.ErrTokenMalformed,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, clock := newServer(t)
			cfg := srv.Config()
			if tt.config != nil {
				tt.config(&cfg)
			}
			v, err := authn.NewVerifier(cfg, authn.WithHTTPClient(srv.Client()), authn.WithClock(clock.Now))
			require.NoError(t, err)
			token := tt.token(t, srv)

			p, err := v.Verify(t.Context(), token)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				t.Log(err)
				assert.Zero(t, p)
				if token != "" {
					assert.NotContains(t, err.Error(), token, "errors must not repeat the token")
				}
				return
			}
			require.NoError(t, err)
			assert.Equal(t, authn.KindUser, p.Kind)
			assert.Equal(t, authntest.Subject, p.Subject)
			assert.Equal(t, authntest.SessionID, p.SessionID)
			assert.NotEmpty(t, p.TokenID)
			assert.Contains(t, p.Audience, authntest.Audience)
			assert.False(t, p.ExpiresAt.IsZero())
		})
	}
}

func TestVerifyPrincipal(t *testing.T) {
	t.Parallel()
	srv, _ := newServer(t)
	v := srv.NewVerifier()
	exp := epoch.Add(10 * time.Minute)
	token := srv.Issue(
		authntest.WithSubject("user-42"),
		authntest.WithSessionID("s-7"),
		authntest.WithClaim("jti", "t-1"),
		authntest.WithAudience("portcullis", "extra"),
		authntest.WithClaim("iat", float64(epoch.Unix())+0.5), // NumericDate may have a fraction; read to the second
		authntest.WithExpiry(exp),
	)
	p, err := v.Verify(t.Context(), token)
	require.NoError(t, err)
	assert.Equal(t, authn.Principal{
		Kind:      authn.KindUser,
		Subject:   "user-42",
		SessionID: "s-7",
		TokenID:   "t-1",
		Audience:  []string{"portcullis", "extra"},
		ExpiresAt: exp,
		IssuedAt:  epoch,
	}, normalize(p))
	assert.Equal(t, p, must(v.Authenticate(t.Context(), token)), "Authenticate is Verify")
}

// TestVerifyCachesVerifiedTokens shows that a token's signature is checked
// once, until the token expires.
func TestVerifyCachesVerifiedTokens(t *testing.T) {
	t.Parallel()
	srv, clock := newServer(t)
	v := srv.NewVerifier()
	token := srv.Issue(authntest.WithExpiry(epoch.Add(time.Minute)))

	first, err := v.Verify(t.Context(), token)
	require.NoError(t, err)
	require.EqualValues(t, 1, v.SignatureChecks())
	for range 10 {
		p, err := v.Verify(t.Context(), token)
		require.NoError(t, err)
		assert.Equal(t, first, p)
	}
	assert.EqualValues(t, 1, v.SignatureChecks(), "a cached token is not checked again")

	// A forgery that differs from the cached token is checked, and fails.
	forged := tamperSignature(t, token, func(sig []byte) []byte { sig[0] ^= 1; return sig })
	_, err = v.Verify(t.Context(), forged)
	require.ErrorIs(t, err, authn.ErrTokenInvalid)
	assert.EqualValues(t, 2, v.SignatureChecks())

	// A cached token expires like any other.
	clock.Advance(time.Minute + authn.DefaultLeeway)
	_, err = v.Verify(t.Context(), token)
	require.ErrorIs(t, err, authn.ErrTokenExpired)
}

// TestCachedTokensGoWithTheirKey: a key withdrawn from the set (revoked
// after a compromise) takes its cached tokens with it once the set is due
// again, even when only cached tokens are used, which look up no key.
func TestCachedTokensGoWithTheirKey(t *testing.T) {
	t.Parallel()
	srv, clock := newServer(t)
	v := srv.NewVerifier()
	old := srv.KeyID()
	token := srv.Issue(authntest.WithExpiry(epoch.Add(time.Hour)))
	_, err := v.Verify(t.Context(), token)
	require.NoError(t, err)

	srv.Rotate()
	srv.RemoveKey(old)
	clock.Advance(authn.DefaultCacheTTL + time.Second)
	require.Eventually(t, func() bool {
		_, err := v.Verify(t.Context(), token)
		return err != nil
	}, 5*time.Second, 10*time.Millisecond, "a token of a withdrawn key is still served from the cache")
}

// TestVerifyCacheIsBounded fills the token cache past its size.
func TestVerifyCacheIsBounded(t *testing.T) {
	t.Parallel()
	srv, clock := newServer(t)
	cfg := srv.Config()
	cfg.TokenCacheSize = 16
	v, err := authn.NewVerifier(cfg, authn.WithHTTPClient(srv.Client()), authn.WithClock(clock.Now))
	require.NoError(t, err)
	for range 100 {
		_, err := v.Verify(t.Context(), srv.Issue())
		require.NoError(t, err)
		assert.LessOrEqual(t, v.CachedTokens(), 16)
	}
}

func TestVerifyConcurrent(t *testing.T) {
	t.Parallel()
	srv, _ := newServer(t)
	v := srv.NewVerifier()
	tokens := make([]string, 8)
	for i := range tokens {
		tokens[i] = srv.Issue()
	}
	done := make(chan error)
	for i := range 32 {
		go func() {
			_, err := v.Verify(context.Background(), tokens[i%len(tokens)])
			done <- err
		}()
	}
	for range 32 {
		require.NoError(t, <-done)
	}
	assert.Equal(t, 1, srv.Fetches(), "concurrent first verifications share one fetch")
}

func TestNewVerifierRejectsBadConfig(t *testing.T) {
	t.Parallel()
	good := authn.Config{JWKSURL: "http://authsvc/.well-known/jwks.json", Issuer: "i", Audience: "a"}
	tests := []struct {
		name   string
		change func(c *authn.Config)
		want   string
	}{
		{"no jwks_url", func(c *authn.Config) { c.JWKSURL = "" }, "jwks_url"},
		{"relative jwks_url", func(c *authn.Config) { c.JWKSURL = "/.well-known/jwks.json" }, "jwks_url"},
		{"file jwks_url", func(c *authn.Config) { c.JWKSURL = "file:///etc/jwks.json" }, "jwks_url"},
		{"no issuer", func(c *authn.Config) { c.Issuer = "" }, "issuer"},
		{"no audience", func(c *authn.Config) { c.Audience = "" }, "audience"},
		{"HS256", func(c *authn.Config) { c.Algorithms = []string{"EdDSA", "HS256"} }, "algorithms[1]"},
		{"none", func(c *authn.Config) { c.Algorithms = []string{"none"} }, "algorithms[0]"},
		{"RS256", func(c *authn.Config) { c.Algorithms = []string{"RS256"} }, "algorithms[0]"},
		{"negative leeway", func(c *authn.Config) { c.Leeway = -time.Second }, "leeway"},
	}
	_, err := authn.NewVerifier(good)
	require.NoError(t, err)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := good
			tt.change(&cfg)
			_, err := authn.NewVerifier(cfg)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

// issue returns a token func minting with opts.
func issue(opts ...authntest.TokenOption) func(*testing.T, *authntest.Server) string {
	return func(_ *testing.T, srv *authntest.Server) string { return srv.Issue(opts...) }
}

// literal returns a token func returning s.
func literal(s string) func(*testing.T, *authntest.Server) string {
	return func(*testing.T, *authntest.Server) string { return s }
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// rs256Signer signs with a fresh RSA key, as a token from a foreign issuer
// would be.
func rs256Signer(t *testing.T) func([]byte) ([]byte, error) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	return func(input []byte) ([]byte, error) {
		h := sha256.Sum256(input)
		return rsa.SignPKCS1v15(rand.Reader, priv, crypto.SHA256, h[:])
	}
}

// es256Signer signs with priv in the JWS form of ECDSA signatures.
func es256Signer(priv *ecdsa.PrivateKey) func([]byte) ([]byte, error) {
	return func(input []byte) ([]byte, error) {
		h := sha256.Sum256(input)
		r, s, err := ecdsa.Sign(rand.Reader, priv, h[:])
		if err != nil {
			return nil, err
		}
		sig := make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
		return sig, nil
	}
}

// normalize puts p's times in UTC, for comparison.
func normalize(p authn.Principal) authn.Principal {
	p.ExpiresAt, p.IssuedAt = p.ExpiresAt.UTC(), p.IssuedAt.UTC()
	return p
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// tamperSignature returns token with its signature changed by f.
func tamperSignature(t *testing.T, token string, f func(sig []byte) []byte) string {
	t.Helper()
	i := strings.LastIndexByte(token, '.')
	sig, err := base64.RawURLEncoding.DecodeString(token[i+1:])
	require.NoError(t, err)
	return token[:i+1] + base64.RawURLEncoding.EncodeToString(f(sig))
}
