package authz_test

import (
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/authzsvc/internal/authz"
	"portcullis.dev/kernel/authn"
	"portcullis.dev/kernel/kerneltest"
	"portcullis.dev/kernel/registry"
	"portcullis.dev/kernel/rpc"
	authzv1 "portcullis.dev/proto/authz/v1"
	"portcullis.dev/proto/authz/v1/authzv1connect"
)

func code(err error) connect.Code { return connect.CodeOf(err) }

func TestHandlerOverConnect(t *testing.T) {
	t.Parallel()
	consul := kerneltest.StartConsul(t)
	reg, err := registry.New(registry.Config{Addr: consul.Addr(), CheckInterval: time.Second})
	require.NoError(t, err)
	r := newReplica(t)
	r.mustAssign(t, "root", r.roleByName(t, authz.AdminRole), "")
	s := startServer(t, r, reg)
	ctx := t.Context()

	root := s.asUser("root")
	nobody := s.asUser("nobody")

	// Admin RPCs: the permission is checked in process, by this service.
	created, err := root.CreateRole(ctx, connect.NewRequest(&authzv1.CreateRoleRequest{
		Name: "auditors", Description: "Read the audit log", Permissions: []string{"audit.events.read", "audit.events.*"}}))
	require.NoError(t, err)
	role := created.Msg.GetRole()
	assert.Equal(t, []string{"audit.events.*", "audit.events.read"}, role.GetPermissions())
	assert.False(t, role.GetBuiltIn())
	assert.NotEmpty(t, role.GetId())

	_, err = nobody.CreateRole(ctx, connect.NewRequest(&authzv1.CreateRoleRequest{Name: "sneaky"}))
	assert.Equal(t, connect.CodePermissionDenied, code(err))

	// A role manager gives away only what they hold.
	r.mustAssign(t, "manager", r.mustRole(t, "role-manager", "authz.roles.write"), "")
	_, err = s.asUser("manager").GrantPermissions(ctx, connect.NewRequest(&authzv1.GrantPermissionsRequest{RoleId: role.GetId(), Permissions: []string{"*"}}))
	assert.Equal(t, connect.CodePermissionDenied, code(err))
	assert.ErrorContains(t, err, "you do not hold *")

	// Check is internal: a service token is required, an access token is not enough.
	_, err = nobody.Check(ctx, connect.NewRequest(&authzv1.CheckRequest{Subject: "nobody", Permission: "audit.events.read"}))
	assert.Equal(t, connect.CodeUnauthenticated, code(err))

	// Another service reaches it through Consul with its service token.
	tokens, err := authn.NewServiceTokenSource("identitysvc", s.scfg)
	require.NoError(t, err)
	factory := rpc.NewClientFactory(reg, rpc.WithServiceTokens(tokens))
	t.Cleanup(factory.Close)
	internal := rpc.NewClient(factory, "authzsvc", authzv1connect.NewAuthzServiceClient)
	require.Eventually(t, func() bool {
		_, err := internal.Check(ctx, connect.NewRequest(&authzv1.CheckRequest{Subject: "x", Permission: "a.b.c"}))
		return err == nil
	}, 15*time.Second, 50*time.Millisecond, "the instance never became reachable through Consul")

	assign, err := root.AssignRole(ctx, connect.NewRequest(&authzv1.AssignRoleRequest{UserId: "dave", RoleId: role.GetId(), Resource: "org:acme"}))
	require.NoError(t, err)
	assert.Equal(t, "auditors", assign.Msg.GetBinding().GetRoleName())

	check := func(perm, resource string) bool {
		resp, err := internal.Check(ctx, connect.NewRequest(&authzv1.CheckRequest{Subject: "dave", Permission: perm, Resource: resource}))
		require.NoError(t, err)
		return resp.Msg.GetAllowed()
	}
	assert.True(t, check("audit.events.export", "org:acme"))
	assert.False(t, check("audit.events.export", "org:globex"))
	assert.False(t, check("audit.events.export", ""))

	batch, err := internal.CheckBatch(ctx, connect.NewRequest(&authzv1.CheckBatchRequest{Checks: []*authzv1.PermissionCheck{
		{Subject: "dave", Permission: "audit.events.read", Resource: "org:acme"},
		{Subject: "dave", Permission: "identity.users.read", Resource: "org:acme"},
		{Subject: "root", Permission: "identity.users.read"},
	}}))
	require.NoError(t, err)
	var got []bool
	for _, res := range batch.Msg.GetResults() {
		got = append(got, res.GetAllowed())
	}
	assert.Equal(t, []bool{true, false, true}, got)

	// Errors keep their codes across the wire.
	tests := []struct {
		name string
		call func() error
		want connect.Code
	}{
		{"invalid role name", func() error {
			_, err := root.CreateRole(ctx, connect.NewRequest(&authzv1.CreateRoleRequest{Name: "Not Valid"}))
			return err
		}, connect.CodeInvalidArgument},
		{"invalid permission", func() error {
			_, err := root.GrantPermissions(ctx, connect.NewRequest(&authzv1.GrantPermissionsRequest{RoleId: role.GetId(), Permissions: []string{"a.*.c"}}))
			return err
		}, connect.CodeInvalidArgument},
		{"invalid check", func() error {
			_, err := internal.Check(ctx, connect.NewRequest(&authzv1.CheckRequest{Subject: "dave", Permission: "audit.*"}))
			return err
		}, connect.CodeInvalidArgument},
		// Input PostgreSQL cannot take must be refused before it reaches a
		// query, or it would come back as Internal.
		{"description with NUL", func() error {
			_, err := root.CreateRole(ctx, connect.NewRequest(&authzv1.CreateRoleRequest{Name: "nul", Description: "a\x00b"}))
			return err
		}, connect.CodeInvalidArgument},
		{"page token with invalid UTF-8", func() error {
			_, err := root.ListUserRoles(ctx, connect.NewRequest(&authzv1.ListUserRolesRequest{UserId: "dave", PageToken: pageToken("dave", "\xff", "")}))
			return err
		}, connect.CodeInvalidArgument},
		{"name taken", func() error {
			_, err := root.CreateRole(ctx, connect.NewRequest(&authzv1.CreateRoleRequest{Name: "auditors"}))
			return err
		}, connect.CodeAlreadyExists},
		{"role ID in upper case", func() error {
			_, err := root.GetRole(ctx, connect.NewRequest(&authzv1.GetRoleRequest{RoleId: strings.ToUpper(role.GetId())}))
			return err
		}, connect.CodeInvalidArgument},
		{"unknown role", func() error {
			_, err := root.GetRole(ctx, connect.NewRequest(&authzv1.GetRoleRequest{RoleId: "00000000-0000-0000-0000-000000000001"}))
			return err
		}, connect.CodeNotFound},
		{"bound role", func() error {
			_, err := root.DeleteRole(ctx, connect.NewRequest(&authzv1.DeleteRoleRequest{RoleId: role.GetId()}))
			return err
		}, connect.CodeFailedPrecondition},
		{"built-in role", func() error {
			_, err := root.RevokePermissions(ctx, connect.NewRequest(&authzv1.RevokePermissionsRequest{
				RoleId: r.roleByName(t, authz.AdminRole).ID.String(), Permissions: []string{"*"}}))
			return err
		}, connect.CodeFailedPrecondition},
		{"someone else's permissions", func() error {
			_, err := nobody.ListUserPermissions(ctx, connect.NewRequest(&authzv1.ListUserPermissionsRequest{UserId: "dave"}))
			return err
		}, connect.CodePermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			require.Error(t, err)
			assert.Equal(t, tt.want, code(err), "%v", err)
		})
	}

	// Self-service: a user lists their own roles and permissions with no
	// permission, naming themselves or nobody.
	dave := s.asUser("dave")
	perms, err := dave.ListUserPermissions(ctx, connect.NewRequest(&authzv1.ListUserPermissionsRequest{Resource: "org:acme"}))
	require.NoError(t, err)
	assert.Equal(t, []string{"audit.events.*", "audit.events.read"}, perms.Msg.GetPermissions())
	roles, err := dave.ListUserRoles(ctx, connect.NewRequest(&authzv1.ListUserRolesRequest{UserId: "dave"}))
	require.NoError(t, err)
	require.Len(t, roles.Msg.GetBindings(), 1)
	assert.Equal(t, "org:acme", roles.Msg.GetBindings()[0].GetResource())

	deleted, err := root.DeleteRole(ctx, connect.NewRequest(&authzv1.DeleteRoleRequest{RoleId: role.GetId(), Cascade: true}))
	require.NoError(t, err)
	assert.EqualValues(t, 1, deleted.Msg.GetRemovedBindingCount())
	assert.False(t, check("audit.events.export", "org:acme"))
}
