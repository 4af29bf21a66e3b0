package rpc_test

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/lib/pq"
	"github.com/stretchr/testify/assert"

	"portcullis.dev/kernel/rpc"
)

func TestContextError(t *testing.T) {
	t.Parallel()
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	expired, cancel := context.WithDeadline(t.Context(), time.Now())
	defer cancel()
	// What lib/pq answers when the context ends during a query.
	pqCanceled := errors.New("pq: canceling statement due to user request")
	tests := []struct {
		ctx  context.Context
		err  error
		code connect.Code
		ok   bool
	}{
		{t.Context(), fmt.Errorf("look up user in schema secret_schema: %w", context.DeadlineExceeded), connect.CodeDeadlineExceeded, true},
		{t.Context(), fmt.Errorf("query: %w", context.Canceled), connect.CodeCanceled, true},
		{t.Context(), errors.New("disk full"), 0, false},
		{t.Context(), pqCanceled, 0, false},
		{canceled, fmt.Errorf("lock in schema secret_schema: %w", pqCanceled), connect.CodeCanceled, true},
		{expired, fmt.Errorf("lock in schema secret_schema: %w", pqCanceled), connect.CodeDeadlineExceeded, true},
		{canceled, nil, 0, false},
	}
	for _, tt := range tests {
		got, ok := rpc.ContextError(tt.ctx, tt.err)
		assert.Equal(t, tt.ok, ok, tt.err)
		if ok {
			assert.Equal(t, tt.code, got.Code())
			assert.NotContains(t, got.Message(), "schema", "the wrapped text leaks")
		}
	}
}

func TestTransientError(t *testing.T) {
	t.Parallel()
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		code connect.Code
		ok   bool
	}{
		{"deadlock", t.Context(), fmt.Errorf("use token: %w", &pq.Error{Code: "40P01"}), connect.CodeAborted, true},
		{"serialization failure", t.Context(), &pq.Error{Code: "40001"}, connect.CodeAborted, true},
		{"the call ended", canceled, &pq.Error{Code: "57014"}, connect.CodeCanceled, true},
		{"a unique violation", t.Context(), &pq.Error{Code: "23505"}, 0, false},
		{"anything else", t.Context(), errors.New("disk full"), 0, false},
		{"the database shutting down", t.Context(), fmt.Errorf("get user: %w", &pq.Error{Code: "57P03"}), connect.CodeUnavailable, true},
		{"out of connection slots", t.Context(), fmt.Errorf("begin: %w", &pq.Error{Code: "53300"}), connect.CodeUnavailable, true},
		{"a broken connection", t.Context(), fmt.Errorf("commit: %w", driver.ErrBadConn), connect.CodeUnavailable, true},
		// Its caller says what is unavailable, and how to answer it.
		{"another service out of reach", t.Context(), fmt.Errorf("verify credentials: %w", connect.NewError(connect.CodeUnavailable, &net.OpError{Op: "dial", Err: errors.New("connection refused")})), 0, false},
	}
	for _, tt := range tests {
		got, ok := rpc.TransientError(tt.ctx, tt.err)
		assert.Equal(t, tt.ok, ok, tt.name)
		if ok {
			assert.Equal(t, tt.code, got.Code(), tt.name)
			assert.NotContains(t, got.Message(), "pq", "the database's own words stay in the log")
		}
	}
}
