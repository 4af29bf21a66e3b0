package flows_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"portcullis.dev/e2e/platform"
	"portcullis.dev/e2e/platformtest"
	"portcullis.dev/kernel/kerneltest"
	auditv1 "portcullis.dev/proto/audit/v1"
	"portcullis.dev/proto/audit/v1/auditv1connect"
	authv1 "portcullis.dev/proto/auth/v1"
	"portcullis.dev/proto/auth/v1/authv1connect"
	authzv1 "portcullis.dev/proto/authz/v1"
	"portcullis.dev/proto/authz/v1/authzv1connect"
	identityv1 "portcullis.dev/proto/identity/v1"
	"portcullis.dev/proto/identity/v1/identityv1connect"
)

// revocationDeadline is how soon a revoked permission must stop working
// (issue #11).
const revocationDeadline = time.Second

// journeys is one platform shared by the journeys of
// [TestJourneysThroughTheGateway], reached only through the gateway.
type journeys struct {
	p       *platform.Platform
	logs    *kerneltest.Buffer
	bin     string // the binaries the platform runs, auditsvc's verifier among them
	mailDir string // Identity's development mail sink
	gw      string

	auth     authv1connect.AuthServiceClient
	identity identityv1connect.IdentityServiceClient
	authz    authzv1connect.AuthzServiceClient
	audit    auditv1connect.AuditServiceClient

	admin string // the bootstrap admin's access token
	trail *auditTrail
}

// The journeys of issue #11, driven only through the gateway with the
// generated Connect clients and raw HTTP/JSON: a user registers, verifies
// their email and goes through a session's life; an admin grants and
// revokes a permission; a user turns on TOTP; and the audit log holds
// every event of the run, in order, in a chain that verifies online and
// offline. The journeys share one platform (six processes on a small
// machine are enough) and run in sequence, so the last can check the
// whole run's audit trail.
func TestJourneysThroughTheGateway(t *testing.T) {
	t.Parallel()
	j := &journeys{bin: platformtest.Build(t), mailDir: t.TempDir()}
	env := []string{
		// Later entries win: this replaces platformtest's own mail folder,
		// so the test knows where to look.
		"PORTCULLIS_MAIL_DIR=" + j.mailDir,
		// Every journey logs in several times from 127.0.0.1.
		"PORTCULLIS_RATELIMIT_ENABLED=false",
		// Revocation is checked with the default authz.decision_ttl
		// (500ms), which keeps it under a second.
	}
	j.p, j.logs = platformtest.Start(t, platform.Options{
		BinDir: j.bin,
		// Two Identity instances, as the issue asks of the e2e platform:
		// the journeys must not depend on which one serves a call.
		Replicas: map[string]int{"identitysvc": 2},
		Env:      append(env, platformtest.FastHashing...),
	})
	j.gw = j.p.GatewayURL
	j.auth = authv1connect.NewAuthServiceClient(http.DefaultClient, j.gw)
	j.identity = identityv1connect.NewIdentityServiceClient(http.DefaultClient, j.gw)
	j.authz = authzv1connect.NewAuthzServiceClient(http.DefaultClient, j.gw)
	j.audit = auditv1connect.NewAuditServiceClient(http.DefaultClient, j.gw)

	// Everything the services do from here on is the run's; the bootstrap
	// (admin, built-in roles, first signing key) happened before.
	j.trail = &auditTrail{audit: j.audit, since: time.Now()}
	login, err := j.auth.Login(t.Context(), connect.NewRequest(&authv1.LoginRequest{Email: j.p.Admin.Email, Password: j.p.Admin.Password}))
	require.NoError(t, err, "logs:\n%s", j.logs.String())
	j.admin = login.Msg.GetAccessToken()
	j.trail.token = j.admin
	j.trail.expect(t, "user:"+j.p.Admin.UserID, "auth.login.succeeded", "user:"+j.p.Admin.UserID, auditv1.Outcome_OUTCOME_SUCCESS)

	t.Run("UserJourney", j.userJourney)
	t.Run("RoleGrantAndRevoke", j.roleGrantAndRevoke)
	t.Run("TOTPLogin", j.totpLogin)
	t.Run("AuditChainOfTheRun", j.auditChainOfTheRun)
	if t.Failed() {
		t.Logf("logs:\n%s", j.logs.String())
	}
}

// userJourney: register, verify the email from the mail sink, log in (raw
// JSON), read oneself, refresh, have a reused refresh token revoke its
// whole session, log in again and log out.
func (j *journeys) userJourney(t *testing.T) {
	ctx := t.Context()
	const email, password = "ann@example.com", "correct horse battery"
	ann := j.register(t, email, password, "Ann")

	// The verification link from the mail verifies the address, once.
	link := mailedLink(t, j.mailDir, email, "Verify your email address")
	assert.Equal(t, j.gw, link.Scheme+"://"+link.Host, "the mail links to another gateway than this platform's")
	assert.Equal(t, "verify_email", link.Query().Get("purpose"))
	token := link.Query().Get("token")
	_, err := j.identity.VerifyEmail(ctx, connect.NewRequest(&identityv1.VerifyEmailRequest{Token: token}))
	require.NoError(t, err)
	j.trail.expect(t, "anonymous", "identity.email.verified", "user:"+ann, auditv1.Outcome_OUTCOME_SUCCESS)
	_, err = j.identity.VerifyEmail(ctx, connect.NewRequest(&identityv1.VerifyEmailRequest{Token: token}))
	assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err), "a verification token works twice")

	// Login as plain HTTP/JSON: the Connect protocol's unary JSON form.
	status, body := postJSON(t, j.gw+"/portcullis.auth.v1.AuthService/Login", map[string]string{"email": email, "password": password})
	require.Equal(t, http.StatusOK, status, "%s", body)
	var raw map[string]any
	require.NoError(t, json.Unmarshal(body, &raw))
	for _, field := range []string{"accessToken", "refreshToken", "tokenType", "expiresIn", "refreshExpiresIn", "sessionId"} {
		assert.Contains(t, raw, field, "JSON field names are protojson's lowerCamelCase")
	}
	first := &authv1.LoginResponse{}
	require.NoError(t, protojson.Unmarshal(body, first))
	assert.Equal(t, "Bearer", first.GetTokenType())
	assert.Positive(t, first.GetExpiresIn())
	j.trail.expect(t, "user:"+ann, "auth.login.succeeded", "user:"+ann, auditv1.Outcome_OUTCOME_SUCCESS)

	status, body = postJSON(t, j.gw+"/portcullis.auth.v1.AuthService/Login", map[string]string{"email": email, "password": "not the password"})
	assert.Equal(t, http.StatusUnauthorized, status)
	var jsonErr struct{ Code, Message string }
	require.NoError(t, json.Unmarshal(body, &jsonErr), "%s", body)
	assert.Equal(t, "unauthenticated", jsonErr.Code)
	// A wrong password does not tell whose account was tried.
	j.trail.expect(t, "anonymous", "auth.login.failed", "user:unknown", auditv1.Outcome_OUTCOME_FAILURE)

	me, err := j.identity.GetMe(ctx, bearer(first.GetAccessToken(), &identityv1.GetMeRequest{}))
	require.NoError(t, err)
	assert.Equal(t, ann, me.Msg.GetUser().GetId())
	assert.Equal(t, email, me.Msg.GetUser().GetEmail())
	assert.Equal(t, "Ann", me.Msg.GetUser().GetDisplayName())
	assert.NotNil(t, me.Msg.GetUser().GetEmailVerifiedTime(), "the email is not verified")

	// Refresh rotates within the session.
	second, err := j.auth.Refresh(ctx, connect.NewRequest(&authv1.RefreshRequest{RefreshToken: first.GetRefreshToken()}))
	require.NoError(t, err)
	assert.Equal(t, first.GetSessionId(), second.Msg.GetSessionId())
	assert.NotEqual(t, first.GetRefreshToken(), second.Msg.GetRefreshToken())
	session := "session:" + first.GetSessionId()
	j.trail.expect(t, "user:"+ann, "auth.session.refreshed", session, auditv1.Outcome_OUTCOME_SUCCESS)
	me, err = j.identity.GetMe(ctx, bearer(second.Msg.GetAccessToken(), &identityv1.GetMeRequest{}))
	require.NoError(t, err)
	assert.Equal(t, ann, me.Msg.GetUser().GetId())

	// The first refresh token again is theft: the whole family is revoked,
	// the newer token with it.
	_, err = j.auth.Refresh(ctx, connect.NewRequest(&authv1.RefreshRequest{RefreshToken: first.GetRefreshToken()}))
	assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err), "a spent refresh token works")
	reuse := j.trail.expect(t, "anonymous", "auth.refresh.reuse_detected", session, auditv1.Outcome_OUTCOME_DENIED)
	assert.Equal(t, "true", reuse.GetMetadata()["session_revoked"])
	_, err = j.auth.Refresh(ctx, connect.NewRequest(&authv1.RefreshRequest{RefreshToken: second.Msg.GetRefreshToken()}))
	assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err), "the newer refresh token survived the reuse of an older one")

	// A new session ends with Logout; its refresh token is then dead.
	third := j.login(t, ann, email, password, "")
	_, err = j.auth.Logout(ctx, connect.NewRequest(&authv1.LogoutRequest{RefreshToken: third.GetRefreshToken()}))
	require.NoError(t, err)
	j.trail.expect(t, "anonymous", "auth.logout", "session:"+third.GetSessionId(), auditv1.Outcome_OUTCOME_SUCCESS)
	_, err = j.auth.Refresh(ctx, connect.NewRequest(&authv1.RefreshRequest{RefreshToken: third.GetRefreshToken()}))
	assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err), "refresh works after logout")
	_, err = j.auth.Logout(ctx, connect.NewRequest(&authv1.LogoutRequest{RefreshToken: third.GetRefreshToken()}))
	assert.NoError(t, err, "logging out twice")
}

// roleGrantAndRevoke: the admin creates a role, grants identity.users.read
// and binds it to a user, who can then list users and could not before;
// unbinding, and later revoking the grant, take effect within a second.
func (j *journeys) roleGrantAndRevoke(t *testing.T) {
	ctx := t.Context()
	const email, password = "bob@example.com", "correct horse battery"
	bob := j.register(t, email, password, "Bob")
	token := j.login(t, bob, email, password, "").GetAccessToken()
	listUsers := func() error {
		_, err := j.identity.ListUsers(ctx, bearer(token, &identityv1.ListUsersRequest{}))
		return err
	}
	require.Equal(t, connect.CodePermissionDenied, connect.CodeOf(listUsers()), "bob lists users without a role")

	admin := "user:" + j.p.Admin.UserID
	created, err := j.authz.CreateRole(ctx, bearer(j.admin, &authzv1.CreateRoleRequest{Name: "user-reader", Description: "Reads user accounts"}))
	require.NoError(t, err)
	role := created.Msg.GetRole()
	assert.Empty(t, role.GetPermissions())
	assert.False(t, role.GetBuiltIn())
	j.trail.expect(t, admin, "authz.role.created", "role:"+role.GetId(), auditv1.Outcome_OUTCOME_SUCCESS)

	granted, err := j.authz.GrantPermissions(ctx, bearer(j.admin, &authzv1.GrantPermissionsRequest{RoleId: role.GetId(), Permissions: []string{"identity.users.read"}}))
	require.NoError(t, err)
	assert.Equal(t, []string{"identity.users.read"}, granted.Msg.GetRole().GetPermissions())
	j.trail.expect(t, admin, "authz.permission.granted", "role:"+role.GetId(), auditv1.Outcome_OUTCOME_SUCCESS)

	assign := func() {
		t.Helper()
		sent := time.Now()
		bound, err := j.authz.AssignRole(ctx, bearer(j.admin, &authzv1.AssignRoleRequest{UserId: bob, RoleId: role.GetId()}))
		require.NoError(t, err)
		assert.Equal(t, "user-reader", bound.Msg.GetBinding().GetRoleName())
		j.trail.expect(t, admin, "authz.role.assigned", "user:"+bob, auditv1.Outcome_OUTCOME_SUCCESS)
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			assert.NoError(c, listUsers())
		}, 10*time.Second, 20*time.Millisecond, "bob cannot list users with the role")
		// Each Identity instance caches its own decisions, bob's earlier
		// denial among them: one instance letting bob in says nothing of
		// the other. A grant reaches every instance within the deadline a
		// revocation has; past it, any instance must let bob in.
		time.Sleep(time.Until(sent.Add(revocationDeadline)))
		for range 4 {
			require.NoError(t, listUsers(), "bob is refused %v after the role was assigned", revocationDeadline)
		}
	}
	assign()
	users, err := j.identity.ListUsers(ctx, bearer(token, &identityv1.ListUsersRequest{Query: "example.com"}))
	require.NoError(t, err)
	var emails []string
	for _, u := range users.Msg.GetUsers() {
		emails = append(emails, u.GetEmail())
	}
	assert.Equal(t, []string{"ann@example.com", "bob@example.com"}, emails, "oldest first")
	perms, err := j.authz.ListUserPermissions(ctx, bearer(token, &authzv1.ListUserPermissionsRequest{}))
	require.NoError(t, err)
	assert.Equal(t, []string{"identity.users.read"}, perms.Msg.GetPermissions())

	// Unbinding takes effect within the deadline...
	took := untilDenied(t, listUsers, func() error {
		_, err := j.authz.UnassignRole(ctx, bearer(j.admin, &authzv1.UnassignRoleRequest{UserId: bob, RoleId: role.GetId()}))
		return err
	})
	assert.Less(t, took, revocationDeadline, "unassigning the role took %v to take effect", took)
	j.trail.expect(t, admin, "authz.role.unassigned", "user:"+bob, auditv1.Outcome_OUTCOME_SUCCESS)

	// ...and so does revoking the grant from a role still bound.
	assign()
	took = untilDenied(t, listUsers, func() error {
		_, err := j.authz.RevokePermissions(ctx, bearer(j.admin, &authzv1.RevokePermissionsRequest{RoleId: role.GetId(), Permissions: []string{"identity.users.read"}}))
		return err
	})
	assert.Less(t, took, revocationDeadline, "revoking the permission took %v to take effect", took)
	j.trail.expect(t, admin, "authz.permission.revoked", "role:"+role.GetId(), auditv1.Outcome_OUTCOME_SUCCESS)
}

// untilDenied runs revoke and returns how long after it was sent call
// first failed with PermissionDenied.
func untilDenied(t *testing.T, call, revoke func() error) time.Duration {
	t.Helper()
	start := time.Now()
	require.NoError(t, revoke())
	for {
		err := call()
		took := time.Since(start)
		if connect.CodeOf(err) == connect.CodePermissionDenied {
			t.Logf("denied %v after the revocation was sent", took)
			return took
		}
		require.NoError(t, err)
		if took > 10*time.Second {
			require.FailNow(t, "the revocation never took effect")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// totpLogin: a user enrols in TOTP; from then on Login needs a current
// code, each code works once, and a missing or wrong code is told apart
// (TotpRequired) only to someone who knows the password.
func (j *journeys) totpLogin(t *testing.T) {
	ctx := t.Context()
	const email, password = "carol@example.com", "correct horse battery"
	carol := j.register(t, email, password, "Carol")
	token := j.login(t, carol, email, password, "").GetAccessToken()
	user := "user:" + carol

	// A token alone does not enrol: the password confirms it, checked by
	// Identity on Auth's behalf.
	_, err := j.auth.EnrollTOTP(ctx, bearer(token, &authv1.EnrollTOTPRequest{CurrentPassword: "not carol's password"}))
	assert.Equal(t, connect.CodePermissionDenied, connect.CodeOf(err))
	enrolled, err := j.auth.EnrollTOTP(ctx, bearer(token, &authv1.EnrollTOTPRequest{CurrentPassword: password}))
	require.NoError(t, err)
	secret := enrolled.Msg.GetSecret()
	j.trail.expect(t, user, "auth.totp.enrollment_started", user, auditv1.Outcome_OUTCOME_SUCCESS)
	key, err := otp.NewKeyFromURL(enrolled.Msg.GetOtpauthUri())
	require.NoError(t, err)
	assert.Equal(t, "totp", key.Type())
	assert.Equal(t, secret, key.Secret())
	assert.Equal(t, "Portcullis", key.Issuer())
	assert.Equal(t, uint64(30), key.Period())
	assert.Equal(t, otp.DigitsSix, key.Digits())
	assert.Equal(t, otp.AlgorithmSHA1, key.Algorithm())

	// A pending enrolment changes nothing yet.
	j.login(t, carol, email, password, "")

	// Codes from one moment: the confirmation uses its time step, the login
	// the next one, which the service accepts as one step of clock drift
	// (a code works once, so the login cannot reuse the confirmation's).
	now := time.Now()
	code := func(at time.Time) string {
		c, err := totp.GenerateCode(secret, at)
		require.NoError(t, err)
		return c
	}
	confirmCode, loginCode := code(now), code(now.Add(30*time.Second))
	wrong := wrongCode(confirmCode, loginCode, code(now.Add(-30*time.Second)), code(now.Add(60*time.Second)))
	_, err = j.auth.ConfirmTOTP(ctx, bearer(token, &authv1.ConfirmTOTPRequest{Code: wrong}))
	assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err), "a wrong code confirms")
	_, err = j.auth.ConfirmTOTP(ctx, bearer(token, &authv1.ConfirmTOTPRequest{Code: confirmCode}))
	require.NoError(t, err)
	j.trail.expect(t, user, "auth.totp.enabled", user, auditv1.Outcome_OUTCOME_SUCCESS)
	_, err = j.auth.EnrollTOTP(ctx, bearer(token, &authv1.EnrollTOTPRequest{CurrentPassword: password}))
	assert.Equal(t, connect.CodeFailedPrecondition, connect.CodeOf(err), "enrolling again with TOTP on")

	for _, tc := range []struct {
		name, password, code string
		totpRequired         bool
		target, reason       string
	}{
		{"no code", password, "", true, user, "totp_missing"},
		{"wrong code", password, wrong, true, user, "totp_invalid"},
		// A password guesser learns nothing about TOTP.
		{"wrong password", "not the password", loginCode, false, "user:unknown", "invalid_credentials"},
	} {
		_, err = j.auth.Login(ctx, connect.NewRequest(&authv1.LoginRequest{Email: email, Password: tc.password, TotpCode: tc.code}))
		assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err), tc.name)
		assert.Equal(t, tc.totpRequired, hasTOTPRequired(err), "%s: TotpRequired detail", tc.name)
		failed := j.trail.expect(t, "anonymous", "auth.login.failed", tc.target, auditv1.Outcome_OUTCOME_FAILURE)
		assert.Equal(t, tc.reason, failed.GetMetadata()["reason"], tc.name)
	}

	login := j.login(t, carol, email, password, loginCode)
	me, err := j.identity.GetMe(ctx, bearer(login.GetAccessToken(), &identityv1.GetMeRequest{}))
	require.NoError(t, err)
	assert.Equal(t, carol, me.Msg.GetUser().GetId())

	// The same code again is a replay (RFC 6238 section 5.2).
	_, err = j.auth.Login(ctx, connect.NewRequest(&authv1.LoginRequest{Email: email, Password: password, TotpCode: loginCode}))
	assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err), "a TOTP code works twice")
	assert.True(t, hasTOTPRequired(err))
	failed := j.trail.expect(t, "anonymous", "auth.login.failed", user, auditv1.Outcome_OUTCOME_FAILURE)
	assert.Equal(t, "totp_replayed", failed.GetMetadata()["reason"])
}

// wrongCode is a six-digit code that is none of codes.
func wrongCode(codes ...string) string {
	for i := 0; ; i++ {
		c := fmt.Sprintf("%06d", i)
		if !slices.Contains(codes, c) {
			return c
		}
	}
}

// hasTOTPRequired says whether err carries Auth's TotpRequired detail.
func hasTOTPRequired(err error) bool {
	var cerr *connect.Error
	if !errors.As(err, &cerr) {
		return false
	}
	for _, d := range cerr.Details() {
		if v, err := d.Value(); err == nil {
			if _, ok := v.(*authv1.TotpRequired); ok {
				return true
			}
		}
	}
	return false
}

// auditChainOfTheRun: every event the run caused is in the audit log, once
// and in order; the chain verifies through VerifyChain, and an export
// verifies offline with `auditsvc verify --file` (and fails when altered).
func (j *journeys) auditChainOfTheRun(t *testing.T) {
	ctx := t.Context()
	run := j.trail.recorded(t)
	got := make([]trailEvent, len(run))
	for i, e := range run {
		got[i] = summary(e)
	}
	require.Equal(t, j.trail.want, got, "the run's audit trail")

	// The whole log, bootstrap included, exported as NDJSON.
	stream, err := j.audit.ExportEvents(ctx, bearer(j.admin, &auditv1.ExportEventsRequest{}))
	require.NoError(t, err)
	var (
		events []*auditv1.Event
		ndjson bytes.Buffer
	)
	for stream.Receive() {
		events = append(events, stream.Msg().GetEvent())
		line, err := protojson.Marshal(stream.Msg())
		require.NoError(t, err)
		ndjson.Write(append(line, '\n'))
	}
	require.NoError(t, stream.Err())
	require.NoError(t, stream.Close())
	require.NotEmpty(t, events)
	for i, e := range events {
		require.Equal(t, int64(i+1), e.GetSequence(), "the export has a gap")
	}
	last := events[len(events)-1]
	var exported, queried []string
	for _, e := range events {
		if !e.GetTime().AsTime().Before(j.trail.since) {
			exported = append(exported, e.GetId())
		}
	}
	for _, e := range run {
		queried = append(queried, e.GetId())
	}
	assert.Equal(t, queried, exported, "the export holds other events of the run than QueryEvents")

	// The service finds the same chain intact.
	verified, err := j.audit.VerifyChain(ctx, bearer(j.admin, &auditv1.VerifyChainRequest{EndSequence: last.GetSequence()}))
	require.NoError(t, err)
	assert.True(t, verified.Msg.GetOk(), "broken at %d", verified.Msg.GetFirstBrokenSequence())
	assert.Equal(t, last.GetSequence(), verified.Msg.GetCheckedCount())
	assert.Zero(t, verified.Msg.GetFirstBrokenSequence())
	assert.Equal(t, last.GetHash(), verified.Msg.GetLastHash())

	// So does an auditor, offline, with the binary the platform runs.
	dir := t.TempDir()
	export := filepath.Join(dir, "export.ndjson")
	require.NoError(t, os.WriteFile(export, ndjson.Bytes(), 0o600))
	code, out := auditVerify(t, j.bin, export)
	assert.Equal(t, 0, code, "%s", out)
	assert.Equal(t, "OK "+strconv.Itoa(len(events))+" events, sequences 1 to "+strconv.FormatInt(last.GetSequence(), 10)+", last hash "+hex.EncodeToString(last.GetHash()), strings.TrimSpace(out))

	// An event altered after the fact breaks the chain from there on.
	altered := proto.Clone(run[0]).(*auditv1.Event)
	altered.Outcome = auditv1.Outcome_OUTCOME_FAILURE
	var tampered bytes.Buffer
	for _, e := range events {
		if e.GetId() == altered.GetId() {
			e = altered
		}
		line, err := protojson.Marshal(&auditv1.ExportEventsResponse{Event: e})
		require.NoError(t, err)
		tampered.Write(append(line, '\n'))
	}
	export = filepath.Join(dir, "tampered.ndjson")
	require.NoError(t, os.WriteFile(export, tampered.Bytes(), 0o600))
	code, out = auditVerify(t, j.bin, export)
	assert.Equal(t, 1, code, "%s", out)
	assert.Contains(t, out, fmt.Sprintf("BROKEN at sequence %d", altered.GetSequence()))
}

// auditVerify runs `auditsvc verify --file file` from bin and returns its
// exit code and output.
func auditVerify(t *testing.T, bin, file string) (int, string) {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), filepath.Join(bin, "auditsvc"), "verify", "--file", file).CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), string(out)
	}
	require.NoError(t, err)
	return 0, string(out)
}

// register signs a user up through the gateway and returns their ID.
func (j *journeys) register(t *testing.T, email, password, name string) string {
	t.Helper()
	created, err := j.identity.CreateUser(t.Context(), connect.NewRequest(&identityv1.CreateUserRequest{Email: email, Password: password, DisplayName: name}))
	require.NoError(t, err)
	u := created.Msg.GetUser()
	assert.Equal(t, identityv1.UserStatus_USER_STATUS_ACTIVE, u.GetStatus())
	assert.Nil(t, u.GetEmailVerifiedTime(), "a new email is verified")
	ev := j.trail.expect(t, "anonymous", "identity.user.created", "user:"+u.GetId(), auditv1.Outcome_OUTCOME_SUCCESS)
	assert.Equal(t, "sent", ev.GetMetadata()["verification_mail"])
	return u.GetId()
}

// login logs user in through the gateway, with a TOTP code unless empty.
func (j *journeys) login(t *testing.T, user, email, password, code string) *authv1.LoginResponse {
	t.Helper()
	res, err := j.auth.Login(t.Context(), connect.NewRequest(&authv1.LoginRequest{Email: email, Password: password, TotpCode: code}))
	require.NoError(t, err)
	ev := j.trail.expect(t, "user:"+user, "auth.login.succeeded", "user:"+user, auditv1.Outcome_OUTCOME_SUCCESS)
	assert.Equal(t, res.Msg.GetSessionId(), ev.GetMetadata()["session_id"])
	assert.Equal(t, strconv.FormatBool(code != ""), ev.GetMetadata()["mfa"])
	return res.Msg
}

// postJSON posts body as JSON to url, as any HTTP client can, and returns
// the status and the response body.
func postJSON(t *testing.T, url string, body any) (int, []byte) {
	t.Helper()
	b, err := json.Marshal(body)
	require.NoError(t, err)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, bytes.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	return resp.StatusCode, out
}
