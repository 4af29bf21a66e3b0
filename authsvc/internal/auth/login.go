package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"portcullis.dev/authsvc/ent"
	"portcullis.dev/kernel/database"
	"portcullis.dev/kernel/outbox"
	auditv1 "portcullis.dev/proto/audit/v1"
	identityv1 "portcullis.dev/proto/identity/v1"
)

// maxUserAgent is how much of a User-Agent header a session keeps.
const maxUserAgent = 512

// LoginInput is a login attempt.
type LoginInput struct {
	Email, Password, TOTPCode string
	// SourceIP and UserAgent describe the client, for ListSessions.
	SourceIP, UserAgent string
}

// Login checks in's credentials with the Identity service and, when the
// user has TOTP on, the code; then it starts a session.
func (s *Service) Login(ctx context.Context, in LoginInput) (*TokenPair, error) {
	switch {
	case strings.TrimSpace(in.Email) == "":
		return nil, invalid("email", "required")
	case len(in.Email) > 254:
		return nil, invalid("email", "longer than 254 bytes")
	case !database.ValidText(in.Email):
		// Refused here, not by Identity: a failed login audits the email,
		// and the Audit service refuses such text.
		return nil, invalid("email", "must be UTF-8 without NUL")
	case in.Password == "":
		return nil, invalid("password", "required")
	case len(in.Password) > 1024:
		return nil, invalid("password", "longer than 1024 bytes")
	}
	// When the login began, before the credentials are checked: a cutoff
	// set while they are being checked covers it. The database's clock,
	// which the cutoff is read from too: the replicas' clocks may differ.
	started, err := s.dbNow(ctx)
	if err != nil {
		return nil, err
	}
	res, err := s.identity.VerifyCredentials(ctx, connect.NewRequest(&identityv1.VerifyCredentialsRequest{Email: in.Email, Password: in.Password}))
	if err != nil {
		switch connect.CodeOf(err) {
		case connect.CodeUnauthenticated, connect.CodeInvalidArgument, connect.CodeNotFound:
			// Identity gives one answer for an unknown email, a wrong
			// password, a locked account and a disabled user, so this
			// service cannot tell them apart either; Identity audits a
			// lock itself (identity.login.locked).
			return nil, s.loginFailed(ctx, "", in.Email, "invalid_credentials", ErrInvalidCredentials)
		}
		// Anything else says nothing about the credentials: Unavailable
		// when Identity is too busy hashing passwords, or it could not be
		// reached. Not a failed login, so not audited as one. (An Identity
		// service older than its contract's current version answered
		// ResourceExhausted for a locked account; that lands here too
		// rather than risk reading a busy Identity as a lock.)
		return nil, fmt.Errorf("%w: %v", ErrIdentityUnavailable, err)
	}
	user := res.Msg
	if user.GetUserId() == "" {
		return nil, fmt.Errorf("%w: VerifyCredentials returned no user", ErrIdentityUnavailable)
	}
	if user.GetStatus() != identityv1.UserStatus_USER_STATUS_ACTIVE {
		// Identity refuses disabled users itself; an older Identity
		// answered for them with their status. Refused like a wrong
		// password all the same, so the answer tells nothing.
		return nil, s.loginFailed(ctx, user.GetUserId(), in.Email, "disabled", ErrInvalidCredentials)
	}
	if s.cfg.RequireVerifiedEmail && !user.GetEmailVerified() {
		return nil, s.loginFailed(ctx, user.GetUserId(), in.Email, "email_not_verified", ErrEmailNotVerified)
	}
	now := s.now()
	step, err := s.checkLoginTOTP(ctx, user.GetUserId(), in.TOTPCode, now)
	if err != nil {
		var reason totpFailure
		if !errors.As(err, &reason) {
			return nil, err
		}
		if reason == totpWrong {
			return nil, s.loginTOTPWrong(ctx, user.GetUserId(), in.Email, now)
		}
		// A missing, replayed or locked-out code is refused like a wrong
		// one, so the answer does not tell a guesser the lock is on; only
		// the audit log has the reason.
		return nil, s.loginFailed(ctx, user.GetUserId(), in.Email, string(reason), ErrTOTPRequired)
	}

	key, err := s.signingKey(ctx)
	if err != nil {
		return nil, err
	}
	var pair *TokenPair
	err = s.withTx(ctx, func(tx *ent.Tx) error {
		if step > 0 {
			// Consumed in the session's transaction and only if no other
			// login took this step first: a code works once (RFC 6238
			// section 5.2).
			if err := consumeStep(ctx, tx, user.GetUserId(), step, now); err != nil {
				return err
			}
		}
		if err := checkCutoff(ctx, tx, user.GetUserId(), started); err != nil {
			return err
		}
		sourceIP, userAgent := in.client()
		sess, err := tx.Session.Create().
			SetID(uuid.NewString()).
			SetUserID(user.GetUserId()).
			SetCreatedAt(now).
			SetIdleExpiresAt(minTime(now.Add(s.cfg.RefreshIdleTTL), now.Add(s.cfg.RefreshAbsoluteTTL))).
			SetExpiresAt(now.Add(s.cfg.RefreshAbsoluteTTL)).
			SetSourceIP(sourceIP).
			SetUserAgent(userAgent).
			Save(ctx)
		if err != nil {
			return fmt.Errorf("auth: create session: %w", err)
		}
		refresh, err := newRefreshToken(ctx, tx, sess.ID, now)
		if err != nil {
			return fmt.Errorf("auth: create refresh token: %w", err)
		}
		if pair, err = s.pair(key, sess, refresh, now); err != nil {
			return err
		}
		meta := map[string]string{"user_id": user.GetUserId(), "session_id": sess.ID, "source_ip": sourceIP, "mfa": fmt.Sprint(step > 0)}
		return outbox.Enqueue(ctx, tx, outbox.NewEvent(asUser(ctx, user.GetUserId()), "auth.login.succeeded", "user:"+user.GetUserId(), auditv1.Outcome_OUTCOME_SUCCESS, meta))
	})
	if reason := totpFailure(""); errors.As(err, &reason) {
		return nil, s.loginFailed(ctx, user.GetUserId(), in.Email, string(reason), ErrTOTPRequired)
	}
	if errors.Is(err, errCutOff) {
		// Refused like a wrong password: the user was disabled, or their
		// password changed, while this login was checking it.
		return nil, s.loginFailed(ctx, user.GetUserId(), in.Email, "sessions_ended", ErrInvalidCredentials)
	}
	if err != nil {
		return nil, err
	}
	return pair, nil
}

// loginFailed records a failed login in a transaction of its own (there
// is no change to go with it) and returns err. The reason goes to the
// audit log, never to the caller.
func (s *Service) loginFailed(ctx context.Context, userID, email, reason string, err error) error {
	if werr := s.withTx(ctx, func(tx *ent.Tx) error {
		return enqueueLoginFailed(ctx, tx, userID, email, reason)
	}); werr != nil {
		// Losing the audit event is worse than failing the login again.
		return werr
	}
	return err
}

// loginTOTPWrong records a login refused for a wrong TOTP code and counts
// the code toward the user's lockout, in one transaction so the count and
// the audit trail agree, and returns [ErrTOTPRequired].
func (s *Service) loginTOTPWrong(ctx context.Context, userID, email string, now time.Time) error {
	err := s.withTx(ctx, func(tx *ent.Tx) error {
		if err := s.countTOTPFailure(ctx, tx, userID, now); err != nil {
			return err
		}
		return enqueueLoginFailed(ctx, tx, userID, email, string(totpWrong))
	})
	if err != nil {
		// Not counted is worse than failing the login again.
		return err
	}
	return ErrTOTPRequired
}

// enqueueLoginFailed adds auth.login.failed to tx's outbox.
func enqueueLoginFailed(ctx context.Context, tx *ent.Tx, userID, email, reason string) error {
	target := "user:unknown"
	meta := map[string]string{"reason": reason, "email": email}
	if userID != "" {
		target = "user:" + userID
		meta["user_id"] = userID
	}
	return outbox.Enqueue(ctx, tx, outbox.NewEvent(ctx, "auth.login.failed", target, auditv1.Outcome_OUTCOME_FAILURE, meta))
}

// client returns the source IP and User-Agent of in as a session keeps
// them. They describe the client, for the user to recognise it by, so bytes
// PostgreSQL cannot store are replaced rather than the login refused: Go's
// HTTP server passes header bytes 0x80-0xFF, and a client sending Latin-1 in
// its User-Agent must still be able to log in.
func (in LoginInput) client() (sourceIP, userAgent string) {
	return database.CleanText(in.SourceIP), database.TruncateText(database.CleanText(in.UserAgent), maxUserAgent)
}

// errCutOff ends a login whose user's sessions were ended after it began.
var errCutOff = errors.New("sessions ended after the login began")

// cutoffLockClass is the first key of the transaction locks that order a
// user's logins and the ends of their sessions (hashtext of the user ID is
// the second): "cuto" in ASCII. Two-key locks do not collide with the
// outbox relay's one-key lock.
const cutoffLockClass = 0x6375746f

// dbNow reads the database's clock.
func (s *Service) dbNow(ctx context.Context) (time.Time, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT clock_timestamp()`)
	if err != nil {
		return time.Time{}, fmt.Errorf("auth: read the database clock: %w", err)
	}
	defer rows.Close()
	var now time.Time
	if !rows.Next() {
		return time.Time{}, fmt.Errorf("auth: read the database clock: %w", cmpErr(rows.Err(), errors.New("no row")))
	}
	if err := rows.Scan(&now); err != nil {
		return time.Time{}, fmt.Errorf("auth: read the database clock: %w", err)
	}
	return now, nil
}

// checkCutoff returns errCutOff if userID's sessions were ended (see
// [Service.EndUserSessions]) after a login that began at started. It holds
// a shared lock on the user's cutoff until tx ends, so that an end racing
// the login either comes after its session, and revokes it, or before the
// check, which then sees it. Logins of one user do not wait for each other.
func checkCutoff(ctx context.Context, tx *ent.Tx, userID string, started time.Time) error {
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock_shared($1, hashtext($2))`, cutoffLockClass, userID); err != nil {
		return fmt.Errorf("auth: lock session cutoff: %w", err)
	}
	cut, err := tx.SessionCutoff.Get(ctx, userID)
	switch {
	case ent.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("auth: read session cutoff: %w", err)
	case started.Before(cut.EndedBefore):
		return errCutOff
	}
	return nil
}
