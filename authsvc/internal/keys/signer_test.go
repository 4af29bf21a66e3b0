package keys

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A token signed by a key verifies against the key's published JWK alone,
// carries the kid and typ the kernel verifier expects, and its claims.
func TestSignVerifiesAgainstThePublishedJWK(t *testing.T) {
	t.Parallel()
	for _, alg := range []string{AlgEdDSA, AlgES256} {
		t.Run(alg, func(t *testing.T) {
			t.Parallel()
			k, der, err := generateKey(alg, time.Now())
			require.NoError(t, err)
			claims := &Claims{Issuer: "portcullis", Subject: "user-1", Audience: "portcullis", ExpiresAt: 2000000000, IssuedAt: 1900000000, NotBefore: 1900000000, ID: "j", SessionID: "s"}
			token, err := k.Sign(claims)
			require.NoError(t, err)

			published, err := json.Marshal(k.Public)
			require.NoError(t, err)
			pub, err := jwk.ParseKey(published)
			require.NoError(t, err)
			payload, err := jws.Verify([]byte(token), jws.WithKey(jwa.SignatureAlgorithm(alg), pub))
			require.NoError(t, err)
			var got Claims
			require.NoError(t, json.Unmarshal(payload, &got))
			assert.Equal(t, *claims, got)

			msg, err := jws.Parse([]byte(token))
			require.NoError(t, err)
			h := msg.Signatures()[0].ProtectedHeaders()
			assert.Equal(t, k.ID, h.KeyID())
			assert.Equal(t, "at+jwt", h.Type())
			assert.Equal(t, alg, h.Algorithm().String())

			// The sealed form opens to the same key.
			reopened, err := parseKey(der, k.CreatedAt)
			require.NoError(t, err)
			assert.Equal(t, k.Public, reopened.Public)
		})
	}
}

// The kid is the RFC 7638 thumbprint: RFC 8037 appendix A.3's vector.
func TestKidIsTheThumbprint(t *testing.T) {
	t.Parallel()
	x, err := base64.RawURLEncoding.DecodeString("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
	require.NoError(t, err)
	j, err := publicJWK(ed25519.PublicKey(x))
	require.NoError(t, err)
	assert.Equal(t, JWK{Kty: "OKP", Kid: "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k", Use: "sig", Alg: AlgEdDSA, Crv: "Ed25519", X: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}, j)
}

func TestUnsupportedKeysAreRefused(t *testing.T) {
	t.Parallel()
	_, _, err := generateKey("HS256", time.Now())
	assert.Error(t, err)
	_, err = publicJWK("not a key")
	assert.Error(t, err)
}
