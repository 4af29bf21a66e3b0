package authz

import (
	"context"
	"fmt"
	"strings"

	"portcullis.dev/kernel/authn"
)

// callerLimits returns what the calling user holds, which bounds what they
// may give and take away (see mayGive), or nil for a caller who is not
// limited: services, and calls with no principal (the service's own, in
// process), for whom the access policy has already vouched. Call it before
// a transaction: loading the decisions takes a connection of the pool, and
// a transaction waiting on the pool while it holds a connection could
// wait on others doing the same.
func (s *Service) callerLimits(ctx context.Context) (*decisions, error) {
	p, ok := authn.FromContext(ctx)
	if !ok || p.Kind != authn.KindUser {
		return nil, nil
	}
	return s.decisions(ctx, p.Subject)
}

// mayGive refuses to let a user, who holds limits, give away what they do
// not hold, as Kubernetes' RBAC does (its escalate and bind rule): a user
// may grant a role only permissions they hold everywhere (resource ""),
// since the role may be bound anywhere, and bind a role only where they
// hold every one of its permissions. Without it, authz.roles.write would
// let its holder grant `*` to a role of their own, and
// authz.bindings.write would let its holder bind themselves to admin.
//
// A wildcard is held only through a wildcard that covers it: holding every
// identity.users.* permission one by one does not let a user grant
// identity.users.*, which would cover permissions added later.
func mayGive(limits *decisions, perms []string, resource string) error {
	return mayChange(limits, "give", perms, resource)
}

// mayTake is mayGive's rule for taking access away (unbinding a role,
// revoking a role's permissions, deleting a bound role): a user may take
// away only what they could have given. Without it, authz.bindings.write
// would let its holder unbind every administrator from admin, and
// authz.roles.write would let its holder empty a role they could not
// have made, as Identity's outrank check keeps a helpdesk from disabling
// an administrator.
func mayTake(limits *decisions, perms []string, resource string) error {
	return mayChange(limits, "take away", perms, resource)
}

func mayChange(d *decisions, verb string, perms []string, resource string) error {
	if d == nil || len(perms) == 0 {
		return nil
	}
	var missing []string
	for _, perm := range perms {
		if !d.holds(perm, resource) {
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
	return permissionDenied("you can %s only permissions you hold %s; you do not hold %s", verb, where, list)
}

// holds reports whether d holds grant — a permission, a wildcard or `*` —
// on resource ("" for everywhere). A wildcard `identity.*` is held as the
// prefix `identity.`, and `*` as the empty one: allows looks a prefix up as
// it would a permission.
func (d *decisions) holds(grant, resource string) bool {
	return d.allows(strings.TrimSuffix(grant, "*"), resource)
}

// Covers reports whether subject holds every permission target holds,
// everywhere and on each resource target holds any on: what a service asks
// before letting subject put target's account in their hands (changing its
// email, where its password resets go). A user holds what they hold, so
// anyone covers themselves.
func (s *Service) Covers(ctx context.Context, subject, target string) (bool, error) {
	if err := checkUser("subject", subject); err != nil {
		return false, err
	}
	if err := checkUser("target", target); err != nil {
		return false, err
	}
	if subject == target {
		return true, nil
	}
	d, err := s.decisions(ctx, subject)
	if err != nil {
		return false, err
	}
	t, err := s.decisions(ctx, target)
	if err != nil {
		return false, err
	}
	for resource, grants := range t.granted {
		for _, g := range grants {
			if !d.holds(g, resource) {
				return false, nil
			}
		}
	}
	return true, nil
}
