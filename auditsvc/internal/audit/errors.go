package audit

import (
	"errors"
	"fmt"
)

// Errors the domain returns; the handler maps them to Connect codes. Their
// messages, and those of errors wrapping them, are safe to show a caller.
var (
	// ErrInvalid means the request breaks a rule of the contract.
	ErrInvalid = errors.New("invalid argument")
	// ErrNotFound means the event asked for does not exist.
	ErrNotFound = errors.New("event not found")
	// ErrCorrupt means a stored event cannot be read or shown as it is:
	// it was changed behind the service's back (VerifyChain says where).
	ErrCorrupt = errors.New("the audit log holds an event changed outside the service; VerifyChain says where")
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}
