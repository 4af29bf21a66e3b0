package authz_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"portcullis.dev/authzsvc/internal/authz"
	"portcullis.dev/proto/access"
)

func TestNames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		valid func(string) bool
		in    string
		want  bool
	}{
		{"role plain", authz.ValidRoleName, "user-admin", true},
		{"role one letter", authz.ValidRoleName, "a", true},
		{"role 63", authz.ValidRoleName, "a" + strings.Repeat("b", 62), true},
		{"role 64", authz.ValidRoleName, "a" + strings.Repeat("b", 63), false},
		{"role empty", authz.ValidRoleName, "", false},
		{"role upper", authz.ValidRoleName, "Admin", false},
		{"role digit first", authz.ValidRoleName, "1admin", false},
		{"role space", authz.ValidRoleName, "user admin", false},
		{"role underscore", authz.ValidRoleName, "user_admin", false},

		{"perm concrete", authz.ValidPermission, "identity.users.read", true},
		{"perm with digits and _-", authz.ValidPermission, "svc2.user_keys.re-read", true},
		{"perm wildcard not concrete", authz.ValidPermission, "identity.users.*", false},
		{"perm star not concrete", authz.ValidPermission, "*", false},
		{"perm two segments", authz.ValidPermission, "identity.users", false},
		{"perm four segments", authz.ValidPermission, "a.b.c.d", false},
		{"perm empty segment", authz.ValidPermission, "identity..read", false},
		{"perm upper", authz.ValidPermission, "identity.Users.read", false},
		{"perm trailing dot", authz.ValidPermission, "identity.users.", false},
		{"perm empty", authz.ValidPermission, "", false},

		{"grant concrete", authz.ValidGrant, "identity.users.read", true},
		{"grant resource wildcard", authz.ValidGrant, "identity.users.*", true},
		{"grant service wildcard", authz.ValidGrant, "identity.*", true},
		{"grant superuser", authz.ValidGrant, "*", true},
		{"grant wildcard in middle", authz.ValidGrant, "identity.*.read", false},
		{"grant partial wildcard", authz.ValidGrant, "identity.us*", false},
		{"grant wildcard after three", authz.ValidGrant, "identity.users.read.*", false},
		{"grant star dot", authz.ValidGrant, "*.*", false},
		{"grant long", authz.ValidGrant, "a." + strings.Repeat("b", 200) + ".c", false},

		{"resource", authz.ValidResource, "org:acme", true},
		{"resource uuid", authz.ValidResource, "project:0b7c-11:x", true},
		{"resource no colon", authz.ValidResource, "acme", false},
		{"resource no id", authz.ValidResource, "org:", false},
		{"resource bad type", authz.ValidResource, "Org:acme", false},
		{"resource space", authz.ValidResource, "org:ac me", false},

		{"user", authz.ValidUserID, "0195f1d2-7b1c-7cc0-9d52-1f2a3b4c5d6e", true},
		{"user empty", authz.ValidUserID, "", false},
		{"user control", authz.ValidUserID, "u\n1", false},
		{"user long", authz.ValidUserID, strings.Repeat("u", 256), false},
		// "user:" and the ID are an audit event's target, at most 256 bytes.
		{"user longest", authz.ValidUserID, strings.Repeat("u", 251), true},
		{"user too long for an audit target", authz.ValidUserID, strings.Repeat("u", 252), false},
		{"user opaque", authz.ValidUserID, "admin-1", true},
		// Another spelling of a UUID would never match a token's sub.
		{"user UUID in upper case", authz.ValidUserID, "0195F1D2-7B1C-7CC0-9D52-1F2A3B4C5D6E", false},
		{"user UUID in braces", authz.ValidUserID, "{0195f1d2-7b1c-7cc0-9d52-1f2a3b4c5d6e}", false},
		{"user UUID as a URN", authz.ValidUserID, "urn:uuid:0195f1d2-7b1c-7cc0-9d52-1f2a3b4c5d6e", false},
		{"user UUID without hyphens", authz.ValidUserID, "0195f1d27b1c7cc09d521f2a3b4c5d6e", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.valid(tt.in), "%q", tt.in)
		})
	}
}

// Every permission a contract asks for must be one the grammar accepts, or
// no grant could ever satisfy it.
func TestContractPermissionsAreConcrete(t *testing.T) {
	t.Parallel()
	for _, p := range access.All() {
		if p.Rule.Permission != "" {
			assert.True(t, authz.ValidPermission(p.Rule.Permission), "%s needs %q", p.Name, p.Rule.Permission)
		}
	}
}
