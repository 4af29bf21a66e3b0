package auth

import "errors"

// The domain's errors. The handler maps each to one Connect code and a
// fixed message (see the rpc package's error table); the wrapped detail,
// if any, is for the logs only.
var (
	// ErrInvalidCredentials: unknown email, wrong password, locked account
	// or disabled user. One error for all, so a caller cannot tell which
	// accounts exist or what state they are in (the audit log can).
	ErrInvalidCredentials = errors.New("invalid credentials")
	// ErrEmailNotVerified: the password was right but the email is not
	// verified and auth.require_verified_email is on.
	ErrEmailNotVerified = errors.New("email not verified")
	// ErrTOTPRequired: the password was right but the TOTP code is missing,
	// wrong, or already used.
	ErrTOTPRequired = errors.New("totp code required")
	// ErrInvalidRefreshToken: a refresh token that is unknown, used,
	// expired or of a revoked session.
	ErrInvalidRefreshToken = errors.New("invalid refresh token")
	// ErrSessionNotFound: no such session of that user.
	ErrSessionNotFound = errors.New("session not found")
	// ErrTOTPAlreadyEnabled: EnrollTOTP while TOTP is on.
	ErrTOTPAlreadyEnabled = errors.New("totp already enabled")
	// ErrTOTPNotPending: ConfirmTOTP without a pending enrollment.
	ErrTOTPNotPending = errors.New("no totp enrollment pending")
	// ErrInvalidTOTPCode: a wrong or reused code for ConfirmTOTP or
	// DisableTOTP.
	ErrInvalidTOTPCode = errors.New("invalid totp code")
	// ErrWrongPassword: the password a signed-in user gave to confirm a
	// change is not theirs (EnrollTOTP).
	ErrWrongPassword = errors.New("wrong password")
	// ErrAccountLocked: a signed-in user confirming a change with their
	// password while too many wrong ones have locked the account.
	ErrAccountLocked = errors.New("account temporarily locked")
	// ErrIdentityUnavailable: the Identity service could not answer, or
	// was too busy hashing passwords to check this one.
	ErrIdentityUnavailable = errors.New("identity service unavailable")
)

// InvalidArgumentError is a request field that is missing or malformed.
type InvalidArgumentError struct {
	Field, Reason string
}

func (e *InvalidArgumentError) Error() string { return e.Field + ": " + e.Reason }

func invalid(field, reason string) error { return &InvalidArgumentError{Field: field, Reason: reason} }
