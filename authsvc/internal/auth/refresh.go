package auth

import (
	"context"
	"fmt"
	"time"

	"portcullis.dev/authsvc/ent"
	"portcullis.dev/authsvc/ent/refreshtoken"
	"portcullis.dev/authsvc/ent/session"
	"portcullis.dev/kernel/authn"
	"portcullis.dev/kernel/outbox"
	auditv1 "portcullis.dev/proto/audit/v1"
)

// Reasons a session was revoked, as stored and audited.
const (
	reasonLogout        = "logout"
	reasonRevoked       = "revoked"
	reasonReuseDetected = "reuse_detected"
)

// Refresh exchanges token for a new pair of the same session and marks it
// used. A token that was already used is taken as stolen (RFC 9700 section
// 4.14.2): its whole session is revoked. Two concurrent calls with the same
// token serialise on its row lock; the first wins, the second then finds
// the token used, which is exactly the replay the rule is about, and so
// revokes the session too.
func (s *Service) Refresh(ctx context.Context, token string) (*TokenPair, error) {
	if token == "" {
		return nil, invalid("refresh_token", "required")
	}
	hash, ok := hashRefreshToken(token)
	if !ok {
		return nil, ErrInvalidRefreshToken
	}
	key, err := s.signingKey(ctx)
	if err != nil {
		return nil, err
	}
	now := s.now()
	var pair *TokenPair
	reused := false
	err = s.withTx(ctx, func(tx *ent.Tx) error {
		// One round trip reads and locks the token and its session, so a
		// concurrent Refresh of the same token waits here and then sees it
		// used.
		var tokID int64
		var used bool
		sess := &ent.Session{}
		rows, err := tx.QueryContext(ctx, `SELECT t.id, t.used_at IS NOT NULL, s.id, s.user_id, s.revoked_at, s.idle_expires_at, s.expires_at
			FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id WHERE t.hash = $1 FOR UPDATE`, hash)
		if err != nil {
			return fmt.Errorf("auth: refresh: %w", err)
		}
		found := rows.Next()
		if found {
			err = rows.Scan(&tokID, &used, &sess.ID, &sess.UserID, &sess.RevokedAt, &sess.IdleExpiresAt, &sess.ExpiresAt)
		}
		if cerr := rows.Close(); err == nil {
			err = cmpErr(rows.Err(), cerr)
		}
		if err != nil {
			return fmt.Errorf("auth: refresh: %w", err)
		}
		switch {
		case !found:
			return ErrInvalidRefreshToken
		case used:
			// Revoked in this transaction, which commits: the replay is
			// refused whatever happens to the caller after.
			reused = true
			return s.reuseDetected(ctx, tx, sess)
		case sess.RevokedAt != nil || !now.Before(sess.IdleExpiresAt) || !now.Before(sess.ExpiresAt):
			return ErrInvalidRefreshToken
		}
		if err := tx.RefreshToken.Update().Where(refreshtoken.ID(int(tokID))).SetUsedAt(now).Exec(ctx); err != nil {
			return fmt.Errorf("auth: refresh: %w", err)
		}
		next, err := newRefreshToken(ctx, tx, sess.ID, now)
		if err != nil {
			return fmt.Errorf("auth: refresh: %w", err)
		}
		sess.IdleExpiresAt = minTime(now.Add(s.cfg.RefreshIdleTTL), sess.ExpiresAt)
		if err := tx.Session.Update().Where(session.ID(sess.ID)).
			SetLastRefreshAt(now).SetIdleExpiresAt(sess.IdleExpiresAt).
			Exec(ctx); err != nil {
			return fmt.Errorf("auth: refresh: %w", err)
		}
		if pair, err = s.pair(key, sess, next, now); err != nil {
			return err
		}
		return outbox.Enqueue(ctx, tx, outbox.NewEvent(asUser(ctx, sess.UserID), "auth.session.refreshed", "session:"+sess.ID, auditv1.Outcome_OUTCOME_SUCCESS,
			map[string]string{"user_id": sess.UserID}))
	})
	switch {
	case err != nil:
		return nil, err
	case reused:
		return nil, ErrInvalidRefreshToken
	}
	return pair, nil
}

// reuseDetected revokes sess, locked in tx, after a used refresh token of
// it came back, and records it.
func (s *Service) reuseDetected(ctx context.Context, tx *ent.Tx, sess *ent.Session) error {
	revoked := sess.RevokedAt == nil
	if revoked {
		if err := tx.Session.Update().Where(session.ID(sess.ID)).
			SetRevokedAt(s.now()).SetRevokeReason(reasonReuseDetected).
			Exec(ctx); err != nil {
			return fmt.Errorf("auth: refresh: %w", err)
		}
	}
	return outbox.Enqueue(ctx, tx, outbox.NewEvent(ctx, "auth.refresh.reuse_detected", "session:"+sess.ID, auditv1.Outcome_OUTCOME_DENIED,
		map[string]string{"user_id": sess.UserID, "session_revoked": fmt.Sprint(revoked)}))
}

// Logout revokes the session token belongs to. Unknown, expired and
// revoked tokens succeed too, so Logout tells nothing about a token.
func (s *Service) Logout(ctx context.Context, token string) error {
	if token == "" {
		return invalid("refresh_token", "required")
	}
	hash, ok := hashRefreshToken(token)
	if !ok {
		return nil
	}
	return s.withTx(ctx, func(tx *ent.Tx) error {
		tok, err := tx.RefreshToken.Query().Where(refreshtoken.Hash(hash)).Only(ctx)
		if ent.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("auth: logout: %w", err)
		}
		n, err := tx.Session.Update().
			Where(session.ID(tok.SessionID), session.RevokedAtIsNil()).
			SetRevokedAt(s.now()).SetRevokeReason(reasonLogout).
			Save(ctx)
		if err != nil || n == 0 {
			return err
		}
		// Logout is public, so the event has no actor: the user is in its
		// metadata, or a user's logouts could not be found.
		userID, err := tx.Session.Query().Where(session.ID(tok.SessionID)).Select(session.FieldUserID).String(ctx)
		if err != nil {
			return fmt.Errorf("auth: logout: %w", err)
		}
		return outbox.Enqueue(ctx, tx, outbox.NewEvent(ctx, "auth.logout", "session:"+tok.SessionID, auditv1.Outcome_OUTCOME_SUCCESS,
			map[string]string{"user_id": userID}))
	})
}

// cmpErr returns the first non-nil error.
func cmpErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// asUser makes userID the caller of ctx, for the audit events of a call
// that proved who its caller is, a login or a refresh: they come in without
// an access token, and their events would name no actor, so that asking the
// log for a user's actions would leave out their logins.
func asUser(ctx context.Context, userID string) context.Context {
	return authn.NewContext(ctx, authn.Principal{Kind: authn.KindUser, Subject: userID})
}
