package authz

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
)

func TestToConnect(t *testing.T) {
	t.Parallel()
	fault := errors.New("relation \"roles\" does not exist")
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		err     error
		code    connect.Code
		message string
	}{
		{"domain error keeps its message", context.Background(), invalid("name is required"), connect.CodeInvalidArgument, "name is required"},
		// Not Unavailable, "retry later": a bug fails the same way again.
		{"unexpected error is Internal, its cause kept for the log", context.Background(), fmt.Errorf("list roles: %w", fault), connect.CodeInternal, "internal error"},
		{"ended context is the context's", canceled, fmt.Errorf("list roles: %w", context.Canceled), connect.CodeCanceled, "request canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := toConnect(tt.ctx, tt.err)
			assert.Equal(t, tt.code, connect.CodeOf(err))
			var cerr *connect.Error
			if assert.ErrorAs(t, err, &cerr) {
				assert.Equal(t, tt.message, cerr.Message())
			}
		})
	}
	assert.ErrorIs(t, toConnect(context.Background(), fault), fault, "the observer logs the cause")
}
