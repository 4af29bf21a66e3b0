package auth

import "github.com/google/uuid"

// checkID refuses id, named field in the request, unless it is a UUID in
// canonical form: user IDs (Identity's) and session IDs (this service's)
// have no other. They are stored and compared as text, here and by the
// kernel's access policy, which decides from the text whether a request
// names its caller: another spelling of the same UUID would find nothing
// here, or pass the policy as someone else. It also keeps bytes PostgreSQL
// refuses in text (NUL, invalid UTF-8) out of the queries.
func checkID(field, id string) error {
	if !canonicalUUID(id) {
		return invalid(field, "must be a UUID in canonical form (lower case, with hyphens)")
	}
	return nil
}

// canonicalUUID reports whether s is a UUID as uuid.UUID.String spells it.
func canonicalUUID(s string) bool {
	id, err := uuid.Parse(s)
	return err == nil && id.String() == s
}
