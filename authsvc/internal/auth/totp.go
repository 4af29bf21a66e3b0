package auth

import (
	"cmp"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"portcullis.dev/authsvc/ent"
	"portcullis.dev/authsvc/ent/totpcredential"
	"portcullis.dev/kernel/outbox"
	auditv1 "portcullis.dev/proto/audit/v1"
	identityv1 "portcullis.dev/proto/identity/v1"
)

// TOTP parameters: the ones every authenticator app supports (RFC 6238
// defaults), as the contract's otpauth URI promises.
const (
	totpPeriod = 30
	totpDigits = otp.DigitsSix
	totpAlg    = otp.AlgorithmSHA1
)

// totpFailure is why a login's TOTP check failed, for the audit log.
type totpFailure string

func (f totpFailure) Error() string { return "totp: " + string(f) }

const (
	totpMissing  totpFailure = "totp_missing"
	totpWrong    totpFailure = "totp_invalid"
	totpReplayed totpFailure = "totp_replayed"
	// totpLocked: too many wrong codes lately; the code was not checked.
	totpLocked totpFailure = "totp_locked"
)

// TOTPLockout limits how many codes can be guessed for one user. A correct
// password clears Identity's failure counter, so without this whoever has
// the password could try all 10^6 codes (RFC 4226 section 7.3 asks for
// throttling). Threshold wrong codes within Window refuse the user's codes
// for Duration, with the answer a wrong code gets. Zero fields take the
// defaults: 5 codes, 15 minutes, 15 minutes.
type TOTPLockout struct {
	Threshold int
	Window    time.Duration
	Duration  time.Duration
}

func (l TOTPLockout) withDefaults() TOTPLockout {
	l.Threshold = cmp.Or(l.Threshold, 5)
	l.Window = cmp.Or(l.Window, 15*time.Minute)
	l.Duration = cmp.Or(l.Duration, 15*time.Minute)
	return l
}

// totpLockedAt reports whether c refuses codes at now.
func totpLockedAt(c *ent.TOTPCredential, now time.Time) bool {
	return c.LockedUntil != nil && now.Before(*c.LockedUntil)
}

// Enrollment is a new TOTP secret for the user to add to an app.
type Enrollment struct {
	// Secret is base32 without padding.
	Secret string
	// URI is the otpauth:// key URI.
	URI string
}

// matchStep returns the time step whose code is code, trying the current
// step and one either side (RFC 6238 section 5.2 recommends at most one
// step of network delay), or 0.
func matchStep(secret, code string, now time.Time) int64 {
	if len(code) != 6 {
		return 0
	}
	opts := totp.ValidateOpts{Period: totpPeriod, Digits: totpDigits, Algorithm: totpAlg}
	var found int64
	for _, d := range []int64{-1, 0, 1} {
		t := now.Add(time.Duration(d*totpPeriod) * time.Second)
		want, err := totp.GenerateCodeCustom(secret, t, opts)
		// Every candidate is compared, in constant time, so timing does
		// not tell which step matched.
		if err == nil && subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			found = t.Unix() / totpPeriod
		}
	}
	return found
}

// openSecret opens a credential's secret.
func (s *Service) openSecret(c *ent.TOTPCredential) (string, error) {
	b, err := s.sealer.Open(c.SecretSealed, "totp:"+c.ID)
	if err != nil {
		return "", fmt.Errorf("auth: totp secret of %s: %w", c.ID, err)
	}
	return string(b), nil
}

// checkLoginTOTP checks code when userID has TOTP on, and returns the time
// step to consume (0 when TOTP is off). A failed check is a totpFailure.
func (s *Service) checkLoginTOTP(ctx context.Context, userID, code string, now time.Time) (int64, error) {
	c, err := s.db.TOTPCredential.Query().Where(totpcredential.ID(userID), totpcredential.ConfirmedAtNotNil()).Only(ctx)
	if ent.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("auth: totp: %w", err)
	}
	if code == "" {
		return 0, totpMissing
	}
	if totpLockedAt(c, now) {
		// Not even checked: while locked a right code is no better than a
		// wrong one, so guessing learns nothing.
		return 0, totpLocked
	}
	secret, err := s.openSecret(c)
	if err != nil {
		return 0, err
	}
	step := matchStep(secret, code, now)
	switch {
	case step == 0:
		return 0, totpWrong
	case step <= c.LastUsedStep:
		return 0, totpReplayed
	}
	return step, nil
}

// consumeStep records step as used by userID and clears its count of wrong
// codes. It fails with a totpFailure when that step or a later one is
// already used (a replay), or when a lock began since the code was checked;
// the single conditional UPDATE makes concurrent uses of one code, on any
// replica, serialise on the row so that only the first succeeds.
func consumeStep(ctx context.Context, tx *ent.Tx, userID string, step int64, now time.Time) error {
	n, err := tx.TOTPCredential.Update().
		Where(
			totpcredential.ID(userID),
			totpcredential.LastUsedStepLT(step),
			totpcredential.Or(totpcredential.LockedUntilIsNil(), totpcredential.LockedUntilLTE(now)),
		).
		SetLastUsedStep(step).
		SetFailedAttempts(0).
		ClearFailureWindowStart().
		ClearLockedUntil().
		Save(ctx)
	if err != nil {
		return fmt.Errorf("auth: totp: %w", err)
	}
	if n > 0 {
		return nil
	}
	// Rare (a race): tell the two apart for the audit log only.
	locked, err := tx.TOTPCredential.Query().Where(totpcredential.ID(userID), totpcredential.LockedUntilGT(now)).Exist(ctx)
	if err != nil {
		return fmt.Errorf("auth: totp: %w", err)
	}
	if locked {
		return totpLocked
	}
	return totpReplayed
}

// countTOTPFailure counts a wrong code of userID toward its lockout, in tx,
// and locks the user's TOTP when the count reaches the threshold, recording
// auth.totp.locked in the same transaction.
//
// The increment is one UPDATE ... RETURNING, so concurrent wrong codes, on
// any replica, all count and exactly one of them sees the threshold: the
// lock and its event happen once. The window is fixed, starting at its
// first failure. Codes refused while locked are not counted (their UPDATE
// matches no row), so a lock does not extend itself or record again; the
// count starts over when it ends.
func (s *Service) countTOTPFailure(ctx context.Context, tx *ent.Tx, userID string, now time.Time) error {
	lock := s.cfg.TOTPLockout
	rows, err := tx.QueryContext(ctx, `
		UPDATE totp_credentials SET
			failed_attempts = CASE WHEN failure_window_start IS NULL OR failure_window_start <= $2 THEN 1 ELSE failed_attempts + 1 END,
			failure_window_start = CASE WHEN failure_window_start IS NULL OR failure_window_start <= $2 THEN $3 ELSE failure_window_start END
		WHERE id = $1 AND confirmed_at IS NOT NULL AND (locked_until IS NULL OR locked_until <= $3)
		RETURNING failed_attempts`, userID, now.Add(-lock.Window), now)
	if err != nil {
		return fmt.Errorf("auth: totp: count failure: %w", err)
	}
	attempts := 0
	for rows.Next() {
		if err := rows.Scan(&attempts); err != nil {
			return fmt.Errorf("auth: totp: count failure: %w", errors.Join(err, rows.Close()))
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return fmt.Errorf("auth: totp: count failure: %w", err)
	}
	// attempts is 0 when no row was counted: TOTP turned off meanwhile, or
	// already locked.
	if attempts < lock.Threshold {
		return nil
	}
	until := now.Add(lock.Duration)
	if err := tx.TOTPCredential.UpdateOneID(userID).
		SetLockedUntil(until).
		SetFailedAttempts(0).
		ClearFailureWindowStart().
		Exec(ctx); err != nil {
		return fmt.Errorf("auth: totp: lock: %w", err)
	}
	meta := map[string]string{
		"user_id":      userID,
		"failures":     strconv.Itoa(attempts),
		"locked_until": until.UTC().Format(time.RFC3339),
	}
	return outbox.Enqueue(ctx, tx, outbox.NewEvent(ctx, "auth.totp.locked", "user:"+userID, auditv1.Outcome_OUTCOME_DENIED, meta))
}

// EnrollTOTP gives userID a new pending TOTP secret, replacing a pending
// one, once the Identity service has checked password, the user's own. An
// access token alone, stolen, would otherwise be enough to turn TOTP on
// with the thief's app and lock the owner out. It fails with
// [ErrWrongPassword] or [ErrAccountLocked], and with
// [ErrTOTPAlreadyEnabled] when TOTP is on.
func (s *Service) EnrollTOTP(ctx context.Context, userID, password string) (*Enrollment, error) {
	if password == "" {
		return nil, invalid("current_password", "required")
	}
	email, err := s.verifyPassword(ctx, userID, password)
	if err != nil {
		return nil, err
	}
	key, err := totp.Generate(totp.GenerateOpts{
		// The entry's name in the authenticator app: the email, which its
		// owner recognises; the ID from an Identity service that predates it.
		Issuer: s.cfg.TOTPIssuer, AccountName: cmp.Or(email, userID),
		Period: totpPeriod, Digits: totpDigits, Algorithm: totpAlg, SecretSize: 20,
	})
	if err != nil {
		return nil, fmt.Errorf("auth: totp: %w", err)
	}
	sealed, err := s.sealer.Seal([]byte(key.Secret()), "totp:"+userID)
	if err != nil {
		return nil, err
	}
	now := s.now()
	err = s.withTx(ctx, func(tx *ent.Tx) error {
		pending, err := setPendingSecret(ctx, tx, userID, sealed, now)
		if err != nil {
			return fmt.Errorf("auth: totp: enroll: %w", err)
		}
		if !pending {
			return ErrTOTPAlreadyEnabled
		}
		return outbox.Enqueue(ctx, tx, outbox.NewEvent(ctx, "auth.totp.enrollment_started", "user:"+userID, auditv1.Outcome_OUTCOME_SUCCESS, nil))
	})
	if err != nil {
		return nil, err
	}
	return &Enrollment{Secret: key.Secret(), URI: key.URL()}, nil
}

// setPendingSecret makes sealed the pending TOTP secret of userID in tx,
// replacing a pending one, and reports false, changing nothing, when TOTP
// is on. It is one upsert because a SELECT ... FOR UPDATE locks nothing
// while the user has no row: two enrolments at once (a double click) would
// both INSERT, and the second fail on the key. The upsert makes the second
// wait for the first and then replace its secret, as it would have one
// after the other. Either way the row stays locked until tx ends.
func setPendingSecret(ctx context.Context, tx *ent.Tx, userID string, sealed []byte, now time.Time) (bool, error) {
	rows, err := tx.QueryContext(ctx, `
		INSERT INTO totp_credentials AS c (id, secret_sealed, created_at) VALUES ($1, $2, $3)
		ON CONFLICT (id) DO UPDATE SET secret_sealed = EXCLUDED.secret_sealed, created_at = EXCLUDED.created_at, last_used_step = 0
		WHERE c.confirmed_at IS NULL
		RETURNING true`, userID, sealed, now)
	if err != nil {
		return false, err
	}
	pending := rows.Next()
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return false, err
	}
	return pending, nil
}

// ConfirmTOTP turns TOTP on for userID once code proves the app has the
// pending secret.
func (s *Service) ConfirmTOTP(ctx context.Context, userID, code string) error {
	if code == "" {
		return invalid("code", "required")
	}
	return s.withTx(ctx, func(tx *ent.Tx) error {
		c, err := tx.TOTPCredential.Query().Where(totpcredential.ID(userID)).ForUpdate().Only(ctx)
		if ent.IsNotFound(err) || err == nil && c.ConfirmedAt != nil {
			return ErrTOTPNotPending
		}
		if err != nil {
			return fmt.Errorf("auth: totp: %w", err)
		}
		secret, err := s.openSecret(c)
		if err != nil {
			return err
		}
		step := matchStep(secret, code, s.now())
		if step == 0 || step <= c.LastUsedStep {
			return ErrInvalidTOTPCode
		}
		if err := c.Update().SetConfirmedAt(s.now()).SetLastUsedStep(step).Exec(ctx); err != nil {
			return fmt.Errorf("auth: totp: %w", err)
		}
		return outbox.Enqueue(ctx, tx, outbox.NewEvent(ctx, "auth.totp.enabled", "user:"+userID, auditv1.Outcome_OUTCOME_SUCCESS, nil))
	})
}

// DisableTOTP turns TOTP off for userID. When self is true (users turning
// off their own) code must be a current, unused code; an administrator
// needs none. Turning off TOTP that is off succeeds, and drops a pending
// enrollment.
//
// A user's code is checked as a login checks it: it is spent (consumeStep),
// so it cannot also log in, whichever of the two comes first; a wrong one
// counts toward the lockout, and none is accepted while locked. Otherwise
// a stolen access token could guess codes here without limit and then turn
// the second factor off.
func (s *Service) DisableTOTP(ctx context.Context, userID string, self bool, code string) error {
	if err := checkID("user_id", userID); err != nil {
		return err
	}
	now := s.now()
	err := s.withTx(ctx, func(tx *ent.Tx) error {
		c, err := tx.TOTPCredential.Query().Where(totpcredential.ID(userID)).ForUpdate().Only(ctx)
		if ent.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("auth: totp: %w", err)
		}
		if c.ConfirmedAt != nil && self {
			if code == "" {
				return invalid("code", "required to turn off your own TOTP")
			}
			if totpLockedAt(c, now) {
				return totpLocked
			}
			secret, err := s.openSecret(c)
			if err != nil {
				return err
			}
			step := matchStep(secret, code, now)
			if step == 0 {
				return totpWrong // counted below, once this transaction is undone
			}
			if err := consumeStep(ctx, tx, userID, step, now); err != nil {
				return err // a totpFailure is recorded below
			}
		}
		if err := tx.TOTPCredential.DeleteOne(c).Exec(ctx); err != nil {
			return fmt.Errorf("auth: totp: %w", err)
		}
		if c.ConfirmedAt == nil {
			return nil
		}
		meta := map[string]string{"by_admin": fmt.Sprint(!self)}
		return outbox.Enqueue(ctx, tx, outbox.NewEvent(ctx, "auth.totp.disabled", "user:"+userID, auditv1.Outcome_OUTCOME_SUCCESS, meta))
	})
	if reason := totpFailure(""); errors.As(err, &reason) {
		// Recorded, and a wrong code counted, once the change is undone:
		// guesses made with a stolen access token leave a trace before
		// the lockout, not only when it starts.
		if err := s.withTx(ctx, func(tx *ent.Tx) error {
			if reason == totpWrong {
				if err := s.countTOTPFailure(ctx, tx, userID, now); err != nil {
					return err
				}
			}
			return outbox.Enqueue(ctx, tx, outbox.NewEvent(ctx, "auth.totp.disable_refused", "user:"+userID, auditv1.Outcome_OUTCOME_DENIED,
				map[string]string{"reason": string(reason)}))
		}); err != nil {
			return err
		}
		return ErrInvalidTOTPCode
	}
	return err
}

// verifyPassword has the Identity service check the password signed-in
// user userID gives to confirm a change.
func (s *Service) verifyPassword(ctx context.Context, userID, password string) (email string, err error) {
	res, err := s.identity.VerifyPassword(ctx, connect.NewRequest(&identityv1.VerifyPasswordRequest{UserId: userID, Password: password}))
	if err == nil {
		return res.Msg.GetEmail(), nil
	}
	switch connect.CodeOf(err) {
	case connect.CodePermissionDenied:
		return "", ErrWrongPassword
	case connect.CodeResourceExhausted:
		return "", ErrAccountLocked
	case connect.CodeInvalidArgument:
		return "", invalid("current_password", "not accepted")
	case connect.CodeNotFound:
		return "", ErrInvalidCredentials // deleted since the token was issued
	}
	return "", fmt.Errorf("%w: verify password: %v", ErrIdentityUnavailable, err)
}
