package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"time"
)

// Claims are the claims of an access token (RFC 9068 section 2.2, plus
// `sid`, the session).
type Claims struct {
	Issuer    string `json:"iss"`
	Subject   string `json:"sub"`
	Audience  string `json:"aud"`
	ExpiresAt int64  `json:"exp"`
	IssuedAt  int64  `json:"iat"`
	NotBefore int64  `json:"nbf"`
	ID        string `json:"jti"`
	SessionID string `json:"sid"`
}

// Key is a signing key, its private half open in memory.
type Key struct {
	// ID is the kid: the RFC 7638 thumbprint of the public key.
	ID string
	// Alg is [AlgEdDSA] or [AlgES256].
	Alg string
	// Public is the JWK published for it.
	Public JWK
	// CreatedAt is when it was generated.
	CreatedAt time.Time

	signer crypto.Signer
	// header is the encoded JOSE header and the dot after it, the same for
	// every token the key signs.
	header string
}

// generateKey makes a new key for alg.
func generateKey(alg string, now time.Time) (*Key, []byte, error) {
	var signer crypto.Signer
	var err error
	switch alg {
	case AlgEdDSA:
		_, signer, err = ed25519.GenerateKey(rand.Reader)
	case AlgES256:
		signer, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return nil, nil, fmt.Errorf("keys: unsupported algorithm %q", alg)
	}
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(signer)
	if err != nil {
		return nil, nil, err
	}
	k, err := newKey(signer, now)
	return k, der, err
}

// parseKey opens a PKCS #8 private key.
func parseKey(der []byte, createdAt time.Time) (*Key, error) {
	priv, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("keys: private key: %w", err)
	}
	signer, ok := priv.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("keys: unsupported private key %T", priv)
	}
	return newKey(signer, createdAt)
}

func newKey(signer crypto.Signer, createdAt time.Time) (*Key, error) {
	if ec, ok := signer.(*ecdsa.PrivateKey); ok && ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("keys: ECDSA key not on P-256")
	}
	pub, err := publicJWK(signer.Public())
	if err != nil {
		return nil, err
	}
	// typ at+jwt: an access token (RFC 9068 section 2.1), which the kernel
	// verifier accepts and a service token never carries.
	header, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{pub.Alg, pub.Kid, "at+jwt"})
	if err != nil {
		return nil, err
	}
	return &Key{
		ID: pub.Kid, Alg: pub.Alg, Public: pub, CreatedAt: createdAt,
		signer: signer, header: b64.EncodeToString(header) + ".",
	}, nil
}

// Sign returns claims as a compact JWS signed with k.
func (k *Key) Sign(claims *Claims) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	buf := make([]byte, 0, len(k.header)+b64.EncodedLen(len(payload))+1+b64.EncodedLen(64))
	buf = append(buf, k.header...)
	buf = b64.AppendEncode(buf, payload)
	sig, err := k.sign(buf)
	if err != nil {
		return "", err
	}
	buf = append(buf, '.')
	buf = b64.AppendEncode(buf, sig)
	return string(buf), nil
}

// sign signs the JWS signing input.
func (k *Key) sign(input []byte) ([]byte, error) {
	switch s := k.signer.(type) {
	case ed25519.PrivateKey:
		return ed25519.Sign(s, input), nil
	case *ecdsa.PrivateKey:
		h := sha256.Sum256(input)
		r, sv, err := ecdsa.Sign(rand.Reader, s, h[:])
		if err != nil {
			return nil, err
		}
		// RFC 7518 section 3.4: R and S as 32-byte big-endian integers.
		sig := make([]byte, 64)
		r.FillBytes(sig[:32])
		sv.FillBytes(sig[32:])
		return sig, nil
	}
	return nil, fmt.Errorf("keys: unsupported signer %T", k.signer)
}

// PublicKey returns the public key (ed25519.PublicKey or *ecdsa.PublicKey).
func (k *Key) PublicKey() crypto.PublicKey { return k.signer.Public() }
