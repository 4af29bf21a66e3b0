package flows_test

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/e2e/platform"
	"portcullis.dev/e2e/platformtest"
	"portcullis.dev/kernel/kerneltest"
	authv1 "portcullis.dev/proto/auth/v1"
	"portcullis.dev/proto/auth/v1/authv1connect"
	authzv1 "portcullis.dev/proto/authz/v1"
	"portcullis.dev/proto/authz/v1/authzv1connect"
	identityv1 "portcullis.dev/proto/identity/v1"
	"portcullis.dev/proto/identity/v1/identityv1connect"
)

func bearer[T any](token string, msg *T) *connect.Request[T] {
	req := connect.NewRequest(msg)
	req.Header().Set("Authorization", "Bearer "+token)
	return req
}

// Everything a user does goes through the gateway: register, log in, read
// themselves; the bootstrap admin manages users and roles; internal
// procedures are out of reach.
func TestThroughTheGateway(t *testing.T) {
	t.Parallel()
	p, logs := platformtest.Start(t, platform.Options{Env: append([]string{"PORTCULLIS_RATELIMIT_ENABLED=false"}, platformtest.FastHashing...)})
	ctx := t.Context()
	gw := p.GatewayURL
	auth := authv1connect.NewAuthServiceClient(http.DefaultClient, gw)
	identity := identityv1connect.NewIdentityServiceClient(http.DefaultClient, gw)
	authz := authzv1connect.NewAuthzServiceClient(http.DefaultClient, gw, connect.WithGRPCWeb())

	// The bootstrap admin logs in and holds every permission.
	login, err := auth.Login(ctx, connect.NewRequest(&authv1.LoginRequest{Email: p.Admin.Email, Password: p.Admin.Password}))
	require.NoError(t, err, "logs:\n%s", logs.String())
	admin := login.Msg.GetAccessToken()
	require.NotEmpty(t, admin)
	roles, err := authz.ListRoles(ctx, bearer(admin, &authzv1.ListRolesRequest{}))
	require.NoError(t, err)
	assert.GreaterOrEqual(t, len(roles.Msg.GetRoles()), 2, "the built-in roles")
	// identitysvc asks authzsvc over the network whether the admin may list users.
	users, err := identity.ListUsers(ctx, bearer(admin, &identityv1.ListUsersRequest{}))
	require.NoError(t, err)
	require.NotEmpty(t, users.Msg.GetUsers())

	// A new user registers, logs in, and can read themselves but not others.
	_, err = identity.CreateUser(ctx, connect.NewRequest(&identityv1.CreateUserRequest{Email: "ann@example.com", Password: "correct horse battery", DisplayName: "Ann"}))
	require.NoError(t, err)
	annLogin, err := auth.Login(ctx, connect.NewRequest(&authv1.LoginRequest{Email: "ann@example.com", Password: "correct horse battery"}))
	require.NoError(t, err)
	ann := annLogin.Msg.GetAccessToken()
	me, err := identity.GetMe(ctx, bearer(ann, &identityv1.GetMeRequest{}))
	require.NoError(t, err)
	assert.Equal(t, "ann@example.com", me.Msg.GetUser().GetEmail())
	_, err = identity.ListUsers(ctx, bearer(ann, &identityv1.ListUsersRequest{}))
	assert.Equal(t, connect.CodePermissionDenied, connect.CodeOf(err))

	// Refresh rotates; the old refresh token is spent.
	refreshed, err := auth.Refresh(ctx, connect.NewRequest(&authv1.RefreshRequest{RefreshToken: annLogin.Msg.GetRefreshToken()}))
	require.NoError(t, err)
	assert.NotEqual(t, annLogin.Msg.GetRefreshToken(), refreshed.Msg.GetRefreshToken())

	// An admin disables a user: Identity ends their sessions in Auth, so
	// their refresh token stops working and they cannot log in again.
	bob, err := identity.CreateUser(ctx, connect.NewRequest(&identityv1.CreateUserRequest{Email: "bob@example.com", Password: "correct horse battery", DisplayName: "Bob"}))
	require.NoError(t, err)
	bobLogin, err := auth.Login(ctx, connect.NewRequest(&authv1.LoginRequest{Email: "bob@example.com", Password: "correct horse battery"}))
	require.NoError(t, err)
	bobID := bob.Msg.GetUser().GetId()
	_, err = identity.DisableUser(ctx, bearer(admin, &identityv1.DisableUserRequest{UserId: bobID}))
	require.NoError(t, err)
	// Identity tells Auth after its own change committed.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		_, err := auth.Refresh(ctx, connect.NewRequest(&authv1.RefreshRequest{RefreshToken: bobLogin.Msg.GetRefreshToken()}))
		assert.Equal(c, connect.CodeUnauthenticated, connect.CodeOf(err))
	}, 10*time.Second, 50*time.Millisecond, "a disabled user's session still refreshes")
	_, err = auth.Login(ctx, connect.NewRequest(&authv1.LoginRequest{Email: "bob@example.com", Password: "correct horse battery"}))
	assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err), "a disabled user logs in")

	// Refusals at the edge.
	_, err = identity.GetMe(ctx, connect.NewRequest(&identityv1.GetMeRequest{}))
	assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err))
	_, err = identity.VerifyCredentials(ctx, connect.NewRequest(&identityv1.VerifyCredentialsRequest{Email: p.Admin.Email, Password: p.Admin.Password}))
	assert.Equal(t, connect.CodeUnimplemented, connect.CodeOf(err), "an internal procedure is reachable from outside")
	_, err = auth.Login(ctx, connect.NewRequest(&authv1.LoginRequest{Email: "ann@example.com", Password: "wrong password!"}))
	assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err))

	// The JWKS is served at the gateway.
	resp, err := http.Get(gw + "/.well-known/jwks.json")
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
}

// The commands `up` prints work, pasted as they are.
func TestTheCommandsUpPrintsWork(t *testing.T) {
	t.Parallel()
	p, logs := platformtest.Start(t, platform.Options{Env: platformtest.FastHashing})
	root, err := filepath.Abs("../..") // the repository root: bin/buf and the contracts
	require.NoError(t, err)
	if _, err := os.Stat(filepath.Join(root, "bin", "buf")); err != nil {
		// A skip on a developer's machine, a failure under CI=true, where
		// `go tool task test` builds the tools first.
		kerneltest.Unavailable(t, "bin/buf is missing (go tool task tools builds it): %v", err)
	}
	for name, script := range map[string]string{
		"printed by up": strings.Join(platform.TryCommands(p.GatewayURL, p.Admin.Email), "\n"),
		"in the README": readmeTryIt(t, filepath.Join(root, "README.md"), p.GatewayURL),
	} {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command("bash", "-c", "set -euo pipefail\n"+script+"\n")
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "PASSWORD="+p.Admin.Password)
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "script:\n%s\noutput:\n%s\nlogs:\n%s", script, out, logs.String())
			// protojson varies its whitespace on purpose: compare without it.
			compact := strings.Join(strings.Fields(string(out)), "")
			assert.Contains(t, compact, `"email":"`+p.Admin.Email+`"`, "GetMe")
			assert.Contains(t, compact, `"name":"admin"`, "ListRoles")
		})
	}
}

// readmeTryIt returns the shell block of the README's "Try it" section,
// pointed at gatewayURL instead of the default address.
func readmeTryIt(t *testing.T, readme, gatewayURL string) string {
	t.Helper()
	b, err := os.ReadFile(readme)
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(b), "### Try it")
	require.True(t, ok, "the README has a Try it section")
	_, block, ok := strings.Cut(section, "```sh\n")
	require.True(t, ok, "the Try it section has a shell block")
	block, _, ok = strings.Cut(block, "```")
	require.True(t, ok)
	return strings.ReplaceAll(block, "http://127.0.0.1:8080", gatewayURL)
}
