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

// signAccessToken signs an access token for user in session.
func (s *Service) signAccessToken(ctx context.Context, userID, sessionID string, now time.Time) (string, error) {
	key, err := s.keyring.Active(ctx)
	if err != nil {
		return "", err
	}
	return key.Sign(&keys.Claims{
		Issuer:    s.cfg.Issuer,
		Subject:   userID,
		Audience:  s.cfg.Audience,
		IssuedAt:  now.Unix(),
		NotBefore: now.Unix(),
		ExpiresAt: now.Add(s.cfg.AccessTTL).Unix(),
		ID:        randomID(16),
		SessionID: sessionID,
	})
}

// pair finishes a token pair for sess.
func (s *Service) pair(ctx context.Context, sess *ent.Session, refresh string, now time.Time) (*TokenPair, error) {
	access, err := s.signAccessToken(ctx, sess.UserID, sess.ID, now)
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
