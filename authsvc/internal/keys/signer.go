package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
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
	// CreatedAt is when it began to sign: when it was generated, or, for
	// a key published ahead of its use, when it was activated.
	CreatedAt time.Time

	signer crypto.Signer
	alg    jwa.SignatureAlgorithm
	// header is the protected JOSE header, the same for every token the key
	// signs, alg included: jws.Sign sets alg on it again, to the same
	// value, under the header's own lock, so concurrent signing is safe.
	header jws.Headers
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
	header := jws.NewHeaders()
	if err := errors.Join(header.Set(jws.AlgorithmKey, jwa.SignatureAlgorithm(pub.Alg)), header.Set(jws.KeyIDKey, pub.Kid), header.Set(jws.TypeKey, "at+jwt")); err != nil {
		return nil, fmt.Errorf("keys: header: %w", err)
	}
	return &Key{
		ID: pub.Kid, Alg: pub.Alg, Public: pub, CreatedAt: createdAt,
		signer: signer, alg: jwa.SignatureAlgorithm(pub.Alg), header: header,
	}, nil
}

// Sign returns claims as a compact JWS signed with k.
func (k *Key) Sign(claims *Claims) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	token, err := jws.Sign(payload, jws.WithKey(k.alg, k.signer, jws.WithProtectedHeaders(k.header)))
	if err != nil {
		return "", fmt.Errorf("keys: sign with %s: %w", k.ID, err)
	}
	return string(token), nil
}

// PublicKey returns the public key (ed25519.PublicKey or *ecdsa.PublicKey).
func (k *Key) PublicKey() crypto.PublicKey { return k.signer.Public() }
