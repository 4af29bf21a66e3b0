package rpc_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"portcullis.dev/kernel/authn"
	"portcullis.dev/kernel/authn/authntest"
	"portcullis.dev/kernel/rpc"
	identityv1 "portcullis.dev/proto/identity/v1"
	"portcullis.dev/proto/identity/v1/identityv1connect"
)

// identityStub serves a few Identity procedures, one of each access level,
// answering with who called: enough to see what the access policy lets in.
type identityStub struct {
	identityv1connect.UnimplementedIdentityServiceHandler
	name  string        // which instance answered
	delay time.Duration // how long GetMe takes
	calls atomic.Int64
}

func caller(ctx context.Context) string {
	p, ok := authn.FromContext(ctx)
	if !ok {
		return "anonymous"
	}
	return p.Kind.String() + ":" + p.Subject
}

// CreateUser is PUBLIC. The email "panic@example.com" makes it panic.
func (s *identityStub) CreateUser(ctx context.Context, req *connect.Request[identityv1.CreateUserRequest]) (*connect.Response[identityv1.CreateUserResponse], error) {
	s.calls.Add(1)
	switch req.Msg.GetEmail() {
	case "panic@example.com":
		panic("secret internals")
	case "internal@example.com":
		return nil, rpc.Internal(errors.New("pq: connection to 10.0.0.5 refused"))
	case "slow@example.com":
		time.Sleep(time.Second) // deliberately deaf to ctx: a drain must wait for it
	}
	return connect.NewResponse(&identityv1.CreateUserResponse{User: &identityv1.User{Id: caller(ctx), DisplayName: s.name}}), nil
}

// GetMe is AUTHENTICATED without a permission.
func (s *identityStub) GetMe(ctx context.Context, _ *connect.Request[identityv1.GetMeRequest]) (*connect.Response[identityv1.GetMeResponse], error) {
	s.calls.Add(1)
	if s.delay > 0 {
		select {
		case <-time.After(s.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return connect.NewResponse(&identityv1.GetMeResponse{User: &identityv1.User{Id: caller(ctx), DisplayName: s.name}}), nil
}

// GetUser is AUTHENTICATED with identity.users.read, self-service on user_id.
func (s *identityStub) GetUser(ctx context.Context, req *connect.Request[identityv1.GetUserRequest]) (*connect.Response[identityv1.GetUserResponse], error) {
	s.calls.Add(1)
	return connect.NewResponse(&identityv1.GetUserResponse{User: &identityv1.User{Id: caller(ctx)}}), nil
}

// VerifyCredentials is INTERNAL.
func (s *identityStub) VerifyCredentials(ctx context.Context, _ *connect.Request[identityv1.VerifyCredentialsRequest]) (*connect.Response[identityv1.VerifyCredentialsResponse], error) {
	s.calls.Add(1)
	return connect.NewResponse(&identityv1.VerifyCredentialsResponse{UserId: caller(ctx)}), nil
}

// grants is an Authorizer answering from a fixed table of user → permissions;
// the Authz service answers the same question for real.
type grants struct {
	mu    sync.Mutex
	table map[string][]string
	calls int
}

func (g *grants) Check(_ context.Context, subject, permission string) (bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls++
	for _, p := range g.table[subject] {
		if p == permission {
			return true, nil
		}
	}
	return false, nil
}

// access is what a test needs to mint tokens and build a policy.
type access struct {
	issuer   *authntest.Server
	users    *authn.Verifier
	services *authn.ServiceVerifier
	tokens   *authn.ServiceTokenSource
	grants   *grants
}

func newAccess(t *testing.T) *access {
	t.Helper()
	issuer := authntest.NewServer(t)
	svcCfg := authntest.ServiceConfig()
	services, err := authn.NewServiceVerifier("identitysvc", svcCfg)
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := authn.NewServiceTokenSource("authsvc", svcCfg)
	if err != nil {
		t.Fatal(err)
	}
	return &access{
		issuer:   issuer,
		users:    issuer.NewVerifier(),
		services: services,
		tokens:   tokens,
		grants:   &grants{table: map[string][]string{"admin": {"identity.users.read"}}},
	}
}

func (a *access) policy() *rpc.AccessPolicy {
	return &rpc.AccessPolicy{Users: a.users, Services: a.services, Authorizer: a.grants}
}

// bearer returns a request option setting Authorization for token.
func withHeader(key, value string) func(http.Header) {
	return func(h http.Header) {
		if value != "" {
			h.Set(key, value)
		}
	}
}
