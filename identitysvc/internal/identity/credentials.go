package identity

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"

	"portcullis.dev/identitysvc/ent"
	"portcullis.dev/identitysvc/ent/predicate"
	"portcullis.dev/identitysvc/ent/user"
	"portcullis.dev/kernel/outbox"
	auditv1 "portcullis.dev/proto/audit/v1"
)

// VerifyCredentials returns the active user whose email and password
// these are. Every refusal is [ErrInvalidCredentials] after one argon2id
// hash: an unknown email (a dummy hash is checked), a wrong password, a
// locked account and a disabled user look and cost the same, so the call
// tells a guesser nothing about which accounts exist or what state they
// are in. Only [ErrBusy] differs, and it says nothing about the account:
// the hashing slots are shared by every login.
//
// A disabled user's password is still checked, so a wrong one counts
// towards the lockout like any other, and a right one neither clears the
// count nor upgrades the hash: a refused login changes nothing that a
// successful one would.
func (s *Service) VerifyCredentials(ctx context.Context, email, password string) (User, error) {
	if len(password) > MaxPasswordBytes {
		// Refused before hashing: the bound exists so that nobody can make
		// one hash cost more, and the length says nothing about an account.
		return User{}, ErrInvalidCredentials
	}
	email, err := NormalizeEmail(email)
	if err != nil {
		return User{}, s.refuse(ctx, password)
	}
	u, err := s.db.User.Query().Where(user.Email(email), user.DeletedAtIsNil()).Only(ctx)
	if ent.IsNotFound(err) {
		return User{}, s.refuse(ctx, password)
	}
	if err != nil {
		return User{}, fmt.Errorf("verify credentials: look up user: %w", err)
	}
	if _, err := s.authenticate(ctx, u, password, Status(u.Status) == StatusActive); err != nil {
		if errors.Is(err, ErrLocked) {
			return User{}, ErrInvalidCredentials
		}
		return User{}, err
	}
	return toUser(u), nil
}

// refuse checks password against the dummy hash and returns
// [ErrInvalidCredentials], or [ErrBusy] when no hashing slot came free:
// a refusal without an account costs what one with an account does.
func (s *Service) refuse(ctx context.Context, password string) error {
	if _, _, err := s.hasher.check(ctx, password, s.dummyHash); err != nil {
		return err
	}
	return ErrInvalidCredentials
}

// authenticate checks password against u's hash under the lockout rules:
// [ErrLocked] while u is locked, [ErrInvalidCredentials] for a wrong
// password (counted towards the lockout) and for the right password when
// !allowed, nil for the right one (which clears the count and upgrades a
// hash made with other parameters). Every refusal costs one hash, so
// timing does not tell them apart. It returns the hash stored once it is
// done, for a change that must be made over the password it checked.
//
// The lock and the hash are read again once the hash is done: u was read
// before the call waited for a hashing slot, and a burst of guesses all
// read before the lockout began must not each be judged as if it had not.
// A hash that changed meanwhile, by a reset or by another login's
// upgrade, is checked in its turn (one more hash, in that rare case).
func (s *Service) authenticate(ctx context.Context, u *ent.User, password string, allowed bool) (string, error) {
	now := s.now()
	hash := u.PasswordHash
	for range 2 {
		ok, stale, err := s.hasher.check(ctx, password, hash)
		if err != nil {
			return "", err
		}
		cur, err := s.lockoutState(ctx, u.ID)
		if err != nil {
			return "", err
		}
		if lockedAt(cur, now) {
			// Checked after hashing, for the timing; attempts while locked
			// do not count (the lock already stops them) and do not extend
			// it.
			return "", ErrLocked
		}
		if cur.PasswordHash != hash {
			hash = cur.PasswordHash
			continue
		}
		if !ok {
			return "", s.recordFailure(ctx, u, now)
		}
		if !allowed {
			return "", ErrInvalidCredentials
		}
		if cur.FailedAttempts == 0 && cur.LockedUntil == nil && !stale {
			return hash, nil
		}
		// Over the hash just checked, and only while unlocked: a change of
		// the password meanwhile is never overwritten with the old one,
		// and a lock set meanwhile stands.
		stored := hash
		upd := s.db.User.Update().Where(user.ID(u.ID), user.PasswordHash(hash), notLockedAt(now)).
			SetFailedAttempts(0).ClearFailureWindowStart().ClearLockedUntil()
		if stale {
			// The password is known right now: upgrade its hash to the
			// current parameters.
			if upgraded, err := s.hasher.hash(ctx, password); err == nil {
				upd.SetPasswordHash(upgraded)
				stored = upgraded
			}
		}
		n, err := upd.Save(ctx)
		if err != nil {
			return "", fmt.Errorf("clear failed attempts: %w", err)
		}
		if n > 0 {
			return stored, nil
		}
		// Locked or changed since the read: locked is the answer, changed
		// is judged again.
		if cur, err = s.lockoutState(ctx, u.ID); err != nil {
			return "", err
		}
		if lockedAt(cur, now) {
			return "", ErrLocked
		}
		hash = cur.PasswordHash
	}
	// Changed twice while it was checked: not this password's failure.
	return "", ErrInvalidCredentials
}

// lockoutState reads what authenticate decides on.
func (s *Service) lockoutState(ctx context.Context, id uuid.UUID) (*ent.User, error) {
	cur, err := s.db.User.Query().Where(user.ID(id)).
		Select(user.FieldPasswordHash, user.FieldFailedAttempts, user.FieldLockedUntil).Only(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the lockout state: %w", err)
	}
	return cur, nil
}

// lockedAt reports whether u refuses passwords at now.
func lockedAt(u *ent.User, now time.Time) bool {
	return u.LockedUntil != nil && now.Before(*u.LockedUntil)
}

// notLockedAt is lockedAt's opposite, in SQL.
func notLockedAt(now time.Time) predicate.User {
	return user.Or(user.LockedUntilIsNil(), user.LockedUntilLTE(now))
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
			WHERE id = $1 AND (locked_until IS NULL OR locked_until <= $3)
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
		if attempts == 0 {
			return ErrLocked // by a failure that counted meanwhile: this one does not
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
