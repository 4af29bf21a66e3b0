package authz

import (
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"

	"portcullis.dev/kernel/database"
)

// Limits on what callers send.
const (
	// MaxPermissionsPerCall bounds GrantPermissions, RevokePermissions,
	// CreateRole and CheckBatch.
	MaxPermissionsPerCall = 100
	maxDescription        = 500
	maxPermission         = 200
	maxSegment            = 63
	// maxUserID keeps "user:<id>", the target of the user's audit
	// events, within the 256 bytes the Audit service takes: an event it
	// refused would leave the change unaudited.
	maxUserID   = 256 - len("user:")
	maxResource = 255
)

// Superuser is the permission that grants every permission.
const Superuser = "*"

// roleName is the contract's format: lower-case letters, digits and
// hyphens, starting with a letter, at most 63 characters.
var roleName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

// ValidRoleName reports whether name is a valid role name.
func ValidRoleName(name string) bool { return roleName.MatchString(name) }

// checkRoleName returns an Invalid error for a bad role name.
func checkRoleName(name string) error {
	if !ValidRoleName(name) {
		return invalid("role name %q is invalid: use lower-case letters, digits and hyphens, starting with a letter, at most 63 characters", truncate(name))
	}
	return nil
}

// checkDescription refuses what PostgreSQL cannot store, as well as what is
// too long: either would otherwise fail in the store, as an error the caller
// is told to retry.
func checkDescription(d string) error {
	if !database.ValidText(d) || utf8.RuneCountInString(d) > maxDescription {
		return invalid("description must be valid UTF-8 without NUL, of at most %d characters", maxDescription)
	}
	return nil
}

// ValidPermission reports whether p is a concrete permission
// `<service>.<resource>.<action>`: three segments of lower-case letters,
// digits, hyphens and underscores, each starting with a letter. It is on
// the path of every check, so it is a byte loop rather than a regexp.
func ValidPermission(p string) bool {
	return len(p) <= maxPermission && segments(p) == 3
}

// ValidGrant reports whether p may be granted: a concrete permission, a
// concrete prefix of one or two segments followed by a wildcard segment
// (`identity.*`, `identity.users.*`), or `*` alone.
func ValidGrant(p string) bool {
	if p == Superuser {
		return true
	}
	if len(p) > maxPermission {
		return false
	}
	if prefix, ok := strings.CutSuffix(p, ".*"); ok {
		n := segments(prefix)
		return n == 1 || n == 2
	}
	return segments(p) == 3
}

// segments returns how many valid segments p has, or -1 if one is invalid.
func segments(p string) int {
	n, start := 0, 0
	for i := 0; i <= len(p); i++ {
		if i < len(p) && p[i] != '.' {
			continue
		}
		if !validSegment(p[start:i]) {
			return -1
		}
		n++
		start = i + 1
	}
	return n
}

func validSegment(s string) bool {
	if len(s) == 0 || len(s) > maxSegment || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// ValidResource reports whether r is a resource `<type>:<id>`: a type
// segment, a colon and an ID of printable ASCII without spaces, at most 255
// bytes in all.
func ValidResource(r string) bool {
	typ, id, ok := strings.Cut(r, ":")
	if !ok || len(r) > maxResource || !validSegment(typ) || id == "" {
		return false
	}
	return printable(id)
}

// ValidUserID reports whether id can be a user ID: 1 to 251 bytes of
// printable ASCII without spaces and, if it is a UUID, in its canonical
// form (lower case, hyphenated), the one tokens carry in sub: a binding
// to another spelling would never match, and unbinding one would succeed
// and change nothing. User IDs are the Identity service's; this only keeps
// junk out of the tables and the logs.
func ValidUserID(id string) bool {
	if id == "" || len(id) > maxUserID || !printable(id) {
		return false
	}
	if u, err := uuid.Parse(id); err == nil && u.String() != id {
		return false
	}
	return true
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// checkGrants validates and deduplicates permissions to grant or revoke.
func checkGrants(perms []string, allowEmpty bool) ([]string, error) {
	if len(perms) == 0 && !allowEmpty {
		return nil, invalid("at least one permission is required")
	}
	if len(perms) > MaxPermissionsPerCall {
		return nil, invalid("at most %d permissions per call", MaxPermissionsPerCall)
	}
	seen := make(map[string]struct{}, len(perms))
	out := make([]string, 0, len(perms))
	for _, p := range perms {
		if !ValidGrant(p) {
			return nil, invalid("permission %q is invalid: want <service>.<resource>.<action> in lower case, optionally ending in a wildcard segment (identity.users.*), or * alone", truncate(p))
		}
		if _, dup := seen[p]; !dup {
			seen[p] = struct{}{}
			out = append(out, p)
		}
	}
	return out, nil
}

func checkUserID(id string) error { return checkUser("user_id", id) }

// checkUser validates a user ID sent in field.
func checkUser(field, id string) error {
	if !ValidUserID(id) {
		return invalid("%s must be 1 to %d printable characters without spaces, and a UUID must be in canonical form (lower case, with hyphens)", field, maxUserID)
	}
	return nil
}

func checkResource(r string) error {
	if r != "" && !ValidResource(r) {
		return invalid("resource %q is invalid: want <type>:<id>, for example org:acme", truncate(r))
	}
	return nil
}

// checkQuestion validates one question of Check or CheckBatch.
func checkQuestion(q Question) error {
	if !ValidUserID(q.Subject) {
		return invalid("subject is required: 1 to %d printable characters without spaces", maxUserID)
	}
	if !ValidPermission(q.Permission) {
		return invalid("permission %q is invalid: want a concrete <service>.<resource>.<action>", truncate(q.Permission))
	}
	return checkResource(q.Resource)
}

// truncate keeps error messages short whatever the caller sent.
func truncate(s string) string {
	const n = 64
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
