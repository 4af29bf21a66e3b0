package rpc

import (
	"context"
	"fmt"

	"connectrpc.com/connect"

	authzv1 "portcullis.dev/proto/authz/v1"
	"portcullis.dev/proto/authz/v1/authzv1connect"
)

// AuthzChecker is the [Authorizer] that asks the Authz service. Wrap it in a
// [CachedAuthorizer]. It also asks whether one user's roles cover
// another's ([AuthzChecker.Covers]), which is never cached.
type AuthzChecker struct {
	client authzv1connect.AuthzServiceClient
}

// NewAuthzChecker returns an Authorizer over an Authz client, usually
// `NewClient(factory, "authzsvc", authzv1connect.NewAuthzServiceClient)`.
func NewAuthzChecker(client authzv1connect.AuthzServiceClient) *AuthzChecker {
	return &AuthzChecker{client: client}
}

// Check implements [Authorizer].
func (a *AuthzChecker) Check(ctx context.Context, subject, permission string) (bool, error) {
	resp, err := a.client.Check(ctx, connect.NewRequest(&authzv1.CheckRequest{Subject: subject, Permission: permission}))
	if err != nil {
		return false, fmt.Errorf("check %s for %s: %w", permission, subject, err)
	}
	return resp.Msg.GetAllowed(), nil
}

// Covers reports whether subject holds every permission target holds,
// everywhere and on each resource target holds any on: the Authz
// service's Covers, asked before an action that would put target's
// account in subject's hands.
func (a *AuthzChecker) Covers(ctx context.Context, subject, target string) (bool, error) {
	resp, err := a.client.Covers(ctx, connect.NewRequest(&authzv1.CoversRequest{Subject: subject, Target: target}))
	if err != nil {
		return false, fmt.Errorf("check whether %s covers %s: %w", subject, target, err)
	}
	return resp.Msg.GetCovers(), nil
}
