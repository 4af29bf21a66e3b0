package keys

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
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

var b64 = base64.RawURLEncoding

// publicJWK returns the JWK of pub, with the RFC 7638 thumbprint as its kid.
func publicJWK(pub any) (JWK, error) {
	var j JWK
	switch p := pub.(type) {
	case ed25519.PublicKey:
		j = JWK{Kty: "OKP", Alg: AlgEdDSA, Crv: "Ed25519", X: b64.EncodeToString(p)}
		// RFC 7638 section 3.2: the required members in lexical order.
		j.Kid = thumbprint(`{"crv":"Ed25519","kty":"OKP","x":"` + j.X + `"}`)
	case *ecdsa.PublicKey:
		raw, err := p.Bytes() // 0x04 || X || Y
		if err != nil || len(raw) != 65 {
			return j, fmt.Errorf("keys: not a P-256 key")
		}
		j = JWK{Kty: "EC", Alg: AlgES256, Crv: "P-256", X: b64.EncodeToString(raw[1:33]), Y: b64.EncodeToString(raw[33:])}
		j.Kid = thumbprint(`{"crv":"P-256","kty":"EC","x":"` + j.X + `","y":"` + j.Y + `"}`)
	default:
		return j, fmt.Errorf("keys: unsupported public key %T", pub)
	}
	j.Use = "sig"
	return j, nil
}

func thumbprint(canonical string) string {
	h := sha256.Sum256([]byte(canonical))
	return b64.EncodeToString(h[:])
}
