package authn

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Test vectors from the RFCs, so that the JWK and JWS code is checked
// against something other than itself.
const (
	// RFC 8037 appendix A.2 (public key) and A.4 (JWS of "Example of
	// Ed25519 signing" with header {"alg":"EdDSA"}).
	rfc8037X   = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
	rfc8037JWS = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
	// RFC 8037 appendix A.3: the thumbprint of that key.
	rfc8037Thumbprint = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
	// RFC 7515 appendix A.3: an ES256 key and a JWS it signed.
	rfc7515X   = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"
	rfc7515Y   = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
	rfc7515JWS = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
)

func TestRFCVectors(t *testing.T) {
	t.Parallel()
	keys, skipped, err := parseKeySet([]byte(`{"keys":[
		{"kty":"OKP","crv":"Ed25519","x":"` + rfc8037X + `","kid":"ed"},
		{"kty":"EC","crv":"P-256","x":"` + rfc7515X + `","y":"` + rfc7515Y + `","kid":"ec"}
	]}`))
	require.NoError(t, err)
	require.Empty(t, skipped)
	require.Len(t, keys, 2)

	tests := []struct {
		kid, jws, alg string
	}{
		{"ed", rfc8037JWS, AlgEdDSA},
		{"ec", rfc7515JWS, AlgES256},
	}
	for _, tt := range tests {
		k := keys[tt.kid]
		assert.Equal(t, tt.alg, k.alg.String())
		_, err := jws.Verify([]byte(tt.jws), jws.WithKey(k.alg, k.raw))
		assert.NoError(t, err, tt.kid)
		// A signature with one bit flipped, still well formed, must fail
		// the signature check itself, not the parse.
		input, sig, _ := strings.Cut(tt.jws[strings.IndexByte(tt.jws, '.')+1:], ".")
		raw, err := segmentEncoding.DecodeString(sig)
		require.NoError(t, err)
		raw[0] ^= 1
		tampered := tt.jws[:strings.IndexByte(tt.jws, '.')+1] + input + "." + segmentEncoding.EncodeToString(raw)
		_, err = jws.Verify([]byte(tampered), jws.WithKey(k.alg, k.raw))
		assert.True(t, jws.IsVerificationError(err), "%s: %v", tt.kid, err)
	}
	tp, err := thumbprint(keys["ed"].raw)
	require.NoError(t, err)
	assert.Equal(t, rfc8037Thumbprint, tp)
}

func TestParseKeySetSkips(t *testing.T) {
	t.Parallel()
	ed := `"kty":"OKP","crv":"Ed25519","x":"` + rfc8037X + `"`
	ec := `"kty":"EC","crv":"P-256","x":"` + rfc7515X + `","y":"` + rfc7515Y + `"`
	tests := []struct {
		name string
		jwk  string
		want string // in the skip reason; empty means usable
	}{
		{"Ed25519", `{` + ed + `,"kid":"a","alg":"EdDSA","use":"sig","key_ops":["verify"]}`, ""},
		{"P-256", `{` + ec + `,"kid":"a","alg":"ES256"}`, ""},
		{"no kid", `{` + ed + `}`, "no kid"},
		{"private key", `{` + ed + `,"kid":"a","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}`, "private key"},
		{"encryption key", `{` + ed + `,"kid":"a","use":"enc"}`, "use"},
		{"no verify op", `{` + ed + `,"kid":"a","key_ops":["sign"]}`, "key_ops"},
		{"HS256 alg on an OKP key", `{` + ed + `,"kid":"a","alg":"HS256"}`, "alg"},
		{"ES256 alg on an OKP key", `{` + ed + `,"kid":"a","alg":"ES256"}`, "alg"},
		{"symmetric", `{"kty":"oct","kid":"a","k":"c2VjcmV0"}`, "not supported"},
		{"RSA", `{"kty":"RSA","kid":"a","n":"AQAB","e":"AQAB","alg":"RS256"}`, "not supported"},
		{"Ed448", `{"kty":"OKP","crv":"Ed448","kid":"a","x":"` + rfc8037X + `"}`, "not supported"},
		{"short x", `{"kty":"OKP","crv":"Ed25519","kid":"a","x":"AAAA"}`, "bytes"},
		{"point off the curve", `{"kty":"EC","crv":"P-256","kid":"a","x":"` + rfc7515X + `","y":"` + rfc7515X + `"}`, "not on curve"},
		{"not an object", `"key"`, "keys[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			keys, skipped, err := parseKeySet([]byte(`{"keys":[` + tt.jwk + `]}`))
			if tt.want == "" {
				require.NoError(t, err)
				assert.Len(t, keys, 1)
				return
			}
			require.Error(t, err, "a set without a usable key is an error")
			require.Len(t, skipped, 1)
			assert.Contains(t, skipped[0], tt.want)
		})
	}

	_, skipped, err := parseKeySet([]byte(`{"keys":[{` + ed + `,"kid":"a"},{` + ec + `,"kid":"a"}]}`))
	require.NoError(t, err)
	assert.Contains(t, strings.Join(skipped, "\n"), "repeated")

	_, _, err = parseKeySet([]byte(`<html>`))
	require.Error(t, err)
}

func TestCacheMaxAge(t *testing.T) {
	t.Parallel()
	tests := []struct {
		header []string
		want   time.Duration
	}{
		{nil, -1},
		{[]string{"public"}, -1},
		{[]string{"max-age=300"}, 5 * time.Minute},
		{[]string{"public, max-age=60, must-revalidate"}, time.Minute},
		{[]string{"Max-Age=60"}, time.Minute},
		{[]string{`max-age="60"`}, time.Minute},
		{[]string{"max-age=-5"}, -1},
		{[]string{"max-age=abc"}, -1},
		{[]string{"max-age=99999999999999"}, 365 * 24 * time.Hour},
		{[]string{"max-age=60", "no-store"}, 0},
		{[]string{"no-cache"}, 0},
	}
	for _, tt := range tests {
		h := http.Header{"Cache-Control": tt.header}
		assert.Equal(t, tt.want, cacheMaxAge(h), "%q", tt.header)
	}
}

func TestTokenCacheEviction(t *testing.T) {
	t.Parallel()
	now := time.Unix(1e9, 0)
	c := newTokenCache(8)
	for i := range 8 {
		c.put(string(rune('a'+i)), Principal{Subject: "s"}, now.Add(time.Duration(i)*time.Second), c.currentEpoch(), now)
	}
	require.Equal(t, 8, c.len())

	// Full: what expired goes first.
	later := now.Add(3500 * time.Millisecond) // a..d expired
	c.put("x", Principal{}, later.Add(time.Hour), c.currentEpoch(), later)
	assert.Equal(t, 5, c.len())
	_, ok := c.get("a", later)
	assert.False(t, ok)
	_, ok = c.get("h", later)
	assert.True(t, ok)

	// Full of live entries: some go, never more than the size.
	for i := range 20 {
		c.put(string(rune('A'+i)), Principal{}, later.Add(time.Hour), c.currentEpoch(), later)
		assert.LessOrEqual(t, c.len(), 8)
	}

	// A put that started before a clear is dropped.
	epoch := c.currentEpoch()
	c.clear()
	c.put("stale", Principal{}, later.Add(time.Hour), epoch, later)
	assert.Equal(t, 0, c.len())
}

func TestDecodeClaims(t *testing.T) {
	t.Parallel()
	tests := []struct {
		payload string
		exp     time.Time // zero: no exp
		wantErr bool
	}{
		{`{"exp":1300819380}`, time.Unix(1300819380, 0), false},
		{`{"exp":1300819380.75}`, time.Unix(1300819380, 0), false}, // read to the second
		{`{"exp":1.3e9}`, time.Unix(1_300_000_000, 0), false},
		{`{"sub":"a"}`, time.Time{}, false},
		{`{"exp":-1}`, time.Time{}, true},
		{`{"exp":1e300}`, time.Time{}, true},
		{`{"exp":"1300819380"}`, time.Time{}, true},
		{`{"exp":true}`, time.Time{}, true},
		{`{"exp":null}`, time.Time{}, true},
		{`{"aud":7}`, time.Time{}, true},
		{`[1,2]`, time.Time{}, true},
	}
	for _, tt := range tests {
		tok, err := decodeClaims([]byte(tt.payload))
		if tt.wantErr {
			assert.ErrorIs(t, err, ErrTokenMalformed, tt.payload)
			continue
		}
		require.NoError(t, err, tt.payload)
		assert.True(t, tt.exp.Equal(tok.Expiration()), "%s: got %v", tt.payload, tok.Expiration())
	}
}
