package rpc_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/rpc"
	authzv1 "portcullis.dev/proto/authz/v1"
	"portcullis.dev/proto/authz/v1/authzv1connect"
)

// authzStub answers Check and Covers from what it was told: a stand-in for
// the Authz service, whose own tests cover the decisions.
type authzStub struct {
	authzv1connect.UnimplementedAuthzServiceHandler
	allowed map[[2]string]bool // subject, permission or target
}

func (s *authzStub) Check(_ context.Context, req *connect.Request[authzv1.CheckRequest]) (*connect.Response[authzv1.CheckResponse], error) {
	return connect.NewResponse(&authzv1.CheckResponse{Allowed: s.allowed[[2]string{req.Msg.GetSubject(), req.Msg.GetPermission()}]}), nil
}

func (s *authzStub) Covers(_ context.Context, req *connect.Request[authzv1.CoversRequest]) (*connect.Response[authzv1.CoversResponse], error) {
	if req.Msg.GetTarget() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, nil)
	}
	return connect.NewResponse(&authzv1.CoversResponse{Covers: s.allowed[[2]string{req.Msg.GetSubject(), req.Msg.GetTarget()}]}), nil
}

func TestAuthzChecker(t *testing.T) {
	t.Parallel()
	stub := &authzStub{allowed: map[[2]string]bool{{"alice", "identity.users.read"}: true, {"alice", "bob"}: true}}
	mux := http.NewServeMux()
	mux.Handle(authzv1connect.NewAuthzServiceHandler(stub))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	checker := rpc.NewAuthzChecker(authzv1connect.NewAuthzServiceClient(srv.Client(), srv.URL))
	ctx := t.Context()

	tests := []struct {
		name string
		ask  func() (bool, error)
		want bool
	}{
		{"check allowed", func() (bool, error) { return checker.Check(ctx, "alice", "identity.users.read") }, true},
		{"check denied", func() (bool, error) { return checker.Check(ctx, "bob", "identity.users.read") }, false},
		{"covers", func() (bool, error) { return checker.Covers(ctx, "alice", "bob") }, true},
		{"does not cover", func() (bool, error) { return checker.Covers(ctx, "bob", "alice") }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.ask()
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}

	_, err := checker.Covers(ctx, "alice", "")
	assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err), "the code survives the wrapping")
	assert.ErrorContains(t, err, "alice")
}
