package auth

import (
	"context"
	"crypto/subtle"
	"fmt"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"portcullis.dev/authsvc/ent"
	"portcullis.dev/authsvc/ent/totpcredential"
	"portcullis.dev/kernel/outbox"
	auditv1 "portcullis.dev/proto/audit/v1"
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
)

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
func (s *Service) checkLoginTOTP(ctx context.Context, userID, code string) (int64, error) {
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
	secret, err := s.openSecret(c)
	if err != nil {
		return 0, err
	}
	step := matchStep(secret, code, s.now())
	switch {
	case step == 0:
		return 0, totpWrong
	case step <= c.LastUsedStep:
		return 0, totpReplayed
	}
	return step, nil
}

// consumeStep records step as used by userID, unless it or a later one
// already is, in which case the code is a replay.
func consumeStep(ctx context.Context, tx *ent.Tx, userID string, step int64) error {
	n, err := tx.TOTPCredential.Update().
		Where(totpcredential.ID(userID), totpcredential.LastUsedStepLT(step)).
		SetLastUsedStep(step).
		Save(ctx)
	if err != nil {
		return fmt.Errorf("auth: totp: %w", err)
	}
	if n == 0 {
		return totpReplayed
	}
	return nil
}

// EnrollTOTP gives userID a new pending TOTP secret, replacing a pending
// one. It fails with [ErrTOTPAlreadyEnabled] when TOTP is on.
func (s *Service) EnrollTOTP(ctx context.Context, userID string) (*Enrollment, error) {
	key, err := totp.Generate(totp.GenerateOpts{
		Issuer: s.cfg.TOTPIssuer, AccountName: userID,
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
		c, err := tx.TOTPCredential.Query().Where(totpcredential.ID(userID)).ForUpdate().Only(ctx)
		switch {
		case ent.IsNotFound(err):
			err = tx.TOTPCredential.Create().SetID(userID).SetSecretSealed(sealed).SetCreatedAt(now).Exec(ctx)
		case err != nil:
		case c.ConfirmedAt != nil:
			return ErrTOTPAlreadyEnabled
		default:
			err = c.Update().SetSecretSealed(sealed).SetCreatedAt(now).SetLastUsedStep(0).Exec(ctx)
		}
		if err != nil {
			return fmt.Errorf("auth: totp: %w", err)
		}
		return outbox.Enqueue(ctx, tx, outbox.NewEvent(ctx, "auth.totp.enrollment_started", "user:"+userID, auditv1.Outcome_OUTCOME_SUCCESS, nil))
	})
	if err != nil {
		return nil, err
	}
	return &Enrollment{Secret: key.Secret(), URI: key.URL()}, nil
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
func (s *Service) DisableTOTP(ctx context.Context, userID string, self bool, code string) error {
	return s.withTx(ctx, func(tx *ent.Tx) error {
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
			secret, err := s.openSecret(c)
			if err != nil {
				return err
			}
			if step := matchStep(secret, code, s.now()); step == 0 || step <= c.LastUsedStep {
				return ErrInvalidTOTPCode
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
}
