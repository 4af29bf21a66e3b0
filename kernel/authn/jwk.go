package authn

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// publicKey is a verification key and the one algorithm it may verify. A
// token's `alg` must equal it: the key decides how a signature is checked,
// never the token.
type publicKey struct {
	kid string
	alg jwa.SignatureAlgorithm // jwa.EdDSA or jwa.ES256
	raw crypto.PublicKey       // ed25519.PublicKey or *ecdsa.PublicKey
}

// equal reports whether k and o are the same key for the same algorithm.
func (k *publicKey) equal(o *publicKey) bool {
	if k == nil || o == nil {
		return k == o
	}
	if k.kid != o.kid || k.alg != o.alg {
		return false
	}
	eq, ok := k.raw.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(o.raw)
}

// parseKeySet returns the usable keys of a JWK Set (RFC 7517 section 5) by
// kid, and why each other key was left out. A set without one usable key
// is an error: the Auth service always publishes its current key, so an
// empty set is a fault, and the keys known before are better kept.
//
// Members are parsed one by one with jwk.ParseKey rather than the set with
// jwk.Parse, which fails as a whole on one member it cannot read: a key
// published for some other party must not stop ours from verifying.
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
		k, err := parseJWK(raw)
		switch {
		case err != nil:
			skipped = append(skipped, fmt.Sprintf("keys[%d]: %v", i, err))
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

// parseJWK returns the verification key a JWK describes: an Ed25519 key
// (RFC 8037) or a P-256 key. Any other key, symmetric ones above all, is
// refused.
func parseJWK(raw json.RawMessage) (*publicKey, error) {
	key, err := jwk.ParseKey(raw)
	if err != nil {
		return nil, err
	}
	kid := key.KeyID()
	if kid == "" {
		return nil, errors.New("no kid")
	}
	if private, err := jwk.IsPrivateKey(key); err == nil && private {
		// A private key in a public document is a fault of the publisher;
		// it must be noticed, and the key is compromised anyway.
		return nil, fmt.Errorf("kid %s holds private key material; refused", quote(kid))
	}
	if use := key.KeyUsage(); use != "" && use != string(jwk.ForSignature) {
		return nil, fmt.Errorf("kid %s: use %s is not sig", quote(kid), quote(use))
	}
	if ops := key.KeyOps(); ops != nil && !slices.Contains(ops, jwk.KeyOpVerify) {
		return nil, fmt.Errorf("kid %s: key_ops lacks verify", quote(kid))
	}
	k := &publicKey{kid: kid}
	switch key := key.(type) {
	case jwk.OKPPublicKey:
		if key.Crv() != jwa.Ed25519 {
			return nil, fmt.Errorf("kid %s: kty OKP crv %s not supported", quote(kid), key.Crv())
		}
		var pub ed25519.PublicKey
		if err := key.Raw(&pub); err != nil {
			return nil, fmt.Errorf("kid %s: %w", quote(kid), err)
		}
		if len(pub) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("kid %s: x has %d bytes, want %d", quote(kid), len(pub), ed25519.PublicKeySize)
		}
		k.alg, k.raw = jwa.EdDSA, pub
	case jwk.ECDSAPublicKey:
		if key.Crv() != jwa.P256 {
			return nil, fmt.Errorf("kid %s: kty EC crv %s not supported", quote(kid), key.Crv())
		}
		var pub *ecdsa.PublicKey
		if err := key.Raw(&pub); err != nil {
			return nil, fmt.Errorf("kid %s: %w", quote(kid), err)
		}
		// Rejects a point off the curve, which invalid-curve attacks use.
		if _, err := pub.ECDH(); err != nil {
			return nil, fmt.Errorf("kid %s: point not on curve: %w", quote(kid), err)
		}
		k.alg, k.raw = jwa.ES256, pub
	default:
		return nil, fmt.Errorf("kid %s: kty %s not supported", quote(kid), key.KeyType())
	}
	if alg := key.Algorithm().String(); alg != "" && alg != k.alg.String() {
		return nil, fmt.Errorf("kid %s: alg %s does not fit a %s key", quote(kid), quote(alg), k.alg)
	}
	return k, nil
}

// thumbprint returns the RFC 7638 thumbprint of pub's JWK with SHA-256, the
// key ID of service tokens.
func thumbprint(pub crypto.PublicKey) (string, error) {
	key, err := jwk.FromRaw(pub)
	if err != nil {
		return "", err
	}
	tp, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", err
	}
	return segmentEncoding.EncodeToString(tp), nil
}
