package handler

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/authsvc/internal/auth"
)

func TestToConnect(t *testing.T) {
	t.Parallel()
	h := New(nil, nil)
	tests := []struct {
		name string
		err  error
		code connect.Code
		msg  string
	}{
		{"deadline", fmt.Errorf("auth: begin: %w", context.DeadlineExceeded), connect.CodeDeadlineExceeded, "deadline exceeded"},
		{"canceled", fmt.Errorf("auth: begin: %w", context.Canceled), connect.CodeCanceled, "request canceled"},
		{"wrong totp", auth.ErrTOTPRequired, connect.CodeUnauthenticated, "invalid credentials"},
		{"invalid argument", &auth.InvalidArgumentError{Field: "email", Reason: "required"}, connect.CodeInvalidArgument, "email: required"},
		{"internal", errors.New("boom"), connect.CodeInternal, "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var cerr *connect.Error
			require.ErrorAs(t, h.toConnect(t.Context(), tt.err), &cerr)
			assert.Equal(t, tt.code, cerr.Code())
			assert.Equal(t, tt.msg, cerr.Message())
		})
	}
}

// TestToConnectAfterTheCallEnded: a dependency's failure while the call's
// own deadline ran out is the deadline's, not an outage of Identity.
func TestToConnectAfterTheCallEnded(t *testing.T) {
	t.Parallel()
	h := New(nil, nil)
	ctx, cancel := context.WithDeadline(t.Context(), time.Now())
	defer cancel()
	<-ctx.Done()
	var cerr *connect.Error
	require.ErrorAs(t, h.toConnect(ctx, fmt.Errorf("%w: verify credentials: request canceled", auth.ErrIdentityUnavailable)), &cerr)
	assert.Equal(t, connect.CodeDeadlineExceeded, cerr.Code())
	require.ErrorAs(t, h.toConnect(t.Context(), auth.ErrIdentityUnavailable), &cerr)
	assert.Equal(t, connect.CodeUnavailable, cerr.Code(), "while the call lives, Identity is to blame")
}
