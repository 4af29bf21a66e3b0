package auth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"time"

	"portcullis.dev/authsvc/ent"
	"portcullis.dev/authsvc/internal/keys"
)

// refreshTokenBytes is the entropy of a refresh token: 256 bits, beyond
// guessing, which is also why an unsalted SHA-256 is the right way to
// store it (there is nothing to brute-force).
const refreshTokenBytes = 32

// TokenPair is what Login and Refresh return.
type TokenPair struct {
	AccessToken      string
	RefreshToken     string
	ExpiresIn        time.Duration
	RefreshExpiresIn time.Duration
	SessionID        string
}

// hashRefreshToken returns the stored form of a refresh token, or false
// when token cannot be one of ours.
func hashRefreshToken(token string) ([]byte, bool) {
	raw, err := base64.RawURLEncoding.Strict().DecodeString(token)
	if err != nil || len(raw) != refreshTokenBytes {
		return nil, false
	}
	h := sha256.Sum256(raw)
	return h[:], true
}

// newRefreshToken stores a new refresh token of session in tx and returns
// it.
func newRefreshToken(ctx context.Context, tx *ent.Tx, sessionID string, now time.Time) (string, error) {
	token := randomID(refreshTokenBytes)
	hash, _ := hashRefreshToken(token)
	err := tx.RefreshToken.Create().SetHash(hash).SetSessionID(sessionID).SetCreatedAt(now).Exec(ctx)
	return token, err
}

// signingKey returns the key to sign a call's access token with. Callers
// take it before their transaction: the keyring may read, or rotate, keys
// in the database, and whatever fails there must fail before a rotation
// of refresh tokens or a new session commits, never after. A refresh
// token committed but never answered would be a "reused" one when the
// client tries again, and its session would be revoked as stolen.
func (s *Service) signingKey(ctx context.Context) (*keys.Key, error) {
	return s.keyring.Active(ctx)
}

// pair signs the access token for sess with key and finishes a token pair.
// Callers call it inside their transaction, which then commits only if
// the client gets its tokens.
func (s *Service) pair(key *keys.Key, sess *ent.Session, refresh string, now time.Time) (*TokenPair, error) {
	access, err := key.Sign(&keys.Claims{
		Issuer:    s.cfg.Issuer,
		Subject:   sess.UserID,
		Audience:  s.cfg.Audience,
		IssuedAt:  now.Unix(),
		NotBefore: now.Unix(),
		ExpiresAt: now.Add(s.cfg.AccessTTL).Unix(),
		ID:        randomID(16),
		SessionID: sess.ID,
	})
	if err != nil {
		return nil, err
	}
	return &TokenPair{
		AccessToken:      access,
		RefreshToken:     refresh,
		ExpiresIn:        s.cfg.AccessTTL,
		RefreshExpiresIn: sess.IdleExpiresAt.Sub(now),
		SessionID:        sess.ID,
	}, nil
}
