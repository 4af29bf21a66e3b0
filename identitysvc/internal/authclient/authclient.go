// Package authclient adapts the Auth service's generated Connect client to
// what the identity domain needs of the Auth service, so that the domain
// does not depend on Connect or protobuf.
package authclient

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

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
func (s *Sessions) EndUserSessions(ctx context.Context, end identity.SessionEnd) error {
	req := &authv1.EndUserSessionsRequest{
		UserId:          end.UserID,
		Reason:          end.Reason,
		ExceptSessionId: end.ExceptSession,
	}
	if age := time.Since(end.ChangedAt); !end.ChangedAt.IsZero() && age > 0 {
		// An age, on this service's clock: Auth's need not agree with it.
		req.ChangeAge = durationpb.New(age)
	}
	_, err := s.client.EndUserSessions(ctx, connect.NewRequest(req))
	if err != nil {
		return fmt.Errorf("authsvc EndUserSessions: %w", err)
	}
	return nil
}
