package handler_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	"portcullis.dev/authsvc/internal/auth"
	"portcullis.dev/authsvc/internal/authtest"
	"portcullis.dev/authsvc/internal/handler"
	"portcullis.dev/kernel/authn"
	"portcullis.dev/kernel/authn/authntest"
	"portcullis.dev/kernel/rpc"
	authv1 "portcullis.dev/proto/auth/v1"
	"portcullis.dev/proto/auth/v1/authv1connect"
)

// TestEndUserSessions calls the internal EndUserSessions over the wire,
// behind the kernel's access policy, as the Identity service does.
func TestEndUserSessions(t *testing.T) {
	t.Parallel()
	e := authtest.New(t, authtest.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	base := "http://" + ln.Addr().String()
	users, err := authn.NewVerifier(authn.Config{JWKSURL: base + handler.JWKSPath, Issuer: "portcullis", Audience: "portcullis"},
		authn.WithClock(e.Clock.Now))
	require.NoError(t, err)
	svcCfg := authntest.ServiceConfig()
	services, err := authn.NewServiceVerifier("authsvc", svcCfg)
	require.NoError(t, err)
	srv := rpc.NewServer("authsvc", "test", rpc.Config{DeregisterDelay: time.Millisecond},
		rpc.WithAccessPolicy(&rpc.AccessPolicy{Users: users, Services: services}))
	srv.Handle(authv1connect.NewAuthServiceHandler(handler.New(e.Service, nil), srv.HandlerOptions()...))
	srv.HandleHTTP(handler.JWKSPath, handler.NewJWKSHandler(e.Keyring, nil))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	client := authv1connect.NewAuthServiceClient(http.DefaultClient, base)

	identity, err := authn.NewServiceTokenSource("identitysvc", svcCfg)
	require.NoError(t, err)
	serviceToken, err := identity.Token("authsvc")
	require.NoError(t, err)
	otherAudience, err := identity.Token("authzsvc")
	require.NoError(t, err)
	asService := func(token string) func(http.Header) {
		return func(h http.Header) { h.Set(rpc.ServiceTokenHeader, token) }
	}
	var pairs []*auth.TokenPair
	for range 3 {
		p, err := e.Service.Login(t.Context(), loginInput())
		require.NoError(t, err)
		pairs = append(pairs, p)
	}
	asUser := func(h http.Header) { h.Set("Authorization", "Bearer "+pairs[0].AccessToken) }

	refused := []struct {
		name   string
		header func(http.Header)
		msg    *authv1.EndUserSessionsRequest
		want   connect.Code
	}{
		{"no token", func(http.Header) {}, &authv1.EndUserSessionsRequest{UserId: authtest.ActiveID, Reason: "user_disabled"}, connect.CodeUnauthenticated},
		{"a user's access token", asUser, &authv1.EndUserSessionsRequest{UserId: authtest.ActiveID, Reason: "user_disabled"}, connect.CodeUnauthenticated},
		{"an access token as service token", asService(pairs[0].AccessToken), &authv1.EndUserSessionsRequest{UserId: authtest.ActiveID, Reason: "user_disabled"}, connect.CodeUnauthenticated},
		{"a service token for another service", asService(otherAudience), &authv1.EndUserSessionsRequest{UserId: authtest.ActiveID, Reason: "user_disabled"}, connect.CodeUnauthenticated},
		{"user_id not a UUID", asService(serviceToken), &authv1.EndUserSessionsRequest{UserId: "alice", Reason: "user_disabled"}, connect.CodeInvalidArgument},
		{"no user_id", asService(serviceToken), &authv1.EndUserSessionsRequest{Reason: "user_disabled"}, connect.CodeInvalidArgument},
		{"no reason", asService(serviceToken), &authv1.EndUserSessionsRequest{UserId: authtest.ActiveID}, connect.CodeInvalidArgument},
		{"free-text reason", asService(serviceToken), &authv1.EndUserSessionsRequest{UserId: authtest.ActiveID, Reason: "Because I said so"}, connect.CodeInvalidArgument},
		{"except_session_id with NUL", asService(serviceToken), &authv1.EndUserSessionsRequest{UserId: authtest.ActiveID, Reason: "user_disabled", ExceptSessionId: "\x00"}, connect.CodeInvalidArgument},
		{"change_age out of range", asService(serviceToken), &authv1.EndUserSessionsRequest{UserId: authtest.ActiveID, Reason: "user_disabled",
			ChangeAge: &durationpb.Duration{Seconds: 1 << 40}}, connect.CodeInvalidArgument},
		{"change_age negative", asService(serviceToken), &authv1.EndUserSessionsRequest{UserId: authtest.ActiveID, Reason: "user_disabled",
			ChangeAge: durationpb.New(-time.Minute)}, connect.CodeInvalidArgument},
	}
	for _, tt := range refused {
		req := connect.NewRequest(tt.msg)
		tt.header(req.Header())
		_, err := client.EndUserSessions(t.Context(), req)
		assert.Equal(t, tt.want, connect.CodeOf(err), "%s: %v", tt.name, err)
	}
	sessions, _, err := e.Service.ListSessions(t.Context(), authtest.ActiveID, 0, "")
	require.NoError(t, err)
	require.Len(t, sessions, len(pairs), "a refused call ended sessions")

	end := func(except string) (int32, error) {
		req := connect.NewRequest(&authv1.EndUserSessionsRequest{UserId: authtest.ActiveID, Reason: "password_changed", ExceptSessionId: except})
		asService(serviceToken)(req.Header())
		res, err := client.EndUserSessions(t.Context(), req)
		if err != nil {
			return 0, err
		}
		return res.Msg.GetEnded(), nil
	}
	refresh := func(token string) (*authv1.RefreshResponse, error) {
		res, err := client.Refresh(t.Context(), connect.NewRequest(&authv1.RefreshRequest{RefreshToken: token}))
		if err != nil {
			return nil, err
		}
		return res.Msg, nil
	}

	// The exception stays; the others can no longer refresh.
	n, err := end(pairs[2].SessionID)
	require.NoError(t, err)
	assert.Equal(t, int32(2), n)
	for _, p := range pairs[:2] {
		_, err := refresh(p.RefreshToken)
		assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err))
	}
	kept, err := refresh(pairs[2].RefreshToken)
	require.NoError(t, err, "the excepted session was ended")
	n, err = end(pairs[2].SessionID)
	require.NoError(t, err, "a repeated call fails")
	assert.Equal(t, int32(0), n)

	// Without an exception every session ends.
	n, err = end("")
	require.NoError(t, err)
	assert.Equal(t, int32(1), n)
	_, err = refresh(kept.GetRefreshToken())
	assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err))

	var reasons []string
	rows, err := e.DB.DB.QueryContext(t.Context(), "SELECT revoke_reason FROM sessions ORDER BY revoked_at, id")
	require.NoError(t, err)
	for rows.Next() {
		var r string
		require.NoError(t, rows.Scan(&r))
		reasons = append(reasons, r)
	}
	require.NoError(t, rows.Err())
	require.NoError(t, rows.Close())
	assert.Equal(t, []string{"password_changed", "password_changed", "password_changed"}, reasons)
	_, events := e.Events(t)
	var ended []map[string]string
	for _, ev := range events {
		if ev.GetAction() == "auth.sessions.revoked_all" {
			assert.Equal(t, "user:"+authtest.ActiveID, ev.GetTarget())
			assert.Equal(t, "identitysvc", ev.GetActor().GetId(), "the calling service is the actor")
			ended = append(ended, ev.GetMetadata())
		}
	}
	assert.Equal(t, []map[string]string{
		{"count": "2", "kept_current": "true", "reason": "password_changed"},
		{"count": "0", "kept_current": "true", "reason": "password_changed"},
		{"count": "1", "kept_current": "false", "reason": "password_changed"},
	}, ended)
}
