package authz_test

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/proto/access"
	optionsv1 "portcullis.dev/proto/options/v1"
)

var updateDocs = flag.Bool("update", false, "rewrite PERMISSIONS.md from the contracts")

const permissionsDoc = "../../PERMISSIONS.md"

// TestPermissionsDocIsCurrent keeps PERMISSIONS.md equal to what the
// contracts' access options say; run with -update after a contract change.
func TestPermissionsDocIsCurrent(t *testing.T) {
	t.Parallel()
	want := renderPermissions()
	if *updateDocs {
		require.NoError(t, os.WriteFile(permissionsDoc, []byte(want), 0o644))
	}
	got, err := os.ReadFile(permissionsDoc)
	require.NoError(t, err)
	assert.Equal(t, want, string(got), "PERMISSIONS.md is out of date: go test ./internal/authz -run TestPermissionsDocIsCurrent -update")
}

func renderPermissions() string {
	var b strings.Builder
	b.WriteString(`# Permissions

Generated from the contracts' access options (` + "`portcullis.dev/proto/access`" + `) by
` + "`go test ./internal/authz -run TestPermissionsDocIsCurrent -update`" + `; do not edit by hand.

A permission is ` + "`<service>.<resource>.<action>`" + `. A role may be granted a permission, a
wildcard over a service or a resource (` + "`identity.*`, `identity.users.*`" + `), or ` + "`*`" + ` (the
built-in ` + "`admin`" + ` role). The built-in ` + "`user`" + ` role grants nothing: what a user may do to
themselves is self-service (the "self-service field" below), which the kernel lets through
without a permission when the request names the caller or nobody.

Levels: **public** needs no token; **authenticated** needs an access token and, if a
permission is listed, that permission (unless self-service); **internal** needs a service
token and is never routed from outside.
`)
	var service string
	for _, p := range access.All() {
		svc := string(p.Method.Parent().FullName())
		if svc != service {
			service = svc
			fmt.Fprintf(&b, "\n## %s\n\n| procedure | level | permission | self-service field |\n|---|---|---|---|\n", svc)
		}
		perm := "—"
		if p.Rule.Permission != "" {
			perm = "`" + p.Rule.Permission + "`"
		}
		self := "—"
		if p.Rule.SubjectField != "" {
			self = "`" + p.Rule.SubjectField + "`"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", p.Method.Name(), level(p.Rule.Level), perm, self)
	}
	return b.String()
}

func level(l optionsv1.Access) string {
	switch l {
	case optionsv1.Access_ACCESS_PUBLIC:
		return "public"
	case optionsv1.Access_ACCESS_AUTHENTICATED:
		return "authenticated"
	case optionsv1.Access_ACCESS_INTERNAL:
		return "internal"
	}
	return "denied (no rule)"
}
