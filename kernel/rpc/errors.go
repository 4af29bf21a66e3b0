package rpc

import (
	"context"
	"errors"

	"connectrpc.com/connect"
)

// ContextError returns the Connect error for a call that failed because
// its context ended, and false for any other error. The message is fixed:
// the wrapped error may name internals. A deadline that ran out is
// DeadlineExceeded, not Canceled: the client did not give up, and may retry
// with a longer one.
func ContextError(err error) (*connect.Error, bool) {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, errors.New("deadline exceeded")), true
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, errors.New("request canceled")), true
	}
	return nil, false
}
