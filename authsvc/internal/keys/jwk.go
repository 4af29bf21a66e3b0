package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// Algorithms of signing keys.
const (
	AlgEdDSA = "EdDSA"
	AlgES256 = "ES256"
)

// JWK is the public half of a signing key as a JSON Web Key (RFC 7517),
// the form the JWKS publishes.
type JWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y,omitempty"`
}

// publicJWK returns the JWK of pub (an Ed25519 or P-256 public key), with
// the RFC 7638 thumbprint as its kid.
func publicJWK(pub any) (JWK, error) {
	var j JWK
	var alg jwa.SignatureAlgorithm
	switch p := pub.(type) {
	case ed25519.PublicKey:
		alg = jwa.EdDSA
	case *ecdsa.PublicKey:
		if p.Curve != elliptic.P256() {
			return j, fmt.Errorf("keys: not a P-256 key")
		}
		alg = jwa.ES256
	default:
		return j, fmt.Errorf("keys: unsupported public key %T", pub)
	}
	key, err := jwk.FromRaw(pub)
	if err != nil {
		return j, fmt.Errorf("keys: %w", err)
	}
	tp, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return j, fmt.Errorf("keys: thumbprint: %w", err)
	}
	if err := errors.Join(
		key.Set(jwk.KeyIDKey, base64.RawURLEncoding.EncodeToString(tp)),
		key.Set(jwk.AlgorithmKey, alg),
		key.Set(jwk.KeyUsageKey, jwk.ForSignature),
	); err != nil {
		return j, fmt.Errorf("keys: %w", err)
	}
	// The JWK struct is what is stored and published; jwx wrote it.
	b, err := json.Marshal(key)
	if err != nil {
		return j, fmt.Errorf("keys: %w", err)
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return j, fmt.Errorf("keys: %w", err)
	}
	return j, nil
}
