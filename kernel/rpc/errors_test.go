package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"

	"portcullis.dev/kernel/rpc"
)

func TestContextError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		code connect.Code
		ok   bool
	}{
		{fmt.Errorf("look up user in schema secret_schema: %w", context.DeadlineExceeded), connect.CodeDeadlineExceeded, true},
		{fmt.Errorf("query: %w", context.Canceled), connect.CodeCanceled, true},
		{errors.New("disk full"), 0, false},
	}
	for _, tt := range tests {
		got, ok := rpc.ContextError(tt.err)
		assert.Equal(t, tt.ok, ok, tt.err)
		if ok {
			assert.Equal(t, tt.code, got.Code())
			assert.NotContains(t, got.Message(), "schema", "the wrapped text leaks")
		}
	}
}
