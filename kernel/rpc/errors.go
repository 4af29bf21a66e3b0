package rpc

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	"portcullis.dev/kernel/database"
)

// ContextError returns the Connect error for a call that failed because
// its context ended, and false for any other error. It looks at ctx, the
// call's, as well as err: a driver whose query the ended context
// interrupted may say so in words of its own (PostgreSQL's "canceling
// statement due to user request"), which are no failure of the service.
// The message is fixed: the wrapped error may name internals. A deadline
// that ran out is DeadlineExceeded, not Canceled: the client did not give
// up, and may retry with a longer one.
func ContextError(ctx context.Context, err error) (*connect.Error, bool) {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, errors.New("deadline exceeded")), true
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, errors.New("request canceled")), true
	case err != nil && ctx.Err() != nil:
		return ContextError(ctx, ctx.Err())
	}
	return nil, false
}

// TransientError returns the Connect error for a call that failed through
// no fault of the service, and false for any other error: its context
// ended ([ContextError]); PostgreSQL gave its transaction up for a
// concurrent one ([database.IsConflict]), which Aborted tells the caller
// to make again; or the database is out of reach for now
// ([database.IsUnavailable]), which Unavailable tells the caller to try
// again later. Every service asks it before answering Internal. The
// server's observer logs the database's own error with the call.
func TransientError(ctx context.Context, err error) (*connect.Error, bool) {
	if cerr, ok := ContextError(ctx, err); ok {
		return cerr, true
	}
	if database.IsConflict(err) {
		return connect.NewError(connect.CodeAborted, errors.New("the change met a concurrent one; retry")), true
	}
	// A call to another service failed with a code of its own, which a
	// broken connection to it would also look like.
	if _, fromCall := errors.AsType[*connect.Error](err); database.IsUnavailable(err) && !fromCall {
		return connect.NewError(connect.CodeUnavailable, hiddenCause{msg: "the database is unavailable; retry later", err: err}), true
	}
	return nil, false
}

// Internal returns the Internal error a handler answers for err, a failure
// the caller can do nothing about. The caller learns only "internal
// error": err may name internals. The server's observer logs err at ERROR,
// in the call's log line, with its request ID and procedure.
func Internal(err error) *connect.Error {
	return connect.NewError(connect.CodeInternal, hiddenCause{msg: "internal error", err: err})
}

// hiddenCause keeps an error's cause for the log, out of the answer, which
// says only msg.
type hiddenCause struct {
	msg string
	err error
}

func (e hiddenCause) Error() string { return e.msg }
func (e hiddenCause) Unwrap() error { return e.err }
