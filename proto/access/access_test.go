package access_test

import (
	"testing"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"

	"portcullis.dev/proto/access"
	"portcullis.dev/proto/audit/v1/auditv1connect"
	"portcullis.dev/proto/auth/v1/authv1connect"
	authzv1 "portcullis.dev/proto/authz/v1"
	"portcullis.dev/proto/authz/v1/authzv1connect"
	identityv1 "portcullis.dev/proto/identity/v1"
	"portcullis.dev/proto/identity/v1/identityv1connect"
	optionsv1 "portcullis.dev/proto/options/v1"
)

func TestForProcedure(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		procedure string
		want      access.Rule
		wantFound bool
	}{
		{
			name:      "public",
			procedure: identityv1connect.IdentityServiceCreateUserProcedure,
			want:      access.Rule{Level: optionsv1.Access_ACCESS_PUBLIC},
			wantFound: true,
		},
		{
			name:      "authenticated with permission",
			procedure: identityv1connect.IdentityServiceListUsersProcedure,
			want:      access.Rule{Level: optionsv1.Access_ACCESS_AUTHENTICATED, Permission: "identity.users.read"},
			wantFound: true,
		},
		{
			name:      "authenticated self-service",
			procedure: identityv1connect.IdentityServiceGetUserProcedure,
			want: access.Rule{
				Level:        optionsv1.Access_ACCESS_AUTHENTICATED,
				Permission:   "identity.users.read",
				SubjectField: "user_id",
			},
			wantFound: true,
		},
		{
			name:      "authenticated without permission",
			procedure: identityv1connect.IdentityServiceGetMeProcedure,
			want:      access.Rule{Level: optionsv1.Access_ACCESS_AUTHENTICATED},
			wantFound: true,
		},
		{
			name:      "internal",
			procedure: authzv1connect.AuthzServiceCheckProcedure,
			want:      access.Rule{Level: optionsv1.Access_ACCESS_INTERNAL},
			wantFound: true,
		},
		{
			name:      "server streaming",
			procedure: auditv1connect.AuditServiceExportEventsProcedure,
			want:      access.Rule{Level: optionsv1.Access_ACCESS_AUTHENTICATED, Permission: "audit.events.export"},
			wantFound: true,
		},
		{
			name:      "unknown method of a known service",
			procedure: "/portcullis.identity.v1.IdentityService/Impersonate",
		},
		{
			name:      "unknown service",
			procedure: "/portcullis.billing.v1.BillingService/Charge",
		},
		{
			name:      "message, not a service",
			procedure: "/portcullis.identity.v1.User/GetUser",
		},
		{
			name:      "reflection form instead of Connect form",
			procedure: "portcullis.identity.v1.IdentityService.GetUser",
		},
		{
			name:      "missing method",
			procedure: "/portcullis.identity.v1.IdentityService/",
		},
		{
			name: "empty",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, found := access.ForProcedure(tt.procedure)
			assert.Equal(t, tt.wantFound, found)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestForMethodWithoutOptionDenies(t *testing.T) {
	t.Parallel()
	// A service compiled without the access option, as a contract someone forgot to annotate
	// would be.
	fdp := &descriptorpb.FileDescriptorProto{
		Name:    proto.String("forgetful/v1/forgetful.proto"),
		Package: proto.String("forgetful.v1"),
		Syntax:  proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("PingRequest")},
			{Name: proto.String("PingResponse")},
		},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("ForgetfulService"),
			Method: []*descriptorpb.MethodDescriptorProto{{
				Name:       proto.String("Ping"),
				InputType:  proto.String(".forgetful.v1.PingRequest"),
				OutputType: proto.String(".forgetful.v1.PingResponse"),
			}},
		}},
	}
	fd, err := protodesc.NewFile(fdp, nil)
	require.NoError(t, err)
	md := fd.Services().Get(0).Methods().Get(0)

	rule := access.ForMethod(md)
	assert.Equal(t, access.Rule{}, rule)
	assert.Equal(t, optionsv1.Access_ACCESS_UNSPECIFIED, rule.Level)
	assert.Equal(t, access.Rule{}, access.ForMethod(nil))
}

func TestForSpec(t *testing.T) {
	t.Parallel()
	getUser := identityv1.File_portcullis_identity_v1_identity_proto.
		Services().ByName("IdentityService").Methods().ByName("GetUser")
	require.NotNil(t, getUser)
	want := access.Rule{
		Level:        optionsv1.Access_ACCESS_AUTHENTICATED,
		Permission:   "identity.users.read",
		SubjectField: "user_id",
	}

	tests := []struct {
		name string
		spec connect.Spec
		want access.Rule
	}{
		{
			name: "schema is the method descriptor",
			spec: connect.Spec{Schema: getUser, Procedure: "/ignored.v1.IgnoredService/Ignored"},
			want: want,
		},
		{
			name: "no schema falls back to the procedure",
			spec: connect.Spec{Procedure: identityv1connect.IdentityServiceGetUserProcedure},
			want: want,
		},
		{
			name: "unknown procedure denies",
			spec: connect.Spec{Procedure: "/portcullis.identity.v1.IdentityService/Impersonate"},
			want: access.Rule{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tt.want, access.ForSpec(tt.spec))
		})
	}
}

func TestNeedsPermission(t *testing.T) {
	t.Parallel()
	getUser, ok := access.ForProcedure(identityv1connect.IdentityServiceGetUserProcedure)
	require.True(t, ok)
	listUsers, ok := access.ForProcedure(identityv1connect.IdentityServiceListUsersProcedure)
	require.True(t, ok)
	getMe, ok := access.ForProcedure(identityv1connect.IdentityServiceGetMeProcedure)
	require.True(t, ok)
	misconfigured := access.Rule{
		Level:        optionsv1.Access_ACCESS_AUTHENTICATED,
		Permission:   "authz.roles.read",
		SubjectField: "permissions", // a repeated field cannot name a subject
	}

	tests := []struct {
		name   string
		rule   access.Rule
		caller string
		req    proto.Message
		want   bool
	}{
		{"self by ID", getUser, "u1", &identityv1.GetUserRequest{UserId: "u1"}, false},
		{"self by empty ID", getUser, "u1", &identityv1.GetUserRequest{}, false},
		{"another user", getUser, "u1", &identityv1.GetUserRequest{UserId: "u2"}, true},
		{"no caller", getUser, "", &identityv1.GetUserRequest{}, true},
		{"nil request", getUser, "u1", nil, true},
		{"not self-service", listUsers, "u1", &identityv1.ListUsersRequest{}, true},
		{"no permission", getMe, "u1", &identityv1.GetMeRequest{}, false},
		{"misconfigured subject field", misconfigured, "u1", &authzv1.GetRoleRequest{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tt.want, tt.rule.NeedsPermission(tt.caller, tt.req))
		})
	}
}

func TestAll(t *testing.T) {
	t.Parallel()
	procs := access.All()

	byName := make(map[string]access.Procedure, len(procs))
	for _, p := range procs {
		require.NotContains(t, byName, p.Name, "duplicate procedure")
		byName[p.Name] = p
	}
	for _, name := range []string{
		identityv1connect.IdentityServiceVerifyCredentialsProcedure,
		authv1connect.AuthServiceGetJWKSProcedure,
		authzv1connect.AuthzServiceCheckBatchProcedure,
		auditv1connect.AuditServiceRecordProcedure,
	} {
		p, ok := byName[name]
		if assert.True(t, ok, name) {
			rule, found := access.ForProcedure(name)
			require.True(t, found)
			assert.Equal(t, rule, p.Rule, name)
			assert.Equal(t, name, "/"+string(p.Method.Parent().FullName())+"/"+string(p.Method.Name()))
		}
	}
	assert.Nil(t, access.ForService(nil))
}

func TestRuleString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		rule access.Rule
		want string
	}{
		{access.Rule{}, "{level: ACCESS_UNSPECIFIED}"},
		{access.Rule{Level: optionsv1.Access_ACCESS_PUBLIC}, "{level: ACCESS_PUBLIC}"},
		{
			access.Rule{Level: optionsv1.Access_ACCESS_AUTHENTICATED, Permission: "auth.sessions.read", SubjectField: "user_id"},
			`{level: ACCESS_AUTHENTICATED, permission: "auth.sessions.read", subject_field: "user_id"}`,
		},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, tt.rule.String())
	}
}
