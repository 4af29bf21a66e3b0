// Package authzclient adapts the Authz service's generated Connect client
// to what the identity domain needs of the Authz service, so that the
// domain does not depend on Connect or protobuf.
package authzclient

import (
	"context"
	"fmt"

	"connectrpc.com/connect"

	"portcullis.dev/identitysvc/internal/identity"
	authzv1 "portcullis.dev/proto/authz/v1"
	"portcullis.dev/proto/authz/v1/authzv1connect"
)

// Authority asks AuthzService.Covers. It implements [identity.Authority];
// create it with [NewAuthority].
type Authority struct {
	client authzv1connect.AuthzServiceClient
}

var _ identity.Authority = (*Authority)(nil)

// NewAuthority returns the adapter over client, which must attach a
// service token to internal procedures: the kernel's rpc.NewClient over
// the service's client factory does.
func NewAuthority(client authzv1connect.AuthzServiceClient) *Authority {
	return &Authority{client: client}
}

// Covers implements [identity.Authority].
func (a *Authority) Covers(ctx context.Context, subject, target string) (bool, error) {
	res, err := a.client.Covers(ctx, connect.NewRequest(&authzv1.CoversRequest{Subject: subject, Target: target}))
	if err != nil {
		return false, fmt.Errorf("authzsvc Covers: %w", err)
	}
	return res.Msg.GetCovers(), nil
}
