package keys

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
)

// Sealer encrypts secrets at rest with AES-256-GCM under the key-encryption
// key (config keys.kek). Each secret is sealed with associated data naming
// what it is (a key ID, a user ID), so a ciphertext copied into another
// row does not open there. It is safe for concurrent use.
type Sealer struct {
	aead cipher.AEAD
}

// NewSealer returns a Sealer for a 32-byte KEK.
func NewSealer(kek []byte) (*Sealer, error) {
	if len(kek) != 32 {
		return nil, fmt.Errorf("keys: the KEK has %d bytes, want 32", len(kek))
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead}, nil
}

// Seal returns nonce || ciphertext of plaintext bound to ad. A random
// 96-bit nonce is safe here: a KEK seals a few keys and one secret per
// user, far below the 2^32 messages NIST SP 800-38D allows per key.
func (s *Sealer) Seal(plaintext []byte, ad string) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plaintext)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return s.aead.Seal(nonce, nonce, plaintext, []byte(ad)), nil
}

// ErrUnsealable means a sealed value does not open with this KEK and
// associated data: a different KEK, or a tampered or moved value.
var ErrUnsealable = errors.New("keys: sealed value does not open with the configured KEK")

// Open reverses [Sealer.Seal].
func (s *Sealer) Open(sealed []byte, ad string) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n+s.aead.Overhead() {
		return nil, ErrUnsealable
	}
	plain, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte(ad))
	if err != nil {
		return nil, ErrUnsealable
	}
	return plain, nil
}
