package authz

import (
	"slices"
	"strings"

	"github.com/google/uuid"
)

// grantSet answers "does this set of grants cover a permission" with map
// lookups only. Concrete grants are stored as they are; a wildcard grant
// `identity.users.*` is stored as its prefix `identity.users.`, which no
// concrete permission equals, so one map holds both; `*` is a flag.
type grantSet struct {
	superuser bool
	keys      map[string]struct{}
}

func (g *grantSet) add(p string) {
	if p == Superuser {
		g.superuser = true
		return
	}
	if g.keys == nil {
		g.keys = make(map[string]struct{})
	}
	g.keys[strings.TrimSuffix(p, "*")] = struct{}{}
}

// allows reports whether the set grants the concrete permission p. The
// prefixes of p are substrings of it, so the lookups allocate nothing.
func (g *grantSet) allows(p string) bool {
	if g == nil {
		return false
	}
	if g.superuser {
		return true
	}
	if _, ok := g.keys[p]; ok {
		return true
	}
	for i := 0; i < len(p); i++ {
		if p[i] == '.' {
			if _, ok := g.keys[p[:i+1]]; ok {
				return true
			}
		}
	}
	return false
}

// decisions is one subject's decision index: what its bindings grant
// everywhere and on each resource. It is immutable once built, so readers
// share it without locks.
type decisions struct {
	global grantSet
	scoped map[string]*grantSet
	// granted lists the permissions as granted (wildcards unexpanded), for
	// ListUserPermissions: "" holds the global ones.
	granted map[string][]string
	// roles are the roles the subject is bound to, so that a change to a
	// role's grants drops exactly the subjects it touches.
	roles map[uuid.UUID]struct{}
}

// grant is one row of a subject's bindings joined with their roles' grants.
// Permission is empty for a role that grants nothing.
type grant struct {
	Role       uuid.UUID
	Resource   string
	Permission string
}

func buildDecisions(rows []grant) *decisions {
	d := &decisions{roles: make(map[uuid.UUID]struct{})}
	seen := make(map[[2]string]struct{}, len(rows))
	for _, r := range rows {
		d.roles[r.Role] = struct{}{}
		if r.Permission == "" {
			continue
		}
		if _, dup := seen[[2]string{r.Resource, r.Permission}]; dup {
			continue
		}
		seen[[2]string{r.Resource, r.Permission}] = struct{}{}
		if d.granted == nil {
			d.granted = make(map[string][]string)
		}
		d.granted[r.Resource] = append(d.granted[r.Resource], r.Permission)
		if r.Resource == "" {
			d.global.add(r.Permission)
			continue
		}
		if d.scoped == nil {
			d.scoped = make(map[string]*grantSet)
		}
		g := d.scoped[r.Resource]
		if g == nil {
			g = &grantSet{}
			d.scoped[r.Resource] = g
		}
		g.add(r.Permission)
	}
	return d
}

// allows decides one question: a global binding applies to every
// resource, a scoped one only to its own.
func (d *decisions) allows(permission, resource string) bool {
	if d.global.allows(permission) {
		return true
	}
	return resource != "" && d.scoped[resource].allows(permission)
}

// permissions returns the distinct permissions held everywhere and, when
// resource is set, on it; sorted.
func (d *decisions) permissions(resource string) []string {
	out := slices.Clone(d.granted[""])
	if resource != "" {
		out = append(out, d.granted[resource]...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func (d *decisions) hasRole(id uuid.UUID) bool {
	_, ok := d.roles[id]
	return ok
}
