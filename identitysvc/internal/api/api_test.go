package api_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"entgo.io/ent/dialect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"portcullis.dev/identitysvc/ent"
	"portcullis.dev/identitysvc/internal/api"
	"portcullis.dev/identitysvc/internal/identity"
	"portcullis.dev/kernel/authn"
	"portcullis.dev/kernel/authn/authntest"
	"portcullis.dev/kernel/config"
	"portcullis.dev/kernel/database"
	"portcullis.dev/kernel/kerneltest"
	"portcullis.dev/kernel/rpc"
	identityv1 "portcullis.dev/proto/identity/v1"
	"portcullis.dev/proto/identity/v1/identityv1connect"
)

// admins is the Authz service's answer in these tests: the users in it
// hold every identity permission.
type admins map[string]bool

func (a admins) Check(_ context.Context, subject, _ string) (bool, error) { return a[subject], nil }

type server struct {
	db      *database.Client[*ent.Client]
	svc     *identity.Service
	mail    string // the DirMailer's folder
	client  identityv1connect.IdentityServiceClient
	issuer  *authntest.Server
	service *authn.ServiceTokenSource
	admins  admins
}

// startServer starts the Identity service, its domain built with opts, on
// a loopback port of its own.
func startServer(t *testing.T, opts ...identity.Option) *server {
	t.Helper()
	dsn, _ := kerneltest.Postgres(t)
	db, err := database.NewEntClient(t.Context(), database.Config{DSN: config.DSN(dsn), Schema: kerneltest.SchemaName(t)},
		ent.Migrations(), func(d dialect.Driver) *ent.Client { return ent.NewClient(ent.Driver(d)) })
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close(context.Background()) })
	mailDir := t.TempDir()
	svc, err := identity.NewService(db.Ent, identity.Config{
		Argon2:       identity.Argon2Params{MemoryKiB: 1024, Iterations: 1, Parallelism: 1},
		Lockout:      identity.LockoutConfig{Threshold: 3, Window: time.Minute, Duration: time.Hour},
		MailCooldown: time.Second,
		PublicURL:    "https://id.example.com/verify",
	}, &identity.DirMailer{Dir: mailDir, From: "test@example.com"}, opts...)
	require.NoError(t, err)

	issuer := authntest.NewServer(t)
	svcCfg := authntest.ServiceConfig()
	services, err := authn.NewServiceVerifier("identitysvc", svcCfg)
	require.NoError(t, err)
	tokens, err := authn.NewServiceTokenSource("authsvc", svcCfg)
	require.NoError(t, err)
	s := &server{db: db, svc: svc, mail: mailDir, issuer: issuer, service: tokens, admins: admins{}}

	srv := rpc.NewServer("identitysvc", "test", rpc.Config{DeregisterDelay: time.Millisecond},
		rpc.WithAccessPolicy(&rpc.AccessPolicy{Users: issuer.NewVerifier(), Services: services, Authorizer: s.admins}))
	srv.Handle(api.NewServiceHandler(svc, srv.HandlerOptions()...))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	s.client = identityv1connect.NewIdentityServiceClient(http.DefaultClient, "http://"+ln.Addr().String())
	return s
}

// newAdmin creates a user who holds every identity permission and returns
// their ID and an access token: Identity refuses the calls of users it does
// not know.
func (s *server) newAdmin(t *testing.T, email string) (id, token string) {
	t.Helper()
	u, err := s.svc.CreateUser(t.Context(), email, "correct horse battery", "")
	require.NoError(t, err)
	id = u.ID.String()
	s.admins[id] = true
	return id, s.issuer.Issue(authntest.WithSubject(id))
}

// token returns the token of the newest mail to addr whose subject
// contains subject.
func (s *server) token(t *testing.T, addr, subject string) string {
	t.Helper()
	require.NoError(t, s.svc.Drain(t.Context()))
	entries, err := os.ReadDir(s.mail)
	require.NoError(t, err)
	token := ""
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(s.mail, e.Name()))
		require.NoError(t, err)
		if strings.Contains(string(b), "To: "+addr+"\r\n") && strings.Contains(string(b), "Subject: "+subject) {
			if m := regexp.MustCompile(`token=([A-Za-z0-9_-]+)`).FindStringSubmatch(string(b)); m != nil {
				token = m[1]
			}
		}
	}
	require.NotEmpty(t, token, "no %q mail to %s", subject, addr)
	return token
}

// verify calls VerifyCredentials as the Auth service does.
func (s *server) verify(t *testing.T, email, password string) (*connect.Response[identityv1.VerifyCredentialsResponse], error) {
	t.Helper()
	serviceToken, err := s.service.Token("identitysvc")
	require.NoError(t, err)
	req := call("", &identityv1.VerifyCredentialsRequest{Email: email, Password: password})
	req.Header().Set(rpc.ServiceTokenHeader, serviceToken)
	return s.client.VerifyCredentials(t.Context(), req)
}

func call[T any](token string, msg *T) *connect.Request[T] {
	req := connect.NewRequest(msg)
	if token != "" {
		req.Header().Set("Authorization", "Bearer "+token)
	}
	return req
}

func TestAPI(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	ctx := t.Context()

	created, err := s.client.CreateUser(ctx, call("", &identityv1.CreateUserRequest{Email: "Ann@Example.com", Password: "correct horse battery", DisplayName: "Ann"}))
	require.NoError(t, err)
	ann := created.Msg.GetUser()
	assert.Equal(t, "ann@example.com", ann.GetEmail())
	assert.Equal(t, identityv1.UserStatus_USER_STATUS_ACTIVE, ann.GetStatus())
	assert.Nil(t, ann.GetEmailVerifiedTime())
	other, err := s.client.CreateUser(ctx, call("", &identityv1.CreateUserRequest{Email: "bo@example.com", Password: "correct horse battery"}))
	require.NoError(t, err)
	bo := other.Msg.GetUser()
	annToken := s.issuer.Issue(authntest.WithSubject(ann.GetId()))
	boToken := s.issuer.Issue(authntest.WithSubject(bo.GetId()))
	_, adminToken := s.newAdmin(t, "admin-1@admins.test")
	huge := strings.Repeat("x", 1<<20)
	withNUL := "a\x00b"
	newEmail := "ANN@example.com"
	unknown := "6f1c1a56-0000-4000-8000-000000000000"
	// refused is VerifyCredentials' answer to an unknown email, which every
	// other refused login (wrong password, locked, disabled) must equal.
	_, refused := s.verify(t, "nobody@example.com", "wrong password!")
	require.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(refused))

	t.Run("refusals map to the right codes", func(t *testing.T) {
		tests := []struct {
			name string
			err  error
			want connect.Code
		}{
			{"duplicate email in other case", second(s.client.CreateUser(ctx, call("", &identityv1.CreateUserRequest{Email: "ANN@example.com", Password: "correct horse battery"}))), connect.CodeAlreadyExists},
			{"short password", second(s.client.CreateUser(ctx, call("", &identityv1.CreateUserRequest{Email: "c@example.com", Password: "short"}))), connect.CodeInvalidArgument},
			{"password over 1024 bytes", second(s.client.CreateUser(ctx, call("", &identityv1.CreateUserRequest{Email: "c@example.com", Password: strings.Repeat("x", 1025)}))), connect.CodeInvalidArgument},
			{"malformed email", second(s.client.CreateUser(ctx, call("", &identityv1.CreateUserRequest{Email: "c@", Password: "correct horse battery"}))), connect.CodeInvalidArgument},
			// Each would make an account that looks like ann's.
			{"email with a zero-width space", second(s.client.CreateUser(ctx, call("", &identityv1.CreateUserRequest{Email: "ann@example.com\u200b", Password: "correct horse battery"}))), connect.CodeInvalidArgument},
			{"email with a direction mark", second(s.client.CreateUser(ctx, call("", &identityv1.CreateUserRequest{Email: "ann\u200e@example.com", Password: "correct horse battery"}))), connect.CodeInvalidArgument},
			{"email with a combining grapheme joiner", second(s.client.CreateUser(ctx, call("", &identityv1.CreateUserRequest{Email: "a\u034fnn@example.com", Password: "correct horse battery"}))), connect.CodeInvalidArgument},
			{"email with a Hangul filler", second(s.client.CreateUser(ctx, call("", &identityv1.CreateUserRequest{Email: "ann\u3164@example.com", Password: "correct horse battery"}))), connect.CodeInvalidArgument},
			{"email with a variation selector", second(s.client.CreateUser(ctx, call("", &identityv1.CreateUserRequest{Email: "ann\ufe0f@example.com", Password: "correct horse battery"}))), connect.CodeInvalidArgument},
			{"email with a blank braille pattern", second(s.client.CreateUser(ctx, call("", &identityv1.CreateUserRequest{Email: "ann\u2800@example.com", Password: "correct horse battery"}))), connect.CodeInvalidArgument},
			{"email with a no-break space", second(s.client.CreateUser(ctx, call("", &identityv1.CreateUserRequest{Email: "ann\u00a0@example.com", Password: "correct horse battery"}))), connect.CodeInvalidArgument},
			{"1 MiB display name", second(s.client.CreateUser(ctx, call("", &identityv1.CreateUserRequest{Email: "c@example.com", Password: "correct horse battery", DisplayName: huge}))), connect.CodeInvalidArgument},
			{"display name with NUL", second(s.client.CreateUser(ctx, call("", &identityv1.CreateUserRequest{Email: "c@example.com", Password: "correct horse battery", DisplayName: "a\x00b"}))), connect.CodeInvalidArgument},
			{"GetMe without token", second(s.client.GetMe(ctx, call("", &identityv1.GetMeRequest{}))), connect.CodeUnauthenticated},
			{"GetMe with a forged token", second(s.client.GetMe(ctx, call("not.a.jwt", &identityv1.GetMeRequest{}))), connect.CodeUnauthenticated},
			{"someone else's user without permission", second(s.client.GetUser(ctx, call(annToken, &identityv1.GetUserRequest{UserId: bo.GetId()}))), connect.CodePermissionDenied},
			{"user id not a UUID", second(s.client.GetUser(ctx, call(adminToken, &identityv1.GetUserRequest{UserId: "nope"}))), connect.CodeInvalidArgument},
			// One spelling of an ID everywhere: the access policy compares
			// the text with the token's sub.
			{"user id in upper case", second(s.client.GetUser(ctx, call(adminToken, &identityv1.GetUserRequest{UserId: strings.ToUpper(ann.GetId())}))), connect.CodeInvalidArgument},
			{"user id as a URN", second(s.client.DisableUser(ctx, call(adminToken, &identityv1.DisableUserRequest{UserId: "urn:uuid:" + ann.GetId()}))), connect.CodeInvalidArgument},
			{"user id in braces", second(s.client.DeleteUser(ctx, call(adminToken, &identityv1.DeleteUserRequest{UserId: "{" + ann.GetId() + "}"}))), connect.CodeInvalidArgument},
			{"unknown user", second(s.client.GetUser(ctx, call(adminToken, &identityv1.GetUserRequest{UserId: unknown}))), connect.CodeNotFound},
			{"update someone else without permission", second(s.client.UpdateUser(ctx, call(annToken, &identityv1.UpdateUserRequest{UserId: bo.GetId(), DisplayName: &huge}))), connect.CodePermissionDenied},
			{"update to 1 MiB display name", second(s.client.UpdateUser(ctx, call(annToken, &identityv1.UpdateUserRequest{DisplayName: &huge}))), connect.CodeInvalidArgument},
			{"update to a display name with NUL", second(s.client.UpdateUser(ctx, call(annToken, &identityv1.UpdateUserRequest{DisplayName: &withNUL}))), connect.CodeInvalidArgument},
			{"update to a taken email", second(s.client.UpdateUser(ctx, call(boToken, &identityv1.UpdateUserRequest{Email: &newEmail, CurrentPassword: "correct horse battery"}))), connect.CodeAlreadyExists},
			{"update an unknown user", second(s.client.UpdateUser(ctx, call(adminToken, &identityv1.UpdateUserRequest{UserId: unknown, DisplayName: &newEmail}))), connect.CodeNotFound},
			{"self-deletion", second(s.client.DeleteUser(ctx, call(annToken, &identityv1.DeleteUserRequest{UserId: ann.GetId()}))), connect.CodePermissionDenied},
			{"delete without an id", second(s.client.DeleteUser(ctx, call(adminToken, &identityv1.DeleteUserRequest{}))), connect.CodeInvalidArgument},
			{"delete an unknown user", second(s.client.DeleteUser(ctx, call(adminToken, &identityv1.DeleteUserRequest{UserId: unknown}))), connect.CodeNotFound},
			{"VerifyCredentials without service token", second(s.client.VerifyCredentials(ctx, call("", &identityv1.VerifyCredentialsRequest{Email: "ann@example.com", Password: "correct horse battery"}))), connect.CodeUnauthenticated},
			{"VerifyCredentials with a user's token (internal procedure)", second(s.client.VerifyCredentials(ctx, call(adminToken, &identityv1.VerifyCredentialsRequest{Email: "ann@example.com", Password: "correct horse battery"}))), connect.CodeUnauthenticated},
			{"ChangePassword without token", second(s.client.ChangePassword(ctx, call("", &identityv1.ChangePasswordRequest{CurrentPassword: "correct horse battery", NewPassword: "another good one"}))), connect.CodeUnauthenticated},
			{"wrong current password", second(s.client.ChangePassword(ctx, call(boToken, &identityv1.ChangePasswordRequest{CurrentPassword: "wrong one!", NewPassword: "another good one"}))), connect.CodePermissionDenied},
			{"weak new password", second(s.client.ChangePassword(ctx, call(boToken, &identityv1.ChangePasswordRequest{CurrentPassword: "correct horse battery", NewPassword: "short"}))), connect.CodeInvalidArgument},
			{"verification again too soon", second(s.client.RequestEmailVerification(ctx, call(boToken, &identityv1.RequestEmailVerificationRequest{}))), connect.CodeResourceExhausted},
			{"verification without token", second(s.client.RequestEmailVerification(ctx, call("", &identityv1.RequestEmailVerificationRequest{}))), connect.CodeUnauthenticated},
			{"bad verification token", second(s.client.VerifyEmail(ctx, call("", &identityv1.VerifyEmailRequest{Token: "nope"}))), connect.CodeInvalidArgument},
			{"reset for a malformed email", second(s.client.RequestPasswordReset(ctx, call("", &identityv1.RequestPasswordResetRequest{Email: "nope"}))), connect.CodeInvalidArgument},
			{"bad reset token", second(s.client.ResetPassword(ctx, call("", &identityv1.ResetPasswordRequest{Token: "nope", NewPassword: "another good one"}))), connect.CodeInvalidArgument},
			{"ListUsers without permission", second(s.client.ListUsers(ctx, call(annToken, &identityv1.ListUsersRequest{}))), connect.CodePermissionDenied},
			{"ListUsers with a forged page token", second(s.client.ListUsers(ctx, call(adminToken, &identityv1.ListUsersRequest{PageToken: "forged"}))), connect.CodeInvalidArgument},
			{"DisableUser without permission", second(s.client.DisableUser(ctx, call(annToken, &identityv1.DisableUserRequest{UserId: ann.GetId()}))), connect.CodePermissionDenied},
			{"DisableUser with a 501-character reason", second(s.client.DisableUser(ctx, call(adminToken, &identityv1.DisableUserRequest{UserId: bo.GetId(), Reason: strings.Repeat("r", 501)}))), connect.CodeInvalidArgument},
			{"DisableUser with a reason with NUL", second(s.client.DisableUser(ctx, call(adminToken, &identityv1.DisableUserRequest{UserId: bo.GetId(), Reason: "a\x00b"}))), connect.CodeInvalidArgument},
			{"EnableUser without permission", second(s.client.EnableUser(ctx, call(boToken, &identityv1.EnableUserRequest{UserId: bo.GetId()}))), connect.CodePermissionDenied},
			{"EnableUser of an unknown user", second(s.client.EnableUser(ctx, call(adminToken, &identityv1.EnableUserRequest{UserId: unknown}))), connect.CodeNotFound},
		}
		for _, tt := range tests {
			require.Error(t, tt.err, tt.name)
			assert.Equal(t, tt.want, connect.CodeOf(tt.err), "%s: %v", tt.name, tt.err)
			assert.NotContains(t, tt.err.Error(), "sql", "%s leaks internals", tt.name)
		}
	})

	t.Run("changing one's own email takes the password", func(t *testing.T) {
		created, err := s.client.CreateUser(ctx, call("", &identityv1.CreateUserRequest{Email: "cy@example.com", Password: "correct horse battery"}))
		require.NoError(t, err)
		cy := created.Msg.GetUser()
		cyToken := s.issuer.Issue(authntest.WithSubject(cy.GetId()))
		moved, again, byAdmin := "cy.new@example.com", "cy.again@example.com", "cy.admin@example.com"
		for _, tt := range []struct {
			name string
			req  *identityv1.UpdateUserRequest
			want connect.Code
		}{
			{"without it", &identityv1.UpdateUserRequest{Email: &moved}, connect.CodeInvalidArgument},
			{"without it, naming oneself", &identityv1.UpdateUserRequest{UserId: cy.GetId(), Email: &moved}, connect.CodeInvalidArgument},
			{"with a wrong one", &identityv1.UpdateUserRequest{Email: &moved, CurrentPassword: "wrong password!"}, connect.CodePermissionDenied},
		} {
			_, err := s.client.UpdateUser(ctx, call(cyToken, tt.req))
			assert.Equal(t, tt.want, connect.CodeOf(err), "%s: %v", tt.name, err)
		}
		me, err := s.client.GetMe(ctx, call(cyToken, &identityv1.GetMeRequest{}))
		require.NoError(t, err)
		assert.Equal(t, "cy@example.com", me.Msg.GetUser().GetEmail(), "the email moved without the password")

		// The email it has already, or only the display name, needs none.
		same, name := "CY@example.com", "Cy"
		_, err = s.client.UpdateUser(ctx, call(cyToken, &identityv1.UpdateUserRequest{Email: &same, DisplayName: &name}))
		require.NoError(t, err)
		upd, err := s.client.UpdateUser(ctx, call(cyToken, &identityv1.UpdateUserRequest{Email: &moved, CurrentPassword: "correct horse battery"}))
		require.NoError(t, err)
		assert.Equal(t, moved, upd.Msg.GetUser().GetEmail())
		upd, err = s.client.UpdateUser(ctx, call(cyToken, &identityv1.UpdateUserRequest{UserId: cy.GetId(), Email: &again, CurrentPassword: "correct horse battery"}))
		require.NoError(t, err)
		assert.Equal(t, again, upd.Msg.GetUser().GetEmail())
		// An administrator (identity.users.write) does not know the user's
		// password and needs none.
		upd, err = s.client.UpdateUser(ctx, call(adminToken, &identityv1.UpdateUserRequest{UserId: cy.GetId(), Email: &byAdmin}))
		require.NoError(t, err)
		assert.Equal(t, byAdmin, upd.Msg.GetUser().GetEmail())
		_, err = s.client.DeleteUser(ctx, call(adminToken, &identityv1.DeleteUserRequest{UserId: cy.GetId()}))
		require.NoError(t, err) // the subtests after this one count the users
	})

	t.Run("self service", func(t *testing.T) {
		me, err := s.client.GetMe(ctx, call(annToken, &identityv1.GetMeRequest{}))
		require.NoError(t, err)
		assert.True(t, proto.Equal(ann, me.Msg.GetUser()), "GetMe differs from what CreateUser returned")
		// An empty user_id is the caller, never everyone.
		self, err := s.client.GetUser(ctx, call(annToken, &identityv1.GetUserRequest{}))
		require.NoError(t, err)
		assert.Equal(t, ann.GetId(), self.Msg.GetUser().GetId())
		self, err = s.client.GetUser(ctx, call(annToken, &identityv1.GetUserRequest{UserId: ann.GetId()}))
		require.NoError(t, err)
		assert.Equal(t, "Ann", self.Msg.GetUser().GetDisplayName())
		name := "Ann B."
		upd, err := s.client.UpdateUser(ctx, call(annToken, &identityv1.UpdateUserRequest{DisplayName: &name}))
		require.NoError(t, err)
		assert.Equal(t, "Ann B.", upd.Msg.GetUser().GetDisplayName())
		assert.Equal(t, "ann@example.com", upd.Msg.GetUser().GetEmail(), "an unset field changed")
		_, err = s.client.ChangePassword(ctx, call(annToken, &identityv1.ChangePasswordRequest{CurrentPassword: "correct horse battery", NewPassword: "a new good password"}))
		require.NoError(t, err)
	})

	t.Run("email verification", func(t *testing.T) {
		signup := s.token(t, "ann@example.com", "Verify")
		time.Sleep(1100 * time.Millisecond) // past the mail cooldown
		_, err := s.client.RequestEmailVerification(ctx, call(annToken, &identityv1.RequestEmailVerificationRequest{}))
		require.NoError(t, err)
		latest := s.token(t, "ann@example.com", "Verify")
		_, err = s.client.VerifyEmail(ctx, call("", &identityv1.VerifyEmailRequest{Token: signup}))
		assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err), "a replaced link still works")
		_, err = s.client.VerifyEmail(ctx, call("", &identityv1.VerifyEmailRequest{Token: latest}))
		require.NoError(t, err)
		_, err = s.client.VerifyEmail(ctx, call("", &identityv1.VerifyEmailRequest{Token: latest}))
		assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err), "a used link works again")
		me, err := s.client.GetMe(ctx, call(annToken, &identityv1.GetMeRequest{}))
		require.NoError(t, err)
		assert.NotNil(t, me.Msg.GetUser().GetEmailVerifiedTime())
		_, err = s.client.RequestEmailVerification(ctx, call(annToken, &identityv1.RequestEmailVerificationRequest{}))
		assert.Equal(t, connect.CodeFailedPrecondition, connect.CodeOf(err))
	})

	t.Run("credentials over the wire", func(t *testing.T) {
		resp, err := s.verify(t, "ANN@example.com", "a new good password")
		require.NoError(t, err)
		assert.Equal(t, ann.GetId(), resp.Msg.GetUserId())
		assert.Equal(t, identityv1.UserStatus_USER_STATUS_ACTIVE, resp.Msg.GetStatus())
		assert.True(t, resp.Msg.GetEmailVerified())

		_, wrong := s.verify(t, "ann@example.com", "wrong password!")
		assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(wrong))
		assert.Equal(t, refused.Error(), wrong.Error(), "an unknown email is told apart from a wrong password")
	})

	t.Run("password reset", func(t *testing.T) {
		_, err := s.client.CreateUser(ctx, call("", &identityv1.CreateUserRequest{Email: "cy@example.com", Password: "correct horse battery"}))
		require.NoError(t, err)
		// Lock cy out.
		for range 3 {
			_, err = s.verify(t, "cy@example.com", "wrong password!")
			assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err))
		}
		_, err = s.verify(t, "cy@example.com", "correct horse battery")
		assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err))
		assert.Equal(t, refused.Error(), err.Error(), "a locked account is told apart from an unknown email")

		// The same empty answer whether or not the email is known.
		unknownResp, err := s.client.RequestPasswordReset(ctx, call("", &identityv1.RequestPasswordResetRequest{Email: "nobody@example.com"}))
		require.NoError(t, err)
		knownResp, err := s.client.RequestPasswordReset(ctx, call("", &identityv1.RequestPasswordResetRequest{Email: "CY@example.com"}))
		require.NoError(t, err)
		assert.True(t, proto.Equal(unknownResp.Msg, knownResp.Msg))

		token := s.token(t, "cy@example.com", "Reset")
		_, err = s.client.ResetPassword(ctx, call("", &identityv1.ResetPasswordRequest{Token: token, NewPassword: "short"}))
		assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err))
		_, err = s.client.ResetPassword(ctx, call("", &identityv1.ResetPasswordRequest{Token: token, NewPassword: "cy's brand new password"}))
		require.NoError(t, err)
		_, err = s.client.ResetPassword(ctx, call("", &identityv1.ResetPasswordRequest{Token: token, NewPassword: "cy's other new password"}))
		assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err), "a reset token works twice")
		// The reset ended the lockout.
		_, err = s.verify(t, "cy@example.com", "cy's brand new password")
		require.NoError(t, err)
	})

	t.Run("admin", func(t *testing.T) {
		got, err := s.client.GetUser(ctx, call(adminToken, &identityv1.GetUserRequest{UserId: bo.GetId()}))
		require.NoError(t, err)
		assert.Equal(t, "bo@example.com", got.Msg.GetUser().GetEmail())
		name := "Bo"
		upd, err := s.client.UpdateUser(ctx, call(adminToken, &identityv1.UpdateUserRequest{UserId: bo.GetId(), DisplayName: &name}))
		require.NoError(t, err)
		assert.Equal(t, "Bo", upd.Msg.GetUser().GetDisplayName())

		var ids []string
		token := ""
		for {
			list, err := s.client.ListUsers(ctx, call(adminToken, &identityv1.ListUsersRequest{PageSize: 1, PageToken: token}))
			require.NoError(t, err)
			assert.LessOrEqual(t, len(list.Msg.GetUsers()), 1)
			for _, u := range list.Msg.GetUsers() {
				ids = append(ids, u.GetId())
			}
			if token = list.Msg.GetNextPageToken(); token == "" {
				break
			}
		}
		assert.Len(t, ids, 4) // ann, bo, the administrator and cy
		assert.Equal(t, []string{ann.GetId(), bo.GetId()}, ids[:2])
		filters := []struct {
			name string
			req  *identityv1.ListUsersRequest
			want []string
		}{
			{"query", &identityv1.ListUsersRequest{Query: "BO@"}, []string{bo.GetId()}},
			{"email prefix", &identityv1.ListUsersRequest{EmailPrefix: "AN"}, []string{ann.GetId()}},
			{"email prefix is no substring", &identityv1.ListUsersRequest{EmailPrefix: "example"}, nil},
			{"name substring", &identityv1.ListUsersRequest{NameContains: "b."}, []string{ann.GetId()}},
			{"name substring % is literal", &identityv1.ListUsersRequest{NameContains: "%"}, nil},
			{"all filters", &identityv1.ListUsersRequest{EmailPrefix: "b", NameContains: "bo", Query: "example", Status: identityv1.UserStatus_USER_STATUS_ACTIVE}, []string{bo.GetId()}},
		}
		for _, tt := range filters {
			found, err := s.client.ListUsers(ctx, call(adminToken, tt.req))
			require.NoError(t, err, tt.name)
			var got []string
			for _, u := range found.Msg.GetUsers() {
				got = append(got, u.GetId())
			}
			assert.Equal(t, tt.want, got, tt.name)
		}
		_, err = s.client.ListUsers(ctx, call(adminToken, &identityv1.ListUsersRequest{NameContains: strings.Repeat("n", 201)}))
		assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err))
		_, err = s.client.ListUsers(ctx, call(adminToken, &identityv1.ListUsersRequest{Status: identityv1.UserStatus(7)}))
		assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err), "an unknown status is no filter")

		dis, err := s.client.DisableUser(ctx, call(adminToken, &identityv1.DisableUserRequest{UserId: bo.GetId(), Reason: "test"}))
		require.NoError(t, err)
		assert.Equal(t, identityv1.UserStatus_USER_STATUS_DISABLED, dis.Msg.GetUser().GetStatus())
		disabled, err := s.client.ListUsers(ctx, call(adminToken, &identityv1.ListUsersRequest{Status: identityv1.UserStatus_USER_STATUS_DISABLED}))
		require.NoError(t, err)
		require.Len(t, disabled.Msg.GetUsers(), 1)
		// A disabled user's right password is refused like a wrong one.
		_, err = s.verify(t, "bo@example.com", "correct horse battery")
		assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err))
		assert.Equal(t, refused.Error(), err.Error(), "a disabled user is told apart from an unknown email")
		en, err := s.client.EnableUser(ctx, call(adminToken, &identityv1.EnableUserRequest{UserId: bo.GetId()}))
		require.NoError(t, err)
		assert.Equal(t, identityv1.UserStatus_USER_STATUS_ACTIVE, en.Msg.GetUser().GetStatus())
		resp, err := s.verify(t, "bo@example.com", "correct horse battery")
		require.NoError(t, err, "an enabled user is refused")
		assert.Equal(t, identityv1.UserStatus_USER_STATUS_ACTIVE, resp.Msg.GetStatus())

		_, err = s.client.DeleteUser(ctx, call(adminToken, &identityv1.DeleteUserRequest{UserId: bo.GetId()}))
		require.NoError(t, err)
		_, err = s.client.DeleteUser(ctx, call(adminToken, &identityv1.DeleteUserRequest{UserId: bo.GetId()}))
		require.NoError(t, err, "DeleteUser is not idempotent")
		_, err = s.client.GetUser(ctx, call(adminToken, &identityv1.GetUserRequest{UserId: bo.GetId()}))
		assert.Equal(t, connect.CodeNotFound, connect.CodeOf(err))
		_, err = s.client.GetMe(ctx, call(boToken, &identityv1.GetMeRequest{}))
		assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err), "a deleted user's token does nothing")
		_, err = s.verify(t, "bo@example.com", "correct horse battery")
		assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err))
	})
}

func second[T any](_ T, err error) error { return err }

// TestVerifyPassword: the Auth service confirms a signed-in user's
// sensitive change with their password; wrong ones count towards the
// lockout, and only services may ask.
func TestVerifyPassword(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	ctx := t.Context()
	res, err := s.client.CreateUser(ctx, call("", &identityv1.CreateUserRequest{Email: "pat@example.com", Password: "correct horse battery"}))
	require.NoError(t, err)
	id := res.Msg.GetUser().GetId()
	serviceToken, err := s.service.Token("identitysvc")
	require.NoError(t, err)
	verify := func(userID, password string) error {
		req := call("", &identityv1.VerifyPasswordRequest{UserId: userID, Password: password})
		req.Header().Set(rpc.ServiceTokenHeader, serviceToken)
		_, err := s.client.VerifyPassword(ctx, req)
		return err
	}

	require.NoError(t, verify(id, "correct horse battery"))
	req := call("", &identityv1.VerifyPasswordRequest{UserId: id, Password: "correct horse battery"})
	req.Header().Set(rpc.ServiceTokenHeader, serviceToken)
	ok, err := s.client.VerifyPassword(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, "pat@example.com", ok.Msg.GetEmail(), "the account's name, for the caller to label what it checked")
	for _, tc := range []struct {
		name, userID, password string
		want                   connect.Code
	}{
		{"no user_id", "", "correct horse battery", connect.CodeInvalidArgument},
		{"user_id not a UUID", "pat@example.com", "correct horse battery", connect.CodeInvalidArgument},
		{"no password", id, "", connect.CodeInvalidArgument},
		{"no such user", "9f8b7c6d-0000-4000-8000-000000000000", "correct horse battery", connect.CodeNotFound},
	} {
		assert.Equal(t, tc.want, connect.CodeOf(verify(tc.userID, tc.password)), tc.name)
	}
	_, err = s.client.VerifyPassword(ctx, call(s.issuer.Issue(authntest.WithSubject(id)), &identityv1.VerifyPasswordRequest{UserId: id, Password: "correct horse battery"}))
	assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err), "a user's own token is not a service's")

	for range 3 {
		assert.Equal(t, connect.CodePermissionDenied, connect.CodeOf(verify(id, "not my password")))
	}
	assert.Equal(t, connect.CodeResourceExhausted, connect.CodeOf(verify(id, "correct horse battery")), "the wrong ones did not lock the account")
}

// covering answers Covers from a table of subject → targets; err, if set,
// is every answer.
type covering struct {
	covers map[[2]string]bool
	err    error
}

func (c *covering) Covers(_ context.Context, subject, target string) (bool, error) {
	return c.covers[[2]string{subject, target}], c.err
}

// startOutranking starts a server whose Authz answers Covers from a table:
// root is a user whom superadmin covers and helpdesk does not, both
// holding identity.users.write.
func startOutranking(t *testing.T) (s *server, authority *covering, r ranks) {
	t.Helper()
	authority = &covering{covers: map[[2]string]bool{}}
	s = startServer(t, identity.WithAuthority(authority))
	res, err := s.client.CreateUser(t.Context(), call("", &identityv1.CreateUserRequest{Email: "root@example.com", Password: "correct horse battery"}))
	require.NoError(t, err)
	r.root = res.Msg.GetUser().GetId()
	r.helpdesk, _ = s.newAdmin(t, "helpdesk@admins.test")
	r.superadmin, _ = s.newAdmin(t, "superadmin@admins.test")
	authority.covers[[2]string{r.superadmin, r.root}] = true
	return s, authority, r
}

// ranks are the users of an outranking test: root, whom superadmin covers
// and helpdesk does not.
type ranks struct{ root, helpdesk, superadmin string }

// TestAdminEmailChangeNeedsEverythingTheUserHolds: an administrator may
// move another user's email, where the password resets go, only if they
// hold every permission that user does; else a helpdesk administrator
// could become any administrator.
func TestAdminEmailChangeNeedsEverythingTheUserHolds(t *testing.T) {
	t.Parallel()
	s, authority, r := startOutranking(t)
	root := r.root
	ctx := t.Context()
	update := func(caller, email string) error {
		_, err := s.client.UpdateUser(ctx, call(s.issuer.Issue(authntest.WithSubject(caller)), &identityv1.UpdateUserRequest{UserId: root, Email: &email}))
		return err
	}

	assert.Equal(t, connect.CodePermissionDenied, connect.CodeOf(update(r.helpdesk, "mine@example.com")), "outranked")
	var refused int
	require.NoError(t, s.db.DB.QueryRowContext(ctx, `SELECT count(*) FROM outbox_events WHERE position(convert_to('identity.user.email_change_refused', 'UTF8') in payload) > 0`).Scan(&refused))
	assert.Equal(t, 1, refused, "the attempt on a higher account is not in the audit log")
	assert.NoError(t, update(r.helpdesk, "root@example.com"), "an unchanged email needs no check")
	authority.err = errors.New("authzsvc down")
	assert.Equal(t, connect.CodeUnavailable, connect.CodeOf(update(r.superadmin, "new-root@example.com")))
	authority.err = nil
	require.NoError(t, update(r.superadmin, "new-root@example.com"))
	got, err := s.client.GetUser(ctx, call(s.issuer.Issue(authntest.WithSubject(r.superadmin)), &identityv1.GetUserRequest{UserId: root}))
	require.NoError(t, err)
	assert.Equal(t, "new-root@example.com", got.Msg.GetUser().GetEmail())
}

// TestStatusChangeAndDeletionNeedEverythingTheUserHolds: disabling,
// enabling or deleting another user's account asks the same as moving
// their email, or a helpdesk administrator could lock every administrator
// out for good.
func TestStatusChangeAndDeletionNeedEverythingTheUserHolds(t *testing.T) {
	t.Parallel()
	s, authority, r := startOutranking(t)
	root := r.root
	ctx := t.Context()
	as := func(caller string) string { return s.issuer.Issue(authntest.WithSubject(caller)) }
	actions := []struct {
		name string
		do   func(token string) error
	}{
		{"disable", func(token string) error {
			_, err := s.client.DisableUser(ctx, call(token, &identityv1.DisableUserRequest{UserId: root}))
			return err
		}},
		{"enable", func(token string) error {
			_, err := s.client.EnableUser(ctx, call(token, &identityv1.EnableUserRequest{UserId: root}))
			return err
		}},
		{"delete", func(token string) error {
			_, err := s.client.DeleteUser(ctx, call(token, &identityv1.DeleteUserRequest{UserId: root}))
			return err
		}},
	}
	for _, a := range actions {
		t.Run(a.name, func(t *testing.T) {
			assert.Equal(t, connect.CodePermissionDenied, connect.CodeOf(a.do(as(r.helpdesk))), "outranked")
			var refused int
			require.NoError(t, s.db.DB.QueryRowContext(ctx, `SELECT count(*) FROM outbox_events WHERE position(convert_to($1, 'UTF8') in payload) > 0`,
				"identity.user."+a.name+"_refused").Scan(&refused))
			assert.Equal(t, 1, refused, "the attempt on a higher account is not in the audit log")
			authority.err = errors.New("authzsvc down")
			assert.Equal(t, connect.CodeUnavailable, connect.CodeOf(a.do(as(r.superadmin))))
			authority.err = nil
			assert.NoError(t, a.do(as(r.superadmin)))
		})
	}
	_, err := s.client.GetUser(ctx, call(as(r.superadmin), &identityv1.GetUserRequest{UserId: root}))
	assert.Equal(t, connect.CodeNotFound, connect.CodeOf(err), "the deletion did not happen")
}

// TestADisabledUsersTokenDoesNothing: disabling an account ends its
// sessions, but its last access token lives until it expires. Identity
// refuses that token at once: a disabled administrator can neither enable
// themselves again nor disable the administrator who disabled them.
func TestADisabledUsersTokenDoesNothing(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	ctx := t.Context()
	root, rootToken := s.newAdmin(t, "root@admins.test")
	rogue, rogueToken := s.newAdmin(t, "rogue@admins.test")

	_, err := s.client.DisableUser(ctx, call(rootToken, &identityv1.DisableUserRequest{UserId: rogue, Reason: "compromised"}))
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"enable themselves", second(s.client.EnableUser(ctx, call(rogueToken, &identityv1.EnableUserRequest{UserId: rogue})))},
		{"disable another", second(s.client.DisableUser(ctx, call(rogueToken, &identityv1.DisableUserRequest{UserId: root})))},
		{"read", second(s.client.GetMe(ctx, call(rogueToken, &identityv1.GetMeRequest{})))},
		{"change their password", second(s.client.ChangePassword(ctx, call(rogueToken, &identityv1.ChangePasswordRequest{
			CurrentPassword: "correct horse battery", NewPassword: "another horse battery"})))},
	} {
		assert.Equal(t, connect.CodePermissionDenied, connect.CodeOf(tc.err), tc.name)
	}
	got, err := s.client.GetUser(ctx, call(rootToken, &identityv1.GetUserRequest{UserId: root}))
	require.NoError(t, err)
	assert.Equal(t, identityv1.UserStatus_USER_STATUS_ACTIVE, got.Msg.GetUser().GetStatus())

	// Nor can an administrator lock themselves out: another must.
	_, err = s.client.DisableUser(ctx, call(rootToken, &identityv1.DisableUserRequest{UserId: root}))
	assert.Equal(t, connect.CodePermissionDenied, connect.CodeOf(err), "disable oneself")
	_, err = s.client.DeleteUser(ctx, call(rootToken, &identityv1.DeleteUserRequest{UserId: root}))
	assert.Equal(t, connect.CodePermissionDenied, connect.CodeOf(err), "delete oneself")

	_, err = s.client.EnableUser(ctx, call(rootToken, &identityv1.EnableUserRequest{UserId: rogue}))
	require.NoError(t, err)
	_, err = s.client.GetMe(ctx, call(rogueToken, &identityv1.GetMeRequest{}))
	assert.NoError(t, err, "enabled again, the account acts again")

	_, err = s.client.DisableUser(ctx, call(rootToken, &identityv1.DisableUserRequest{UserId: rogue}))
	require.NoError(t, err)
	_, err = s.client.RequestPasswordReset(ctx, call(rogueToken, &identityv1.RequestPasswordResetRequest{Email: "rogue@admins.test"}))
	assert.NoError(t, err, "a public procedure: the token sent along proves nothing, and is not held against the caller")

	_, err = s.client.DeleteUser(ctx, call(rootToken, &identityv1.DeleteUserRequest{UserId: rogue}))
	require.NoError(t, err)
	_, err = s.client.CreateUser(ctx, call(rogueToken, &identityv1.CreateUserRequest{Email: "rogue@admins.test", Password: "correct horse battery"}))
	assert.NoError(t, err, "signing up again with a stale token sent along")
	_, err = s.client.DisableUser(ctx, call(rogueToken, &identityv1.DisableUserRequest{UserId: root}))
	assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err), "a deleted user's token")
	_, err = s.verify(t, "root@admins.test", "correct horse battery")
	assert.NoError(t, err, "services are not users")
}
