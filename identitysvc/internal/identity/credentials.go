package identity

import (
	"context"
	"errors"
	"strconv"
	"time"

	"portcullis.dev/identitysvc/ent"
	"portcullis.dev/identitysvc/ent/user"
	"portcullis.dev/kernel/outbox"
	auditv1 "portcullis.dev/proto/audit/v1"
)

// VerifyCredentials returns the user whose email and password these are.
// An unknown email and a wrong password both give [ErrInvalidCredentials]
// after the same work (a dummy hash is checked for unknown emails); an
// account locked by repeated failures gives [ErrLocked], as the contract
// says, so the Auth service can tell the user to wait. A disabled or
// unverified user with the right password succeeds: the caller decides
// what that user may do.
func (s *Service) VerifyCredentials(ctx context.Context, email, password string) (User, error) {
	if len(password) > MaxPasswordBytes {
		return User{}, ErrInvalidCredentials
	}
	email, err := NormalizeEmail(email)
	if err != nil {
		_, _, _ = s.hasher.check(ctx, password, s.dummyHash)
		return User{}, ErrInvalidCredentials
	}
	u, err := s.db.User.Query().Where(user.Email(email), user.DeletedAtIsNil()).Only(ctx)
	if ent.IsNotFound(err) {
		if _, _, err := s.hasher.check(ctx, password, s.dummyHash); err != nil {
			return User{}, err
		}
		return User{}, ErrInvalidCredentials
	}
	if err != nil {
		return User{}, err
	}
	if err := s.authenticate(ctx, u, password); err != nil {
		return User{}, err
	}
	return toUser(u), nil
}

// authenticate checks password against u's hash under the lockout rules:
// [ErrLocked] while u is locked, [ErrInvalidCredentials] for a wrong
// password (counted towards the lockout), nil for the right one (which
// clears the count and upgrades a hash made with other parameters).
func (s *Service) authenticate(ctx context.Context, u *ent.User, password string) error {
	now := s.now()
	if u.LockedUntil != nil && now.Before(*u.LockedUntil) {
		// Same work as any other attempt, so timing does not tell a locked
		// account from a wrong password.
		_, _, _ = s.hasher.check(ctx, password, u.PasswordHash)
		return ErrLocked
	}
	ok, stale, err := s.hasher.check(ctx, password, u.PasswordHash)
	if err != nil {
		return err
	}
	if !ok {
		return s.recordFailure(ctx, u, now)
	}
	if u.FailedAttempts == 0 && u.LockedUntil == nil && !stale {
		return nil
	}
	upd := s.db.User.Update().Where(user.ID(u.ID)).SetFailedAttempts(0).ClearFailureWindowStart().ClearLockedUntil()
	if stale {
		// The password is known right now: upgrade its hash to the current
		// parameters — unless it changed meanwhile, which the condition on
		// the old hash detects, so a concurrent password change is never
		// overwritten with the old password.
		if hash, err := s.hasher.hash(ctx, password); err == nil {
			upd = s.db.User.Update().Where(user.ID(u.ID), user.PasswordHash(u.PasswordHash)).
				SetPasswordHash(hash).SetFailedAttempts(0).ClearFailureWindowStart().ClearLockedUntil()
		}
	}
	return upd.Exec(ctx)
}

// recordFailure counts a failed attempt atomically (concurrent failures all
// count: the increment is one UPDATE ... RETURNING) and locks the account
// when the threshold is reached, recording identity.login.locked in the
// same transaction. It returns [ErrInvalidCredentials] once the count is
// committed.
func (s *Service) recordFailure(ctx context.Context, u *ent.User, now time.Time) error {
	lock := s.cfg.Lockout
	if lock.Threshold <= 0 {
		return ErrInvalidCredentials
	}
	return s.inTx(ctx, func(tx *ent.Tx) error {
		rows, err := tx.QueryContext(ctx, `
			UPDATE users SET
				failed_attempts = CASE WHEN failure_window_start IS NULL OR failure_window_start < $2 THEN 1 ELSE failed_attempts + 1 END,
				failure_window_start = CASE WHEN failure_window_start IS NULL OR failure_window_start < $2 THEN $3 ELSE failure_window_start END
			WHERE id = $1
			RETURNING failed_attempts`, u.ID, now.Add(-lock.Window), now)
		if err != nil {
			return err
		}
		attempts := 0
		for rows.Next() {
			if err := rows.Scan(&attempts); err != nil {
				return errors.Join(err, rows.Close())
			}
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return err
		}
		if attempts < lock.Threshold {
			return errCommitThen{ErrInvalidCredentials} // the count must stick
		}
		until := now.Add(lock.Duration)
		if err := tx.User.UpdateOneID(u.ID).SetLockedUntil(until).SetFailedAttempts(0).ClearFailureWindowStart().Exec(ctx); err != nil {
			return err
		}
		ev := outbox.NewEvent(ctx, "identity.login.locked", "user:"+u.ID.String(), auditv1.Outcome_OUTCOME_SUCCESS,
			map[string]string{"locked_until": until.UTC().Format(time.RFC3339), "failures": strconv.Itoa(attempts)})
		if err := outbox.Enqueue(ctx, tx, ev); err != nil {
			return err
		}
		return errCommitThen{ErrInvalidCredentials}
	})
}
