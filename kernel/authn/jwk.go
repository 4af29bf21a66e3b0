package authn

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
)

// publicKey is a verification key and the one algorithm it may verify. A
// token's `alg` must equal it: the key decides how a signature is checked,
// never the token.
type publicKey struct {
	kid string
	alg string // AlgEdDSA or AlgES256
	ed  ed25519.PublicKey
	ec  *ecdsa.PublicKey
}

// verify reports whether sig is k's signature of signingInput.
func (k *publicKey) verify(signingInput string, sig []byte) bool {
	switch k.alg {
	case AlgEdDSA:
		// ed25519.Verify rejects non-canonical S (RFC 8032 section
		// 5.1.7), so a signature cannot be altered into another valid one.
		return len(sig) == ed25519.SignatureSize && ed25519.Verify(k.ed, []byte(signingInput), sig)
	case AlgES256:
		// RFC 7518 section 3.4: R and S as 32-byte big-endian integers,
		// not ASN.1.
		if len(sig) != 64 {
			return false
		}
		h := sha256.Sum256([]byte(signingInput))
		r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		return ecdsa.Verify(k.ec, h[:], r, s)
	}
	return false
}

// equal reports whether k and o are the same key for the same algorithm.
func (k *publicKey) equal(o *publicKey) bool {
	if k == nil || o == nil {
		return k == o
	}
	if k.kid != o.kid || k.alg != o.alg {
		return false
	}
	if k.alg == AlgEdDSA {
		return k.ed.Equal(o.ed)
	}
	return k.ec.Equal(o.ec)
}

// jwk is one member of a JWK Set, with the parameters of RFC 7517 section 4
// and RFC 7518 section 6 the package reads.
type jwk struct {
	Kty    string   `json:"kty"`
	Kid    string   `json:"kid"`
	Use    string   `json:"use"`
	KeyOps []string `json:"key_ops"`
	Alg    string   `json:"alg"`
	Crv    string   `json:"crv"`
	X      string   `json:"x"`
	Y      string   `json:"y"`
	D      string   `json:"d"`
}

// parseKeySet returns the usable keys of a JWK Set (RFC 7517 section 5) by
// kid, and why each other key was left out. A set without one usable key
// is an error: the Auth service always publishes its current key, so an
// empty set is a fault, and the keys known before are better kept.
func parseKeySet(data []byte) (map[string]*publicKey, []string, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, nil, fmt.Errorf("not a JWK Set: %w", err)
	}
	keys := make(map[string]*publicKey, len(doc.Keys))
	var skipped []string
	for i, raw := range doc.Keys {
		var j jwk
		if err := json.Unmarshal(raw, &j); err != nil {
			skipped = append(skipped, fmt.Sprintf("keys[%d]: %v", i, err))
			continue
		}
		k, err := parseJWK(j)
		switch {
		case err != nil:
			skipped = append(skipped, fmt.Sprintf("keys[%d] (kid %s): %v", i, quote(j.Kid), err))
		case keys[k.kid] != nil:
			skipped = append(skipped, fmt.Sprintf("keys[%d]: kid %s repeated", i, quote(k.kid)))
		default:
			keys[k.kid] = k
		}
	}
	if len(keys) == 0 {
		return nil, skipped, fmt.Errorf("no usable key among %d", len(doc.Keys))
	}
	return keys, skipped, nil
}

// parseJWK returns the verification key j describes: an Ed25519 key (RFC
// 8037) or a P-256 key. Any other key, symmetric ones above all, is refused.
func parseJWK(j jwk) (*publicKey, error) {
	if j.Kid == "" {
		return nil, errors.New("no kid")
	}
	if j.D != "" {
		// A private key in a public document is a fault of the publisher;
		// it must be noticed, and the key is compromised anyway.
		return nil, errors.New("holds private key material; refused")
	}
	if j.Use != "" && j.Use != "sig" {
		return nil, fmt.Errorf("use %s is not sig", quote(j.Use))
	}
	if j.KeyOps != nil && !slices.Contains(j.KeyOps, "verify") {
		return nil, errors.New("key_ops lacks verify")
	}
	k := &publicKey{kid: j.Kid}
	switch {
	case j.Kty == "OKP" && j.Crv == "Ed25519":
		x, err := decodeCoordinate(j.X, ed25519.PublicKeySize)
		if err != nil {
			return nil, fmt.Errorf("x: %w", err)
		}
		k.alg, k.ed = AlgEdDSA, ed25519.PublicKey(x)
	case j.Kty == "EC" && j.Crv == "P-256":
		x, err := decodeCoordinate(j.X, 32)
		if err != nil {
			return nil, fmt.Errorf("x: %w", err)
		}
		y, err := decodeCoordinate(j.Y, 32)
		if err != nil {
			return nil, fmt.Errorf("y: %w", err)
		}
		// Rejects a point off the curve, which invalid-curve attacks use.
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return nil, err
		}
		k.alg, k.ec = AlgES256, pub
	default:
		return nil, fmt.Errorf("kty %s crv %s not supported", quote(j.Kty), quote(j.Crv))
	}
	if j.Alg != "" && j.Alg != k.alg {
		return nil, fmt.Errorf("alg %s does not fit a %s %s key", quote(j.Alg), j.Kty, j.Crv)
	}
	return k, nil
}

// decodeCoordinate decodes a base64url key parameter of exactly size
// bytes.
func decodeCoordinate(s string, size int) ([]byte, error) {
	b, err := segmentEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	if len(b) != size {
		return nil, fmt.Errorf("%d bytes, want %d", len(b), size)
	}
	return b, nil
}

// ed25519Thumbprint returns the RFC 7638 thumbprint of pub's JWK, the key
// ID of service tokens: `{"crv":"Ed25519","kty":"OKP","x":"..."}` with the
// members in that order, hashed with SHA-256 (RFC 8037 appendix A.3).
func ed25519Thumbprint(pub ed25519.PublicKey) string {
	h := sha256.Sum256([]byte(`{"crv":"Ed25519","kty":"OKP","x":"` + base64.RawURLEncoding.EncodeToString(pub) + `"}`))
	return base64.RawURLEncoding.EncodeToString(h[:])
}
