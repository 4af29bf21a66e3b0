package identity

import (
	"errors"
	"fmt"
)

// Errors of the Identity domain. The API layer maps each to one Connect
// code; their text never reaches a caller beyond what is safe to say.
var (
	// ErrNotFound: no such user (or it was deleted).
	ErrNotFound = errors.New("user not found")
	// ErrEmailTaken: another user has this email, in any letter case.
	ErrEmailTaken = errors.New("email already registered")
	// ErrInvalidCredentials: unknown email, wrong password, locked account
	// or disabled user at login, on purpose indistinguishable.
	ErrInvalidCredentials = errors.New("invalid credentials")
	// ErrWrongPassword: an authenticated user's current password is wrong
	// (ChangePassword). Unlike ErrInvalidCredentials it may say so: the
	// caller is known.
	ErrWrongPassword = errors.New("current password is wrong")
	// ErrLocked: too many failed attempts; retry after the lockout. Only
	// ChangePassword, whose caller is the account's owner, says so; a
	// login says ErrInvalidCredentials.
	ErrLocked = errors.New("account temporarily locked")
	// ErrInvalidToken: unknown, used or expired one-time token.
	ErrInvalidToken = errors.New("invalid or expired token")
	// ErrBusy: every password-hashing slot stayed busy until the caller's
	// deadline. Nothing was checked or counted, so a retry is safe; it is
	// about the service, never about an account.
	ErrBusy = errors.New("busy: too many password checks in progress; retry later")
	// ErrOutranked: an administrator changing the email or status of, or
	// deleting, a user who holds permissions the administrator does not
	// (see [Service.ConfirmOutranks]).
	ErrOutranked = errors.New("the user holds permissions you do not: only someone who holds all of them may change their email or status, or delete them")
	// ErrAuthorityUnavailable: the Authz service could not say whether a
	// change is allowed; nothing was changed.
	ErrAuthorityUnavailable = errors.New("the permission service is unavailable; try again")
	// ErrTooSoon: a mail of this kind was sent to the user less than the
	// configured cooldown ago.
	ErrTooSoon = errors.New("a mail was sent recently; try again later")
	// ErrSelf: an administrator disabling or deleting their own account,
	// which another must do, so that the last cannot lock everybody out.
	ErrSelf = errors.New("you cannot disable or delete your own account; another administrator can")
	// ErrCallerDisabled: the calling user's account is disabled; their
	// access token, still within its lifetime, does nothing here.
	ErrCallerDisabled = errors.New("your account is disabled")
	// ErrCallerGone: the calling user's account was deleted.
	ErrCallerGone = errors.New("your account no longer exists")
	// ErrAlreadyVerified: the email is verified already.
	ErrAlreadyVerified = errors.New("email already verified")
)

// ValidationError says which input field is wrong and why.
type ValidationError struct {
	Field, Reason string
}

func (e *ValidationError) Error() string { return fmt.Sprintf("%s %s", e.Field, e.Reason) }
