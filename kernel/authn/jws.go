package authn

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
)

// This file parses compact JWS (RFC 7515 section 7.1) and the JWT claims
// (RFC 7519 section 4.1) the package checks, with the standard library
// rather than a JOSE library such as jwx:
//
//   - The algorithm comes from the key, never from the token. The only
//     signature code that exists is Ed25519 and ECDSA P-256 verification
//     (see publicKey.verify); there is no HMAC and no "none" to fall into,
//     so algorithm confusion (an HS256 token "signed" with the public key,
//     alg none) is impossible by construction, not by configuring a
//     general-purpose library correctly.
//   - The gateway verifies every request. Decoding exactly the claims we
//     read into a struct keeps a fresh verification at about 1.1x the bare
//     Ed25519 check (BenchmarkVerify reports the ratio); the rest of the
//     time goes to two small encoding/json decodes and the token cache.
//   - A JWK of the two key types is a few lines (jwk.go), and the standard
//     library validates the point; jwx's jwk package would bring an HTTP
//     cache and four more modules into every service's build.

// maxTokenSize bounds what is parsed at all. Portcullis tokens are well
// under 1 KiB; 8 KiB leaves room for claims added later while a hostile
// token cannot cost much to reject.
const maxTokenSize = 8 << 10

// segmentEncoding decodes JWS segments: base64url without padding (RFC 7515
// section 2), strict so that each token has exactly one spelling. It is
// never modified.
var segmentEncoding = base64.RawURLEncoding.Strict()

// jwsHeader holds the JOSE header parameters the package reads. Others,
// such as jku, jwk, x5u and x5c, are ignored: a key named by the token
// itself is never trusted.
type jwsHeader struct {
	Alg  string          `json:"alg"`
	Kid  string          `json:"kid"`
	Typ  string          `json:"typ"`
	Crit json.RawMessage `json:"crit"`
}

// compactJWS is a token split into its parts, its signature not yet
// checked.
type compactJWS struct {
	header       jwsHeader
	signingInput string // ASCII(BASE64URL(header) || '.' || BASE64URL(payload))
	payload      string // still base64url-encoded
	signature    []byte
}

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

// parseCompact splits and decodes token. Errors wrap [ErrTokenMalformed].
func parseCompact(token string) (compactJWS, error) {
	var t compactJWS
	if err := checkSize(token); err != nil {
		return t, err
	}
	h, rest, ok1 := strings.Cut(token, ".")
	p, s, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.IndexByte(s, '.') >= 0 {
		return t, errorf(ErrTokenMalformed, "not three dot-separated segments")
	}
	hb, err := segmentEncoding.DecodeString(h)
	if err != nil {
		return t, errorf(ErrTokenMalformed, "header: %v", err)
	}
	if err := json.Unmarshal(hb, &t.header); err != nil || !bytes.HasPrefix(bytes.TrimSpace(hb), []byte("{")) {
		return t, errorf(ErrTokenMalformed, "header is not a JSON object")
	}
	if t.signature, err = segmentEncoding.DecodeString(s); err != nil {
		return t, errorf(ErrTokenMalformed, "signature: %v", err)
	}
	t.signingInput = token[:len(h)+1+len(p)]
	t.payload = p
	return t, nil
}

// check applies the header rules common to every token: a critical
// extension must be understood (RFC 7515 section 4.1.11) and we understand
// none, and the key must be named.
func (h *jwsHeader) check() error {
	if h.Crit != nil {
		return errorf(ErrTokenInvalid, "crit header parameter not supported")
	}
	if h.Kid == "" {
		return errorf(ErrTokenInvalid, "kid header parameter missing")
	}
	return nil
}

// jwtClaims holds the registered claims the package reads, and `sid`.
type jwtClaims struct {
	Iss string       `json:"iss"`
	Sub string       `json:"sub"`
	Aud audience     `json:"aud"`
	Exp *numericDate `json:"exp"`
	Nbf *numericDate `json:"nbf"`
	Iat *numericDate `json:"iat"`
	Jti string       `json:"jti"`
	Sid string       `json:"sid"`
}

// decodeClaims decodes the payload of a token whose signature was checked.
// Errors wrap [ErrTokenMalformed].
func decodeClaims(payload string) (jwtClaims, error) {
	var c jwtClaims
	b, err := segmentEncoding.DecodeString(payload)
	if err != nil {
		return c, errorf(ErrTokenMalformed, "payload: %v", err)
	}
	if !bytes.HasPrefix(bytes.TrimSpace(b), []byte("{")) {
		return c, errorf(ErrTokenMalformed, "claims are not a JSON object")
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, errorf(ErrTokenMalformed, "claims: %v", err)
	}
	return c, nil
}

// checkTimes checks exp (required), nbf and iat against now with leeway.
func (c *jwtClaims) checkTimes(now time.Time, leeway time.Duration) error {
	if c.Exp == nil {
		return errorf(ErrTokenInvalid, "exp claim missing")
	}
	// RFC 7519 section 4.1.4: the current time must be before exp.
	if exp := c.Exp.time(); !now.Before(exp.Add(leeway)) {
		return errorf(ErrTokenExpired, "expired at %s, now %s, leeway %s", exp.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), leeway)
	}
	if c.Nbf != nil {
		if nbf := c.Nbf.time(); now.Add(leeway).Before(nbf) {
			return errorf(ErrTokenNotYetValid, "not before %s, now %s, leeway %s", nbf.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), leeway)
		}
	}
	if c.Iat != nil {
		if iat := c.Iat.time(); now.Add(leeway).Before(iat) {
			return errorf(ErrTokenNotYetValid, "issued in the future at %s, now %s, leeway %s", iat.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), leeway)
		}
	}
	return nil
}

// principal returns the principal c names.
func (c *jwtClaims) principal(kind Kind) Principal {
	p := Principal{
		Kind:      kind,
		Subject:   c.Sub,
		SessionID: c.Sid,
		TokenID:   c.Jti,
		// Full slice expression: an append by a caller cannot write into
		// the array other holders of the cached principal share.
		Audience:  c.Aud[:len(c.Aud):len(c.Aud)],
		ExpiresAt: c.Exp.time(),
	}
	if c.Iat != nil {
		p.IssuedAt = c.Iat.time()
	}
	return p
}

// audience is the `aud` claim, a string or an array of strings (RFC 7519
// section 4.1.3).
type audience []string

// UnmarshalJSON accepts a string or an array of strings.
func (a *audience) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*a = audience{s}
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return errors.New("aud is neither a string nor an array of strings")
	}
	*a = list
	return nil
}

// contains reports whether want is one of a's values.
func (a audience) contains(want string) bool {
	for _, s := range a {
		if s == want {
			return true
		}
	}
	return false
}

// numericDate is a JWT NumericDate: seconds since the epoch, possibly with
// a fraction (RFC 7519 section 2).
type numericDate struct{ sec, nsec int64 }

// maxNumericDate is the year 9999; a later date is a forgery or a bug.
const maxNumericDate = 253402300799

// UnmarshalJSON accepts a JSON number between 0 and [maxNumericDate].
func (d *numericDate) UnmarshalJSON(b []byte) error {
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > maxNumericDate {
		return errors.New("a date is not a number of seconds between 1970 and 9999")
	}
	sec, frac := math.Modf(f)
	d.sec, d.nsec = int64(sec), int64(frac*1e9)
	return nil
}

func (d *numericDate) time() time.Time { return time.Unix(d.sec, d.nsec) }
