package identity

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"

	"portcullis.dev/identitysvc/ent"
	"portcullis.dev/identitysvc/ent/onetimetoken"
	"portcullis.dev/identitysvc/ent/predicate"
	"portcullis.dev/identitysvc/ent/user"
)

// maxTokenLen bounds the token text a caller may send; ours are 43 bytes.
const maxTokenLen = 100

// newToken returns a one-time token (32 random bytes, base64url) and the
// SHA-256 hash that is all the database keeps of it. A plain hash is
// enough: the token has 256 bits of entropy, so unlike a password it cannot
// be guessed from its hash.
func newToken() (string, []byte) {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	token := base64.RawURLEncoding.EncodeToString(b)
	return token, hashToken(token)
}

func hashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// dropTokens ends the user's links of purpose already mailed.
func dropTokens(ctx context.Context, tx *ent.Tx, userID uuid.UUID, purpose onetimetoken.Purpose) error {
	_, err := tx.OneTimeToken.Delete().Where(onetimetoken.UserID(userID), onetimetoken.PurposeEQ(purpose)).Exec(ctx)
	return err
}

// issueToken replaces the user's tokens of purpose with a new one, in tx,
// and returns its text. Earlier tokens stop working: only the newest mail
// counts.
func (s *Service) issueToken(ctx context.Context, tx *ent.Tx, userID uuid.UUID, purpose onetimetoken.Purpose) (string, error) {
	if err := dropTokens(ctx, tx, userID, purpose); err != nil {
		return "", err
	}
	ttl := s.cfg.VerificationTTL
	if purpose == onetimetoken.PurposeResetPassword {
		ttl = s.cfg.ResetTTL
	}
	token, hash := newToken()
	now := s.now()
	err := tx.OneTimeToken.Create().SetUserID(userID).SetPurpose(purpose).
		SetTokenHash(hash).SetExpiresAt(now.Add(ttl)).SetCreatedAt(now).Exec(ctx)
	return token, err
}

// sentRecently reports whether a token of purpose was issued to the user
// within the mail cooldown. The caller holds the user's row lock, so two
// concurrent requests cannot both pass.
func (s *Service) sentRecently(ctx context.Context, tx *ent.Tx, userID uuid.UUID, purpose onetimetoken.Purpose) (bool, error) {
	return tx.OneTimeToken.Query().Where(onetimetoken.UserID(userID), onetimetoken.PurposeEQ(purpose),
		onetimetoken.CreatedAtGT(s.now().Add(-s.cfg.MailCooldown))).Exist(ctx)
}

// lockLiveUser returns the live user id, locked for update in tx, or
// [ErrNotFound].
func lockLiveUser(ctx context.Context, tx *ent.Tx, id uuid.UUID) (*ent.User, error) {
	u, err := tx.User.Query().Where(user.ID(id), user.DeletedAtIsNil()).ForUpdate().Only(ctx)
	if ent.IsNotFound(err) {
		return nil, ErrNotFound
	}
	return u, err
}

// RequestEmailVerification mails user id a new link that verifies its
// email; earlier links stop working. It is [ErrAlreadyVerified] when the
// email is verified and [ErrTooSoon] within the mail cooldown of the last
// verification mail.
func (s *Service) RequestEmailVerification(ctx context.Context, id uuid.UUID) error {
	var (
		u     *ent.User
		token string
	)
	err := s.inTx(ctx, func(tx *ent.Tx) error {
		var err error
		if u, err = lockLiveUser(ctx, tx, id); err != nil {
			return err
		}
		if u.EmailVerifiedAt != nil {
			return ErrAlreadyVerified
		}
		if recent, err := s.sentRecently(ctx, tx, id, onetimetoken.PurposeVerifyEmail); err != nil {
			return err
		} else if recent {
			return ErrTooSoon
		}
		if token, err = s.issueToken(ctx, tx, id, onetimetoken.PurposeVerifyEmail); err != nil {
			return err
		}
		return s.audit(ctx, tx, "identity.email.verification_requested", id, nil)
	})
	if err != nil {
		return err
	}
	s.send(ctx, s.verificationMail(u.Email, token))
	return nil
}

// VerifyEmail marks the email of the token's user verified. An unknown,
// used or expired token is [ErrInvalidToken], without saying which.
func (s *Service) VerifyEmail(ctx context.Context, token string) error {
	return s.inTx(ctx, func(tx *ent.Tx) error {
		t, err := s.useToken(ctx, tx, token, onetimetoken.PurposeVerifyEmail)
		if err != nil {
			return err
		}
		now := s.now()
		n, err := tx.User.Update().Where(user.ID(t.UserID), user.DeletedAtIsNil(), user.EmailVerifiedAtIsNil()).
			SetEmailVerifiedAt(now).SetUpdatedAt(now).Save(ctx)
		if err != nil || n == 0 {
			return err
		}
		return s.audit(ctx, tx, "identity.email.verified", t.UserID, nil)
	})
}

// RequestPasswordReset mails a reset link to email if an active user has
// it. It answers the same either way, and takes similar time — the mail
// goes out in the background — so it cannot be used to learn who is
// registered. Within the mail cooldown of the last reset mail it quietly
// sends nothing. Only a malformed email is an error.
func (s *Service) RequestPasswordReset(ctx context.Context, email string) error {
	email, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	var token string
	err = s.inTx(ctx, func(tx *ent.Tx) error {
		u, err := tx.User.Query().Where(user.Email(email), user.DeletedAtIsNil(), user.StatusEQ(user.StatusActive)).ForUpdate().Only(ctx)
		if ent.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if recent, err := s.sentRecently(ctx, tx, u.ID, onetimetoken.PurposeResetPassword); err != nil || recent {
			return err
		}
		if token, err = s.issueToken(ctx, tx, u.ID, onetimetoken.PurposeResetPassword); err != nil {
			return err
		}
		return s.audit(ctx, tx, "identity.password.reset_requested", u.ID, nil)
	})
	if err != nil {
		return err
	}
	if token != "" {
		s.send(ctx, Message{
			To:      email,
			Subject: "Reset your password",
			Body: "Open this link to choose a new password:\n\n" + s.link(token, onetimetoken.PurposeResetPassword) +
				"\n\nIt works once, for " + s.cfg.ResetTTL.String() + ". If you did not ask for it, ignore this message.\n",
		})
	}
	return nil
}

// ResetPassword sets a new password with a reset token, which also ends a
// lockout. The user's other reset tokens stop working, and so do all of
// their sessions (see endSessions): a refresh token stolen before the
// reset must not outlive it.
func (s *Service) ResetPassword(ctx context.Context, token, password string) error {
	if err := checkPasswordRules(password, s.cfg.MinPasswordLength); err != nil {
		return err
	}
	// A token that cannot be used is refused before a hash is spent on
	// it: anyone may send one, and the hashing slots are what every login
	// waits for. useToken checks it again, under its lock.
	usable, ok := liveToken(token, onetimetoken.PurposeResetPassword, s.now())
	if !ok {
		return ErrInvalidToken
	}
	if live, err := s.db.OneTimeToken.Query().Where(usable).Exist(ctx); err != nil || !live {
		return cmp.Or(err, ErrInvalidToken)
	}
	hash, err := s.hasher.hash(ctx, password)
	if err != nil {
		return err
	}
	var end *pendingEnd
	err = s.inTx(ctx, func(tx *ent.Tx) error {
		t, err := s.useToken(ctx, tx, token, onetimetoken.PurposeResetPassword)
		if err != nil {
			return err
		}
		n, err := tx.User.Update().Where(user.ID(t.UserID), user.DeletedAtIsNil()).
			SetPasswordHash(hash).SetFailedAttempts(0).ClearFailureWindowStart().ClearLockedUntil().SetUpdatedAt(s.now()).Save(ctx)
		if err != nil {
			return err
		}
		if n == 0 {
			return ErrInvalidToken
		}
		if _, err := tx.OneTimeToken.Delete().Where(onetimetoken.UserID(t.UserID), onetimetoken.PurposeEQ(onetimetoken.PurposeResetPassword),
			onetimetoken.IDNEQ(t.ID)).Exec(ctx); err != nil {
			return err
		}
		if end, err = s.queueSessionEnd(ctx, tx, t.UserID, ReasonPasswordReset, ""); err != nil {
			return err
		}
		return s.audit(ctx, tx, "identity.password.reset", t.UserID, nil)
	})
	if err != nil {
		return err
	}
	s.endSessions(ctx, end)
	return nil
}

// useToken marks a live token of purpose used, in tx, and returns it. A
// token can be used once: the row lock makes two concurrent uses see one
// success. The used row stays until the next token replaces it, so reuse
// is refused the same way as an unknown token.
func (s *Service) useToken(ctx context.Context, tx *ent.Tx, token string, purpose onetimetoken.Purpose) (*ent.OneTimeToken, error) {
	now := s.now()
	usable, ok := liveToken(token, purpose, now)
	if !ok {
		return nil, ErrInvalidToken
	}
	// A concurrent use waits for the lock, then no longer matches.
	t, err := tx.OneTimeToken.Query().Where(usable).ForUpdate().Only(ctx)
	if ent.IsNotFound(err) {
		return nil, ErrInvalidToken
	}
	if err != nil {
		return nil, err
	}
	if err := tx.OneTimeToken.UpdateOne(t).SetUsedAt(now).Exec(ctx); err != nil {
		return nil, err
	}
	return t, nil
}

// liveToken selects the unused, unexpired token of purpose whose text is
// token, or reports false for text that cannot be a token.
func liveToken(token string, purpose onetimetoken.Purpose, now time.Time) (predicate.OneTimeToken, bool) {
	if token == "" || len(token) > maxTokenLen {
		return nil, false
	}
	return onetimetoken.And(onetimetoken.TokenHash(hashToken(token)), onetimetoken.PurposeEQ(purpose),
		onetimetoken.UsedAtIsNil(), onetimetoken.ExpiresAtGT(now)), true
}

// link is the page a mail sends its user to, with the token and what it is
// for (purpose=verify_email or purpose=reset_password): one page can serve
// both, and tell VerifyEmail's tokens from ResetPassword's.
func (s *Service) link(token string, purpose onetimetoken.Purpose) string {
	sep := "?"
	if strings.Contains(s.cfg.PublicURL, "?") {
		sep = "&"
	}
	return s.cfg.PublicURL + sep + "token=" + url.QueryEscape(token) + "&purpose=" + url.QueryEscape(purpose.String())
}

func (s *Service) verificationMail(to, token string) Message {
	return Message{
		To:      to,
		Subject: "Verify your email address",
		Body: "Open this link to verify your email address:\n\n" + s.link(token, onetimetoken.PurposeVerifyEmail) +
			"\n\nIt works once, for " + s.cfg.VerificationTTL.String() + ".\n",
	}
}
