package authn

import (
	"errors"
	"fmt"
	"strconv"
)

// The errors verifiers return, wrapped with the detail that belongs in a log
// line: test them with [errors.Is]. Callers answer every one of them with the
// same Unauthenticated error and never tell the caller the detail, which
// would help an attacker probe the checks.
var (
	// ErrTokenMissing means the token is empty.
	ErrTokenMissing = errors.New("authn: token missing")
	// ErrTokenMalformed means the token is not a compact JWS with a JSON
	// header and JSON claims (RFC 7515 section 7.1), or is too long to be
	// one of ours.
	ErrTokenMalformed = errors.New("authn: token malformed")
	// ErrTokenInvalid means the token is well formed but must not be
	// accepted: a bad signature, an algorithm or type that is not allowed,
	// or a claim that does not match (issuer, audience, subject).
	ErrTokenInvalid = errors.New("authn: token invalid")
	// ErrTokenExpired means the token's `exp` is past, beyond the leeway.
	ErrTokenExpired = errors.New("authn: token expired")
	// ErrTokenNotYetValid means the token's `nbf` or `iat` is in the future,
	// beyond the leeway: usually a clock that is off.
	ErrTokenNotYetValid = errors.New("authn: token not yet valid")
	// ErrKeyUnknown means no key with the token's `kid` is known, even after
	// refreshing the key set (or refreshing was not allowed yet).
	ErrKeyUnknown = errors.New("authn: signing key unknown")
	// ErrKeysUnavailable means no key set could be fetched yet, so no token
	// can be checked. Unlike the others it says nothing about the token;
	// a caller may answer Unavailable instead of Unauthenticated.
	ErrKeysUnavailable = errors.New("authn: signing keys unavailable")
)

// maxDetail caps how much of a token-controlled string an error repeats,
// so that a hostile token cannot flood the logs.
const maxDetail = 64

// quote returns s quoted for an error message, cut to [maxDetail] bytes.
func quote(s string) string {
	if len(s) > maxDetail {
		return strconv.Quote(s[:maxDetail]) + "..."
	}
	return strconv.Quote(s)
}

// errorf wraps sentinel with a detail message.
func errorf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)
}
