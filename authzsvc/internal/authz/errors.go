package authz

import (
	"errors"
	"fmt"
)

// Kind is the class of a domain error; the handler maps each to one
// Connect code.
type Kind int

// Kinds of domain errors.
const (
	// KindInvalid is a request that breaks a rule on its own (a bad name).
	KindInvalid Kind = iota + 1
	// KindNotFound is a role or binding that does not exist.
	KindNotFound
	// KindAlreadyExists is a role name that is taken.
	KindAlreadyExists
	// KindFailedPrecondition is a request the current state refuses: a
	// built-in role, a role still bound.
	KindFailedPrecondition
	// KindPermissionDenied is a caller giving away what they do not hold.
	KindPermissionDenied
)

// Error is a domain error. Its message is written for the caller and
// holds no internal detail, so the handler may pass it on.
type Error struct {
	Kind Kind
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

func invalid(format string, args ...any) error {
	return &Error{Kind: KindInvalid, Msg: fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &Error{Kind: KindNotFound, Msg: fmt.Sprintf(format, args...)}
}

func alreadyExists(format string, args ...any) error {
	return &Error{Kind: KindAlreadyExists, Msg: fmt.Sprintf(format, args...)}
}

func failedPrecondition(format string, args ...any) error {
	return &Error{Kind: KindFailedPrecondition, Msg: fmt.Sprintf(format, args...)}
}

func permissionDenied(format string, args ...any) error {
	return &Error{Kind: KindPermissionDenied, Msg: fmt.Sprintf(format, args...)}
}

// KindOf returns the kind of a domain error in err's chain, or 0 for any
// other error.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return 0
}
