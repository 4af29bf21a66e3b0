package authz

import (
	"context"
	"fmt"
	"strings"

	"portcullis.dev/kernel/authn"
)

// mayGive refuses to let a user give away what they do not hold, as
// Kubernetes' RBAC does (its escalate and bind rule): a user may grant a
// role only permissions they hold everywhere (resource ""), since the role
// may be bound anywhere, and bind a role only where they hold every one of
// its permissions. Without it, authz.roles.write would let its holder grant
// `*` to a role of their own, and authz.bindings.write would let its holder
// bind themselves to admin.
//
// A wildcard is held only through a wildcard that covers it: holding every
// identity.users.* permission one by one does not let a user grant
// identity.users.*, which would cover permissions added later.
//
// Services, and calls with no principal (the service's own, in process),
// are not limited: the access policy has already vouched for them.
func (s *Service) mayGive(ctx context.Context, perms []string, resource string) error {
	p, ok := authn.FromContext(ctx)
	if !ok || p.Kind != authn.KindUser || len(perms) == 0 {
		return nil
	}
	d, err := s.decisions(ctx, p.Subject)
	if err != nil {
		return err
	}
	var missing []string
	for _, perm := range perms {
		// A wildcard `identity.*` is held as the prefix `identity.`, and
		// `*` as the empty one: allows looks a prefix up as it would a
		// permission.
		if !d.allows(strings.TrimSuffix(perm, "*"), resource) {
			missing = append(missing, perm)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	where := "everywhere"
	if resource != "" {
		where = "on " + truncate(resource)
	}
	list := strings.Join(missing[:min(len(missing), 5)], ", ")
	if len(missing) > 5 {
		list += fmt.Sprintf(" and %d more", len(missing)-5)
	}
	return permissionDenied("you can give only permissions you hold %s; you do not hold %s", where, list)
}
