package authn_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/authn"
	"portcullis.dev/kernel/authn/authntest"
	"portcullis.dev/kernel/config"
)

// serviceSetup returns a token source for "identitysvc" and a verifier
// for "auditsvc" sharing one key, on a fake clock.
func serviceSetup(t *testing.T) (*authn.ServiceTokenSource, *authn.ServiceVerifier, *authntest.Clock, authn.ServiceConfig) {
	t.Helper()
	clock := authntest.NewClock(epoch)
	cfg := authntest.ServiceConfig()
	src, err := authn.NewServiceTokenSource("identitysvc", cfg, authn.WithClock(clock.Now))
	require.NoError(t, err)
	v, err := authn.NewServiceVerifier("auditsvc", cfg, authn.WithClock(clock.Now))
	require.NoError(t, err)
	return src, v, clock, cfg
}

func TestServiceTokenRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		audience string
	}{
		{"auditsvc"},
		{authn.AnyService},
	}
	for _, tt := range tests {
		t.Run(tt.audience, func(t *testing.T) {
			t.Parallel()
			src, v, _, _ := serviceSetup(t)
			token, err := src.Token(tt.audience)
			require.NoError(t, err)

			p, err := v.Verify(t.Context(), token)
			require.NoError(t, err)
			assert.Equal(t, authn.KindService, p.Kind)
			assert.Equal(t, "identitysvc", p.Subject)
			assert.Equal(t, []string{tt.audience}, p.Audience)
			assert.Empty(t, p.SessionID)
			assert.NotEmpty(t, p.TokenID)
			assert.True(t, p.IssuedAt.Equal(epoch))
			assert.True(t, p.ExpiresAt.Equal(epoch.Add(authn.DefaultServiceTokenTTL)))

			header := decodeSegment(t, token, 0)
			assert.Equal(t, authn.ServiceTokenType, header["typ"])
			assert.Equal(t, authn.AlgEdDSA, header["alg"])
		})
	}
}

func TestServiceTokenSourceReusesAndRenews(t *testing.T) {
	t.Parallel()
	src, v, clock, _ := serviceSetup(t)
	first, err := src.Token("auditsvc")
	require.NoError(t, err)
	other, err := src.Token("authzsvc")
	require.NoError(t, err)
	assert.NotEqual(t, first, other, "one token per audience")

	clock.Advance(authn.DefaultServiceTokenTTL/2 - time.Second)
	again, err := src.Token("auditsvc")
	require.NoError(t, err)
	assert.Equal(t, first, again, "reused while more than half its life is left")

	clock.Advance(time.Second)
	renewed, err := src.Token("auditsvc")
	require.NoError(t, err)
	assert.NotEqual(t, first, renewed, "renewed at half its life")

	_, err = v.Verify(t.Context(), renewed)
	require.NoError(t, err)
	_, err = v.Verify(t.Context(), renewed)
	require.NoError(t, err)
	assert.EqualValues(t, 1, v.SignatureChecks(), "a cached service token is not checked again")
}

func TestServiceVerifierRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		token   func(t *testing.T, src *authn.ServiceTokenSource, clock *authntest.Clock, cfg authn.ServiceConfig) string
		wantErr error
	}{
		{
			name: "other audience",
			token: func(t *testing.T, src *authn.ServiceTokenSource, _ *authntest.Clock, _ authn.ServiceConfig) string {
				return must(src.Token("authzsvc"))
			},
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name: "expired",
			token: func(t *testing.T, src *authn.ServiceTokenSource, clock *authntest.Clock, _ authn.ServiceConfig) string {
				token := must(src.Token("auditsvc"))
				clock.Advance(authn.DefaultServiceTokenTTL + authn.DefaultLeeway)
				return token
			},
			wantErr: authn.ErrTokenExpired,
		},
		{
			name: "issued in the future",
			token: func(t *testing.T, src *authn.ServiceTokenSource, clock *authntest.Clock, _ authn.ServiceConfig) string {
				token := must(src.Token("auditsvc"))
				clock.Advance(-authn.DefaultLeeway - time.Second)
				return token
			},
			wantErr: authn.ErrTokenNotYetValid,
		},
		{
			name: "another platform's key",
			token: func(t *testing.T, _ *authn.ServiceTokenSource, clock *authntest.Clock, _ authn.ServiceConfig) string {
				other, err := authn.NewServiceTokenSource("identitysvc", authntest.ServiceConfig(), authn.WithClock(clock.Now))
				require.NoError(t, err)
				return must(other.Token("auditsvc"))
			},
			wantErr: authn.ErrKeyUnknown,
		},
		{
			name: "forged with another key under our kid",
			token: func(t *testing.T, src *authn.ServiceTokenSource, _ *authntest.Clock, _ authn.ServiceConfig) string {
				parts := strings.Split(must(src.Token("auditsvc")), ".")
				_, priv, err := ed25519.GenerateKey(rand.Reader)
				require.NoError(t, err)
				input := parts[0] + "." + parts[1]
				return input + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(priv, []byte(input)))
			},
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name: "sub differs from iss",
			token: func(t *testing.T, src *authn.ServiceTokenSource, clock *authntest.Clock, cfg authn.ServiceConfig) string {
				return signService(t, cfg, nil, map[string]any{"iss": "identitysvc", "sub": "admin", "aud": "auditsvc", "iat": clock.Now().Unix(), "exp": clock.Now().Add(time.Minute).Unix()})
			},
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name: "no iat",
			token: func(t *testing.T, src *authn.ServiceTokenSource, clock *authntest.Clock, cfg authn.ServiceConfig) string {
				return signService(t, cfg, nil, map[string]any{"iss": "identitysvc", "sub": "identitysvc", "aud": "auditsvc", "exp": clock.Now().Add(time.Minute).Unix()})
			},
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name: "exp and iat 0, a lifetime of nothing that never ends",
			token: func(t *testing.T, src *authn.ServiceTokenSource, clock *authntest.Clock, cfg authn.ServiceConfig) string {
				return signService(t, cfg, nil, map[string]any{"iss": "identitysvc", "sub": "identitysvc", "aud": "auditsvc", "iat": 0, "exp": 0})
			},
			wantErr: authn.ErrTokenMalformed,
		},
		{
			name: "lifetime over an hour",
			token: func(t *testing.T, src *authn.ServiceTokenSource, clock *authntest.Clock, cfg authn.ServiceConfig) string {
				return signService(t, cfg, nil, map[string]any{"iss": "identitysvc", "sub": "identitysvc", "aud": "auditsvc", "iat": clock.Now().Unix(), "exp": clock.Now().Add(24 * time.Hour).Unix()})
			},
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name: "access token type",
			token: func(t *testing.T, src *authn.ServiceTokenSource, clock *authntest.Clock, cfg authn.ServiceConfig) string {
				return signService(t, cfg, map[string]any{"typ": "at+jwt"}, map[string]any{"iss": "identitysvc", "sub": "identitysvc", "aud": "auditsvc", "iat": clock.Now().Unix(), "exp": clock.Now().Add(time.Minute).Unix()})
			},
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name: "access token",
			token: func(t *testing.T, _ *authn.ServiceTokenSource, clock *authntest.Clock, _ authn.ServiceConfig) string {
				srv := authntest.NewServer(t, authntest.WithClock(clock.Now))
				return srv.Issue(authntest.WithSubject("identitysvc"), authntest.WithAudience("auditsvc"))
			},
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name: "alg none",
			token: func(t *testing.T, src *authn.ServiceTokenSource, clock *authntest.Clock, cfg authn.ServiceConfig) string {
				parts := strings.Split(must(src.Token("auditsvc")), ".")
				header := decodeSegment(t, parts[0]+".x.y", 0)
				header["alg"] = "none"
				return b64(string(must(json.Marshal(header)))) + "." + parts[1] + "."
			},
			wantErr: authn.ErrTokenInvalid,
		},
		{
			name: "empty",
			token: func(*testing.T, *authn.ServiceTokenSource, *authntest.Clock, authn.ServiceConfig) string {
				return ""
			},
			wantErr: authn.ErrTokenMissing,
		},
		{
			name: "garbage",
			token: func(*testing.T, *authn.ServiceTokenSource, *authntest.Clock, authn.ServiceConfig) string {
				return "not a token"
			},
			wantErr: authn.ErrTokenMalformed,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src, v, clock, cfg := serviceSetup(t)
			token := tt.token(t, src, clock, cfg)
			p, err := v.Verify(t.Context(), token)
			require.ErrorIs(t, err, tt.wantErr)
			t.Log(err)
			assert.Zero(t, p)
		})
	}
}

// TestAccessVerifierRejectsServiceTokens presents a service token to an
// access token verifier, even one whose JWKS published the service key.
func TestAccessVerifierRejectsServiceTokens(t *testing.T) {
	t.Parallel()
	srv, clock := newServer(t)
	v := srv.NewVerifier()
	cfg := authntest.ServiceConfig()
	src, err := authn.NewServiceTokenSource(authntest.Audience, cfg, authn.WithClock(clock.Now))
	require.NoError(t, err)

	_, err = v.Verify(t.Context(), must(src.Token(authntest.Audience)))
	require.ErrorIs(t, err, authn.ErrTokenInvalid)

	// Even signed by a key in the JWKS, with every claim right, the type
	// gives a service token away.
	_, err = v.Verify(t.Context(), srv.Issue(authntest.WithHeader("typ", authn.ServiceTokenType)))
	require.ErrorIs(t, err, authn.ErrTokenInvalid)
}

func TestServiceKeyRotation(t *testing.T) {
	t.Parallel()
	clock := authntest.NewClock(epoch)
	oldCfg, newCfg := authntest.ServiceConfig(), authntest.ServiceConfig()
	oldSource := must(authn.NewServiceTokenSource("identitysvc", oldCfg, authn.WithClock(clock.Now)))
	newSource := must(authn.NewServiceTokenSource("identitysvc", newCfg, authn.WithClock(clock.Now)))

	// Mid-rotation: the new key signs, the old one is still accepted.
	rotating := newCfg
	rotating.ServicePreviousKeys = []config.Secret{oldCfg.ServiceKey}
	v := must(authn.NewServiceVerifier("auditsvc", rotating, authn.WithClock(clock.Now)))
	_, err := v.Verify(t.Context(), must(oldSource.Token("auditsvc")))
	require.NoError(t, err)
	_, err = v.Verify(t.Context(), must(newSource.Token("auditsvc")))
	require.NoError(t, err)

	// Done: the old key is refused.
	done := must(authn.NewServiceVerifier("auditsvc", newCfg, authn.WithClock(clock.Now)))
	_, err = done.Verify(t.Context(), must(oldSource.Token("auditsvc")))
	require.ErrorIs(t, err, authn.ErrKeyUnknown)
}

func TestServiceConfigRejectsBadKeys(t *testing.T) {
	t.Parallel()
	seed := make([]byte, ed25519.SeedSize)
	tests := []struct {
		name    string
		key     string
		wantErr string
	}{
		{"std base64", base64.StdEncoding.EncodeToString(seed), ""},
		{"raw url base64", base64.RawURLEncoding.EncodeToString(seed), ""},
		{"with newline", base64.StdEncoding.EncodeToString(seed) + "\n", ""},
		{"empty", "", "service_key: is required"},
		{"not base64", "correct horse battery staple!", "service_key: is not base64"},
		{"too short", base64.StdEncoding.EncodeToString(seed[:16]), "service_key: decodes to 16 bytes"},
		{"private key instead of seed", base64.StdEncoding.EncodeToString(make([]byte, 64)), "service_key: decodes to 64 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := authn.NewServiceVerifier("auditsvc", authn.ServiceConfig{ServiceKey: config.Secret(tt.key)})
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
			if tt.key != "" {
				assert.NotContains(t, err.Error(), strings.TrimSpace(tt.key), "errors never show the key")
			}
		})
	}
	_, err := authn.NewServiceTokenSource("", authntest.ServiceConfig())
	require.Error(t, err)
	_, err = must(authn.NewServiceTokenSource("a", authntest.ServiceConfig())).Token("")
	require.Error(t, err)
}

// signService signs a service token with cfg's key, with header overrides
// and the given claims.
func signService(t *testing.T, cfg authn.ServiceConfig, header, claims map[string]any) string {
	t.Helper()
	seed, err := base64.StdEncoding.DecodeString(cfg.ServiceKey.Value())
	require.NoError(t, err)
	priv := ed25519.NewKeyFromSeed(seed)
	// Borrow the kid of a real token.
	src := must(authn.NewServiceTokenSource("x", cfg))
	h := decodeSegment(t, must(src.Token("x")), 0)
	for k, v := range header {
		h[k] = v
	}
	input := b64(string(must(json.Marshal(h)))) + "." + b64(string(must(json.Marshal(claims))))
	return input + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(priv, []byte(input)))
}

// decodeSegment decodes the JSON object in segment i of token.
func decodeSegment(t *testing.T, token string, i int) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[i])
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	return m
}
