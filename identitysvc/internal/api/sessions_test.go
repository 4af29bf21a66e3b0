package api_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"portcullis.dev/identitysvc/internal/authclient"
	"portcullis.dev/identitysvc/internal/identity"
	"portcullis.dev/kernel/authn"
	"portcullis.dev/kernel/authn/authntest"
	"portcullis.dev/kernel/kerneltest"
	"portcullis.dev/kernel/registry"
	"portcullis.dev/kernel/rpc"
	authv1 "portcullis.dev/proto/auth/v1"
	"portcullis.dev/proto/auth/v1/authv1connect"
	identityv1 "portcullis.dev/proto/identity/v1"
)

// endCall is one EndUserSessions call the Auth stand-in received, and the
// service that made it.
type endCall struct {
	caller string
	msg    *authv1.EndUserSessionsRequest
}

// authStandIn is the Auth service as Identity uses it: EndUserSessions
// records its calls; everything else is unimplemented.
type authStandIn struct {
	authv1connect.UnimplementedAuthServiceHandler
	calls chan endCall
}

func (a *authStandIn) EndUserSessions(ctx context.Context, req *connect.Request[authv1.EndUserSessionsRequest]) (*connect.Response[authv1.EndUserSessionsResponse], error) {
	p, _ := authn.FromContext(ctx)
	a.calls <- endCall{caller: p.Subject, msg: req.Msg}
	return connect.NewResponse(&authv1.EndUserSessionsResponse{}), nil
}

// TestChangesEndSessionsInAuth runs Identity as it is deployed towards the
// Auth service: a stand-in registered in a real Consul behind the kernel's
// access policy, reached through the kernel's client factory with a service
// token. Disabling, deleting, and resetting or changing a password end the
// user's sessions there; an unreachable Auth service fails none of them.
func TestChangesEndSessionsInAuth(t *testing.T) {
	t.Parallel()
	consul := kerneltest.StartConsul(t)
	regCfg := registry.Config{Addr: consul.Addr(), CheckInterval: time.Second}
	svcCfg := authntest.ServiceConfig()

	authReg, err := registry.New(regCfg)
	require.NoError(t, err)
	services, err := authn.NewServiceVerifier("authsvc", svcCfg)
	require.NoError(t, err)
	auth := &authStandIn{calls: make(chan endCall, 16)}
	authSrv := rpc.NewServer("authsvc", "test", rpc.Config{DeregisterDelay: time.Millisecond},
		rpc.WithRegistry(authReg), rpc.WithAccessPolicy(&rpc.AccessPolicy{Services: services}))
	authSrv.Handle(authv1connect.NewAuthServiceHandler(auth, authSrv.HandlerOptions()...))
	authCtx, cancelAuth := context.WithCancel(context.Background())
	authDone := make(chan error, 1)
	go func() { authDone <- authSrv.Run(authCtx) }()
	stopAuth := sync.OnceValue(func() error { cancelAuth(); return <-authDone })
	t.Cleanup(func() { _ = stopAuth() })

	// Identity's client of Auth, built as service.New builds it.
	reg, err := registry.New(regCfg)
	require.NoError(t, err)
	tokens, err := authn.NewServiceTokenSource("identitysvc", svcCfg)
	require.NoError(t, err)
	clients := rpc.NewClientFactory(reg, rpc.WithServiceTokens(tokens))
	t.Cleanup(clients.Close)
	authClient := rpc.NewClient(clients, "authsvc", authv1connect.NewAuthServiceClient)
	var logs kerneltest.Buffer
	s := startServer(t, identity.WithSessionEnder(authclient.NewSessions(authClient)),
		identity.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))))
	ctx := t.Context()

	// Auth answers once Consul has seen it healthy; Unimplemented means the
	// call reached it.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		_, err := authClient.GetJWKS(ctx, connect.NewRequest(&authv1.GetJWKSRequest{}))
		assert.Equal(c, connect.CodeUnimplemented, connect.CodeOf(err))
	}, 20*time.Second, 100*time.Millisecond, "authsvc never became reachable through Consul")

	create := func(email string) *identityv1.User {
		res, err := s.client.CreateUser(ctx, call("", &identityv1.CreateUserRequest{Email: email, Password: "correct horse battery"}))
		require.NoError(t, err)
		return res.Msg.GetUser()
	}
	ann, bo := create("ann@example.com"), create("bo@example.com")
	annToken := s.issuer.Issue(authntest.WithSubject(ann.GetId()), authntest.WithSessionID("ann-session-1"))
	adminID, _ := s.newAdmin(t, "admin-1@admins.test")
	adminToken := s.issuer.Issue(authntest.WithSubject(adminID), authntest.WithSessionID("admin-session-1"))

	tests := []struct {
		name   string
		change func(t *testing.T) error
		want   *authv1.EndUserSessionsRequest
	}{
		{
			name: "ChangePassword keeps the caller's session",
			change: func(t *testing.T) error {
				_, err := s.client.ChangePassword(ctx, call(annToken, &identityv1.ChangePasswordRequest{CurrentPassword: "correct horse battery", NewPassword: "a new good password"}))
				return err
			},
			want: &authv1.EndUserSessionsRequest{UserId: ann.GetId(), Reason: "password_changed", ExceptSessionId: "ann-session-1"},
		},
		{
			name: "ResetPassword ends every session",
			change: func(t *testing.T) error {
				_, err := s.client.RequestPasswordReset(ctx, call("", &identityv1.RequestPasswordResetRequest{Email: "ann@example.com"}))
				require.NoError(t, err)
				_, err = s.client.ResetPassword(ctx, call("", &identityv1.ResetPasswordRequest{Token: s.token(t, "ann@example.com", "Reset"), NewPassword: "a newer good password"}))
				return err
			},
			want: &authv1.EndUserSessionsRequest{UserId: ann.GetId(), Reason: "password_reset"},
		},
		{
			name: "DisableUser ends every session, not the administrator's",
			change: func(t *testing.T) error {
				_, err := s.client.DisableUser(ctx, call(adminToken, &identityv1.DisableUserRequest{UserId: bo.GetId(), Reason: "left"}))
				return err
			},
			want: &authv1.EndUserSessionsRequest{UserId: bo.GetId(), Reason: "user_disabled"},
		},
		{
			name: "DeleteUser ends every session",
			change: func(t *testing.T) error {
				_, err := s.client.DeleteUser(ctx, call(adminToken, &identityv1.DeleteUserRequest{UserId: bo.GetId()}))
				return err
			},
			want: &authv1.EndUserSessionsRequest{UserId: bo.GetId(), Reason: "user_deleted"},
		},
	}
	for _, tt := range tests {
		require.NoError(t, tt.change(t), tt.name)
		select {
		case got := <-auth.calls:
			assert.Equal(t, "identitysvc", got.caller, "%s: not called with Identity's service token", tt.name)
			assert.Less(t, got.msg.GetChangeAge().AsDuration(), 5*time.Second, "%s: the change's age", tt.name)
			msg := proto.CloneOf(got.msg)
			msg.ChangeAge = nil
			assert.True(t, proto.Equal(tt.want, msg), "%s: got %v, want %v", tt.name, msg, tt.want)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: Auth was never called", tt.name)
		}
	}
	require.NoError(t, s.svc.Drain(ctx))
	assert.Empty(t, auth.calls, "more calls than changes")
	assert.NotContains(t, logs.String(), `"level":"ERROR"`)

	// With Auth gone the change still stands; the failure is logged and
	// counted instead.
	require.NoError(t, stopAuth())
	_, err = s.client.DisableUser(ctx, call(adminToken, &identityv1.DisableUserRequest{UserId: ann.GetId()}))
	require.NoError(t, err, "DisableUser failed because Auth is unreachable")
	got, err := s.client.GetUser(ctx, call(adminToken, &identityv1.GetUserRequest{UserId: ann.GetId()}))
	require.NoError(t, err)
	assert.Equal(t, identityv1.UserStatus_USER_STATUS_DISABLED, got.Msg.GetUser().GetStatus())
	require.NoError(t, s.svc.Drain(ctx))
	assert.Equal(t, 1.0, testutil.ToFloat64(s.svc.Collectors()[0]), "portcullis_identity_session_end_failures_total")
	var line string
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, `"level":"ERROR"`) {
			line = l
		}
	}
	assert.Contains(t, line, `"user_id":"`+ann.GetId()+`"`)
	assert.Contains(t, line, `"reason":"user_disabled"`)
}
