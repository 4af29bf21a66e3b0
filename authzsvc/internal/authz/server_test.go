package authz_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/require"

	"portcullis.dev/authzsvc/internal/authz"
	"portcullis.dev/kernel/authn"
	"portcullis.dev/kernel/authn/authntest"
	"portcullis.dev/kernel/registry"
	"portcullis.dev/kernel/rpc"
	"portcullis.dev/proto/authz/v1/authzv1connect"
)

// testServer is the Authz handler behind a real rpc.Server enforcing the
// contract's access rules, as main wires it.
type testServer struct {
	url    string
	jwks   *authntest.Server
	scfg   authn.ServiceConfig
	tokens *authn.ServiceTokenSource
}

func startServer(tb testing.TB, r *replica, reg *registry.Registry) *testServer {
	tb.Helper()
	scfg := authntest.ServiceConfig()
	services, err := authn.NewServiceVerifier("authzsvc", scfg)
	require.NoError(tb, err)
	tokens, err := authn.NewServiceTokenSource("identitysvc", scfg)
	require.NoError(tb, err)
	jwks := authntest.NewServer(tb)
	opts := []rpc.Option{rpc.WithAccessPolicy(&rpc.AccessPolicy{
		Users:      jwks.NewVerifier(),
		Services:   services,
		Authorizer: authz.LocalAuthorizer{S: r.Service},
	})}
	if reg != nil {
		opts = append(opts, rpc.WithRegistry(reg))
	}
	srv := rpc.NewServer("authzsvc", "test", rpc.Config{DeregisterDelay: time.Millisecond}, opts...)
	srv.Handle(authzv1connect.NewAuthzServiceHandler(authz.NewHandler(r.Service), srv.HandlerOptions()...))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		<-done
	})
	addr, err := srv.Addr(ctx)
	require.NoError(tb, err)
	return &testServer{url: "http://" + addr.String(), jwks: jwks, tokens: tokens, scfg: scfg}
}

// h2c speaks HTTP/2 with prior knowledge, like the services do.
func h2c() *http.Client {
	t := &http.Transport{Protocols: new(http.Protocols)}
	t.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: t}
}

// headerInterceptor sets one header on every call.
type headerInterceptor struct{ name, value func() string }

func (h headerInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set(h.name(), h.value())
		return next(ctx, req)
	}
}
func (h headerInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}
func (h headerInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// asUser is a client sending an access token for user.
func (s *testServer) asUser(user string) authzv1connect.AuthzServiceClient {
	token := s.jwks.Issue(authntest.WithSubject(user))
	return authzv1connect.NewAuthzServiceClient(h2c(), s.url, connect.WithInterceptors(headerInterceptor{
		name: func() string { return "Authorization" }, value: func() string { return "Bearer " + token }}))
}

// asService is a client sending a service token, as another service would.
func (s *testServer) asService(tb testing.TB) authzv1connect.AuthzServiceClient {
	return authzv1connect.NewAuthzServiceClient(h2c(), s.url, connect.WithInterceptors(headerInterceptor{
		name: func() string { return rpc.ServiceTokenHeader },
		value: func() string {
			t, err := s.tokens.Token("authzsvc")
			require.NoError(tb, err)
			return t
		}}))
}
