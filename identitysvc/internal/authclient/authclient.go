// Package authclient adapts the Auth service's generated Connect client to
// what the identity domain needs of the Auth service, so that the domain
// does not depend on Connect or protobuf.
package authclient

import (
	"context"
	"fmt"

	"connectrpc.com/connect"

	"portcullis.dev/identitysvc/internal/identity"
	authv1 "portcullis.dev/proto/auth/v1"
	"portcullis.dev/proto/auth/v1/authv1connect"
)

// Sessions ends users' sessions through AuthService.EndUserSessions. It
// implements [identity.SessionEnder]; create it with [NewSessions].
type Sessions struct {
	client authv1connect.AuthServiceClient
}

var _ identity.SessionEnder = (*Sessions)(nil)

// NewSessions returns the adapter over client, which must attach a service
// token to internal procedures: the kernel's rpc.NewClient over the
// service's client factory does.
func NewSessions(client authv1connect.AuthServiceClient) *Sessions {
	return &Sessions{client: client}
}

// EndUserSessions implements [identity.SessionEnder].
func (s *Sessions) EndUserSessions(ctx context.Context, userID, reason, exceptSession string) error {
	_, err := s.client.EndUserSessions(ctx, connect.NewRequest(&authv1.EndUserSessionsRequest{
		UserId:          userID,
		Reason:          reason,
		ExceptSessionId: exceptSession,
	}))
	if err != nil {
		return fmt.Errorf("authsvc EndUserSessions: %w", err)
	}
	return nil
}
