package authn

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// This file verifies JWTs (RFC 7519) signed as compact JWS (RFC 7515) with
// github.com/lestrrat-go/jwx/v2, under rules that make the classic JWT
// attacks impossible rather than merely configured away:
//
//   - The algorithm comes from the key, never from the token. jwx is given
//     exactly one key per token, by a key provider that first checks the
//     token's `alg` is allowed and equal to the algorithm the key was
//     published for, and then hands over the key with the key's algorithm.
//     An HS256 token "signed" with the public key, or `alg: none`, never
//     reaches a signature check.
//   - The key is the one `kid` names in the set the verifier trusts; keys
//     a token names itself (jku, jwk, x5u, x5c) are never used.
//   - Only the compact serialization, at most maxTokenSize bytes.
//   - Claims are validated by jwx's jwt.Validate (iss, aud, exp, nbf, iat
//     with leeway) and its errors mapped onto the package's, so callers see
//     one vocabulary.

// maxTokenSize bounds what is parsed at all. Portcullis tokens are well
// under 1 KiB; 8 KiB leaves room for claims added later while a hostile
// token cannot cost much to reject.
const maxTokenSize = 8 << 10

// segmentEncoding is base64url without padding (RFC 7515 section 2), the
// encoding of key thumbprints.
var segmentEncoding = base64.RawURLEncoding

// checkSize rejects an empty token, and one too long to be ours before it
// costs a cache lookup (which hashes it) or any decoding.
func checkSize(token string) error {
	switch {
	case token == "":
		return ErrTokenMissing
	case len(token) > maxTokenSize:
		return errorf(ErrTokenMalformed, "longer than %d bytes", maxTokenSize)
	}
	return nil
}

// notBase64URL reports whether r is neither a base64url character (RFC
// 4648 section 5) nor the dot between segments.
func notBase64URL(r rune) bool {
	return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_' || r == '.')
}

// canonicalSegment reports whether s, made of base64url characters, is the
// one spelling of what it encodes: a length base64 can have, and the unused
// low bits of its last character zero (RFC 4648 section 3.5). It decodes
// nothing, so it costs no allocation on the verification path.
func canonicalSegment(s string) bool {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	var unused byte
	switch len(s) % 4 {
	case 0:
		return true
	case 1:
		return false
	case 2:
		unused = 0x0f // 12 bits for one byte
	case 3:
		unused = 0x03 // 18 bits for two bytes
	}
	return byte(strings.IndexByte(alphabet, s[len(s)-1]))&unused == 0
}

// keyLookup checks a token's protected header and returns the key it
// names. Its errors are the package's and reach the caller as they are.
type keyLookup func(ctx context.Context, h jws.Headers) (*publicKey, error)

// checkHeader applies the header rules common to every token: a critical
// extension must be understood (RFC 7515 section 4.1.11) and we understand
// none, and the key must be named.
func checkHeader(h jws.Headers) error {
	if _, ok := h.Get(jws.CriticalKey); ok {
		return errorf(ErrTokenInvalid, "crit header parameter not supported")
	}
	if h.KeyID() == "" {
		return errorf(ErrTokenInvalid, "kid header parameter missing")
	}
	return nil
}

// verifyJWT checks token's signature with the key lookup returns and
// validates its claims at now with leeway and the extra rules. Errors wrap
// the package's sentinels.
// The caller has applied checkSize, before its cache lookup.
func verifyJWT(ctx context.Context, token string, lookup keyLookup, now time.Time, leeway time.Duration, rules ...jwt.ValidateOption) (jwt.Token, error) {
	if strings.Count(token, ".") != 2 {
		return nil, errorf(ErrTokenMalformed, "not three dot-separated segments")
	}
	// jwx also accepts padded and standard base64, and ignores the unused
	// trailing bits of a segment; a token has one spelling here, so that
	// one token cannot take many cache slots or signature checks.
	if i := strings.IndexFunc(token, notBase64URL); i >= 0 {
		return nil, errorf(ErrTokenMalformed, "byte %d is not base64url without padding", i)
	}
	for segment := range strings.SplitSeq(token, ".") {
		if !canonicalSegment(segment) {
			return nil, errorf(ErrTokenMalformed, "a segment is not canonical base64url")
		}
	}
	var (
		key       *publicKey
		lookupErr error
	)
	provider := jws.KeyProviderFunc(func(_ context.Context, sink jws.KeySink, sig *jws.Signature, _ *jws.Message) error {
		key, lookupErr = lookup(ctx, sig.ProtectedHeaders())
		if lookupErr != nil {
			return lookupErr
		}
		sink.Key(key.alg, key.raw)
		return nil
	})
	payload, err := jws.Verify([]byte(token), jws.WithKeyProvider(provider), jws.WithCompact())
	switch {
	case lookupErr != nil:
		return nil, lookupErr
	case key != nil && jws.IsVerificationError(err):
		return nil, errorf(ErrTokenInvalid, "signature does not verify with key %s", quote(key.kid))
	case err != nil:
		return nil, errorf(ErrTokenMalformed, "%v", err)
	}
	t, err := decodeClaims(payload)
	if err != nil {
		return nil, err
	}
	opts := []jwt.ValidateOption{
		jwt.WithClock(jwt.ClockFunc(func() time.Time { return now })),
		jwt.WithAcceptableSkew(leeway),
		jwt.WithTruncation(0), // compare at full precision, as RFC 7519 section 4.1.4 says
		jwt.WithRequiredClaim(jwt.ExpirationKey),
	}
	err = jwt.Validate(t, append(opts, rules...)...)
	switch {
	case err == nil:
		return t, nil
	case errors.Is(err, jwt.ErrTokenExpired()):
		return nil, errorf(ErrTokenExpired, "exp is past at %s with leeway %s", now.UTC().Format(time.RFC3339), leeway)
	case errors.Is(err, jwt.ErrTokenNotYetValid()), errors.Is(err, jwt.ErrInvalidIssuedAt()):
		return nil, errorf(ErrTokenNotYetValid, "%v at %s with leeway %s", err, now.UTC().Format(time.RFC3339), leeway)
	default:
		return nil, errorf(ErrTokenInvalid, "%v", err)
	}
}

// claimSet holds the claims the package reads, decoded straight from the
// payload. jwt.Parse would decode every claim into jwx's generic token
// through encoding/json's token stream, which costs more than the
// signature check; a struct decode costs a fraction of that, and the
// result is handed to jwt.Validate, so jwx's rules still judge it.
type claimSet struct {
	Iss string          `json:"iss"`
	Sub string          `json:"sub"`
	Aud json.RawMessage `json:"aud"` // a string or an array of strings
	Exp json.RawMessage `json:"exp"` // a JSON number, never a string
	Nbf json.RawMessage `json:"nbf"`
	Iat json.RawMessage `json:"iat"`
	Jti string          `json:"jti"`
	Sid string          `json:"sid"`
}

// maxNumericDate is the year 9999; a later date is a forgery or a bug.
const maxNumericDate = 253402300799

// decodeClaims decodes the payload of a token whose signature was checked
// into a jwt.Token. Errors wrap [ErrTokenMalformed].
func decodeClaims(payload []byte) (jwt.Token, error) {
	var c claimSet
	if !bytes.HasPrefix(bytes.TrimSpace(payload), []byte("{")) {
		return nil, errorf(ErrTokenMalformed, "claims are not a JSON object")
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, errorf(ErrTokenMalformed, "claims: %v", err)
	}
	t := jwt.New()
	set := func(name string, v any) error { return t.Set(name, v) }
	var errs []error
	type stringClaim struct{ name, value string }
	for _, sc := range [...]stringClaim{{jwt.IssuerKey, c.Iss}, {jwt.SubjectKey, c.Sub}, {jwt.JwtIDKey, c.Jti}, {"sid", c.Sid}} {
		if sc.value != "" {
			errs = append(errs, set(sc.name, sc.value))
		}
	}
	if len(c.Aud) > 0 {
		var aud []string
		if c.Aud[0] == '"' {
			var one string
			errs = append(errs, json.Unmarshal(c.Aud, &one))
			aud = []string{one}
		} else if err := json.Unmarshal(c.Aud, &aud); err != nil {
			errs = append(errs, errors.New("aud is neither a string nor an array of strings"))
		}
		errs = append(errs, set(jwt.AudienceKey, aud))
	}
	type dateClaim struct {
		name  string
		value json.RawMessage
	}
	for _, dc := range [...]dateClaim{{jwt.ExpirationKey, c.Exp}, {jwt.NotBeforeKey, c.Nbf}, {jwt.IssuedAtKey, c.Iat}} {
		name, raw := dc.name, dc.value
		if raw == nil {
			continue
		}
		f, err := strconv.ParseFloat(string(raw), 64) // refuses "123", quoted
		// Under a second is refused with the negatives: jwx reads a time
		// of 0 as no time at all, so an exp of 0 would never expire.
		if err != nil || f < 1 || f > maxNumericDate {
			errs = append(errs, fmt.Errorf("%s is not a number of seconds between 1970 and 9999", name))
			continue
		}
		// Whole seconds, as Portcullis issues them and jwx reads them.
		errs = append(errs, set(name, time.Unix(int64(f), 0)))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, errorf(ErrTokenMalformed, "claims: %v", err)
	}
	return t, nil
}

// stringClaim returns the string claim name of t, or "".
func stringClaim(t jwt.Token, name string) string {
	v, ok := t.Get(name)
	if !ok {
		return ""
	}
	s, _ := v.(string)
	return s
}

// principal returns the principal t names.
func principal(t jwt.Token, kind Kind) Principal {
	aud := t.Audience()
	return Principal{
		Kind:      kind,
		Subject:   t.Subject(),
		SessionID: stringClaim(t, "sid"),
		TokenID:   t.JwtID(),
		// Full slice expression: an append by a caller cannot write into
		// the array other holders of the cached principal share.
		Audience:  aud[:len(aud):len(aud)],
		ExpiresAt: t.Expiration(),
		IssuedAt:  t.IssuedAt(),
	}
}
