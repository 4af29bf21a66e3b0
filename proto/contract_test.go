package proto_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"portcullis.dev/proto/access"
	optionsv1 "portcullis.dev/proto/options/v1"
)

// permissionPattern is the form of a permission in an access rule: concrete, three
// lower-case segments, `<service>.<resource>.<action>`.
var permissionPattern = regexp.MustCompile(`^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$`)

// portcullisServices returns every service in a registered portcullis/ file, found by
// walking the registry rather than trusting a list, so that a new service file cannot escape
// these checks.
func portcullisServices(t *testing.T) []protoreflect.ServiceDescriptor {
	t.Helper()
	var services []protoreflect.ServiceDescriptor
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		if strings.HasPrefix(fd.Path(), "portcullis/") {
			for i := range fd.Services().Len() {
				services = append(services, fd.Services().Get(i))
			}
		}
		return true
	})
	require.NotEmpty(t, services, "no Portcullis service registered")
	return services
}

func TestEveryServiceIsKnownToAccess(t *testing.T) {
	t.Parallel()
	var known []protoreflect.FullName
	for _, sd := range access.Services() {
		require.NotNil(t, sd)
		known = append(known, sd.FullName())
	}
	var found []protoreflect.FullName
	for _, sd := range portcullisServices(t) {
		found = append(found, sd.FullName())
	}
	assert.ElementsMatch(t, []protoreflect.FullName{
		"portcullis.identity.v1.IdentityService",
		"portcullis.auth.v1.AuthService",
		"portcullis.authz.v1.AuthzService",
		"portcullis.audit.v1.AuditService",
	}, found)
	assert.ElementsMatch(t, found, known, "access.Services must list every service")
}

func TestEveryMethodHasAnAccessRule(t *testing.T) {
	t.Parallel()
	for _, sd := range portcullisServices(t) {
		// portcullis.<service>.v1: a rule's permission belongs to the service that declares it.
		service := strings.Split(string(sd.FullName()), ".")[1]
		for _, p := range access.ForService(sd) {
			t.Run(p.Name, func(t *testing.T) {
				t.Parallel()
				rule := p.Rule
				require.NotEqual(t, optionsv1.Access_ACCESS_UNSPECIFIED, rule.Level,
					"%s has no (portcullis.options.v1.access) option", p.Name)
				require.Contains(t, optionsv1.Access_name, int32(rule.Level), "unknown access level")

				if rule.Level != optionsv1.Access_ACCESS_AUTHENTICATED {
					assert.Empty(t, rule.Permission, "only authenticated procedures name a permission")
					assert.Empty(t, rule.SubjectField, "only authenticated procedures are self-service")
				}
				if rule.Permission != "" {
					assert.Regexp(t, permissionPattern, rule.Permission)
					assert.True(t, strings.HasPrefix(rule.Permission, service+"."),
						"permission %q should start with %q", rule.Permission, service+".")
				}
				if rule.SubjectField != "" {
					assert.NotEmpty(t, rule.Permission, "subject_field without a permission means nothing")
					fd := p.Method.Input().Fields().ByName(protoreflect.Name(rule.SubjectField))
					if assert.NotNil(t, fd, "subject_field %q is not a field of %s", rule.SubjectField, p.Method.Input().FullName()) {
						assert.Equal(t, protoreflect.StringKind, fd.Kind(), "subject_field must be a string")
						assert.NotEqual(t, protoreflect.Repeated, fd.Cardinality(), "subject_field must be singular")
					}
				}
			})
		}
	}
}
