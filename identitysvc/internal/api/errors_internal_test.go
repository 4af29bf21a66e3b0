package api

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"connectrpc.com/connect"
	"github.com/lib/pq"
	"github.com/stretchr/testify/assert"

	"portcullis.dev/identitysvc/internal/identity"
)

// TestToConnect pins the codes whose meaning other services rely on:
// the Auth service tells a refused login from an overloaded Identity
// service by them.
func TestToConnect(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		code connect.Code
		msg  string
	}{
		{"refused login", identity.ErrInvalidCredentials, connect.CodeUnauthenticated, "invalid credentials"},
		{"busy", fmt.Errorf("%w: %w", identity.ErrBusy, context.DeadlineExceeded), connect.CodeUnavailable, "busy: too many password checks in progress; retry later"},
		{"locked, to the account's owner", identity.ErrLocked, connect.CodeResourceExhausted, "account temporarily locked"},
		{"unexpected", errors.New("pq: connection refused"), connect.CodeInternal, "internal error"},
		// Two changes of one user at once: PostgreSQL aborts one, which
		// may be made again.
		{"deadlock", fmt.Errorf("use token: %w", &pq.Error{Code: "40P01", Message: "deadlock detected"}), connect.CodeAborted, "the change met a concurrent one; retry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cerr *connect.Error
			assert.ErrorAs(t, toConnect(t.Context(), tt.err), &cerr)
			assert.Equal(t, tt.code, cerr.Code())
			assert.Equal(t, tt.msg, cerr.Message())
		})
	}
}
