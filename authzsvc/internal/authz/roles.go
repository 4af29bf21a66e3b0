package authz

import (
	"context"
	"encoding/base64"
	"errors"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/lib/pq"

	"portcullis.dev/authzsvc/ent"
	"portcullis.dev/authzsvc/ent/permission"
	"portcullis.dev/authzsvc/ent/role"
)

// Role is a named set of permissions.
type Role struct {
	ID          uuid.UUID
	Name        string
	Description string
	BuiltIn     bool
	// Permissions are sorted, each at most once.
	Permissions []string
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// NewRole is what CreateRole takes.
type NewRole struct {
	Name        string
	Description string
	Permissions []string
}

// RoleChange is what UpdateRole takes; nil fields keep their value.
type RoleChange struct {
	Name        *string
	Description *string
}

// Page asks for one page of a list.
type Page struct {
	// Size is the most items to return: zero means 50, more than 1000 means
	// 1000.
	Size int
	// Token is the previous page's NextToken; empty for the first page.
	Token string
}

func (p Page) size() (int, error) {
	switch {
	case p.Size < 0:
		return 0, invalid("page_size must not be negative")
	case p.Size == 0:
		return 50, nil
	default:
		return min(p.Size, 1000), nil
	}
}

// ParseID parses a role ID.
func ParseID(id string) (uuid.UUID, error) {
	u, err := uuid.Parse(id)
	if err != nil || u.String() != id {
		// One spelling, as for user IDs: the canonical form roles are
		// given in, and audited under.
		return uuid.Nil, invalid("role_id %q is not a role ID: want a UUID in canonical form (lower case, with hyphens)", truncate(id))
	}
	return u, nil
}

// CreateRole creates a custom role with its first permissions.
func (s *Service) CreateRole(ctx context.Context, in NewRole) (Role, error) {
	if err := checkRoleName(in.Name); err != nil {
		return Role{}, err
	}
	if err := checkDescription(in.Description); err != nil {
		return Role{}, err
	}
	perms, err := checkGrants(in.Permissions, true)
	if err != nil {
		return Role{}, err
	}
	limits, err := s.callerLimits(ctx)
	if err != nil {
		return Role{}, err
	}
	if err := mayGive(limits, perms, ""); err != nil {
		return Role{}, err
	}
	var id uuid.UUID
	err = s.inTx(ctx, func(tx *ent.Tx, _ *changes) error {
		now := s.now()
		r, err := tx.Role.Create().SetName(in.Name).SetDescription(in.Description).SetCreatedAt(now).SetUpdatedAt(now).Save(ctx)
		if err != nil {
			if pqCode(err) == uniqueViolation {
				return alreadyExists("a role named %q already exists", in.Name)
			}
			return err
		}
		id = r.ID
		if err := s.grant(ctx, tx, id, perms, now); err != nil {
			return err
		}
		slices.Sort(perms)
		// No one is bound to a new role: nothing to invalidate.
		return s.audit.Record(ctx, tx, AuditEvent{Action: ActionRoleCreated, Target: "role:" + id.String(),
			Metadata: withPermissions(map[string]string{"name": in.Name}, perms)})
	})
	if err != nil {
		return Role{}, err
	}
	return s.getRole(ctx, s.client, id)
}

// GetRole returns one role.
func (s *Service) GetRole(ctx context.Context, id string) (Role, error) {
	rid, err := ParseID(id)
	if err != nil {
		return Role{}, err
	}
	return s.getRole(ctx, s.client, rid)
}

func (s *Service) getRole(ctx context.Context, c *ent.Client, id uuid.UUID) (Role, error) {
	r, err := c.Role.Query().Where(role.ID(id)).WithPermissions().Only(ctx)
	if ent.IsNotFound(err) {
		return Role{}, notFound("role %s does not exist", id)
	}
	if err != nil {
		return Role{}, err
	}
	return toRole(r), nil
}

func toRole(r *ent.Role) Role {
	perms := make([]string, 0, len(r.Edges.Permissions))
	for _, p := range r.Edges.Permissions {
		perms = append(perms, p.Name)
	}
	slices.Sort(perms)
	return Role{ID: r.ID, Name: r.Name, Description: r.Description, BuiltIn: r.BuiltIn, Permissions: perms,
		CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt}
}

// ListRoles pages through roles by name.
func (s *Service) ListRoles(ctx context.Context, page Page) (roles []Role, next string, err error) {
	size, err := page.size()
	if err != nil {
		return nil, "", err
	}
	q := s.client.Role.Query().Order(role.ByName()).Limit(size + 1).
		WithPermissions(func(pq *ent.PermissionQuery) { pq.Order(permission.ByName()) })
	if page.Token != "" {
		after, err := base64.RawURLEncoding.DecodeString(page.Token)
		if err != nil || !ValidRoleName(string(after)) {
			return nil, "", invalid("page_token is invalid")
		}
		q = q.Where(role.NameGT(string(after)))
	}
	rs, err := q.All(ctx)
	if err != nil {
		return nil, "", err
	}
	if len(rs) > size {
		rs = rs[:size]
		next = base64.RawURLEncoding.EncodeToString([]byte(rs[size-1].Name))
	}
	roles = make([]Role, 0, len(rs))
	for _, r := range rs {
		roles = append(roles, toRole(r))
	}
	return roles, next, nil
}

// lockRole locks a role's row for the rest of tx, so that changes to one
// role serialise, and refuses built-in roles.
func (s *Service) lockRole(ctx context.Context, tx *ent.Tx, id uuid.UUID, what string) (name string, err error) {
	var builtIn bool
	err = queryRow(ctx, tx, `SELECT name, built_in FROM roles WHERE id = $1 FOR UPDATE`, []any{id}, &name, &builtIn)
	if err == errNoRows {
		return "", notFound("role %s does not exist", id)
	}
	if err != nil {
		return "", err
	}
	if builtIn {
		return "", failedPrecondition("role %q is built in and cannot be %s", name, what)
	}
	return name, nil
}

// UpdateRole renames a custom role or changes its description.
func (s *Service) UpdateRole(ctx context.Context, id string, change RoleChange) (Role, error) {
	rid, err := ParseID(id)
	if err != nil {
		return Role{}, err
	}
	if change.Name != nil {
		if err := checkRoleName(*change.Name); err != nil {
			return Role{}, err
		}
	}
	if change.Description != nil {
		if err := checkDescription(*change.Description); err != nil {
			return Role{}, err
		}
	}
	err = s.inTx(ctx, func(tx *ent.Tx, _ *changes) error {
		old, err := s.lockRole(ctx, tx, rid, "changed")
		if err != nil {
			return err
		}
		if change.Name == nil && change.Description == nil {
			return nil
		}
		u := tx.Role.UpdateOneID(rid).SetUpdatedAt(s.now())
		meta := map[string]string{"name": old}
		if change.Name != nil {
			u.SetName(*change.Name)
			meta["new_name"] = *change.Name
		}
		if change.Description != nil {
			u.SetDescription(*change.Description)
			meta["description_changed"] = "true"
		}
		if _, err := u.Save(ctx); err != nil {
			if pqCode(err) == uniqueViolation {
				return alreadyExists("a role named %q already exists", *change.Name)
			}
			return err
		}
		// Names and descriptions do not change decisions: nothing to
		// invalidate.
		return s.audit.Record(ctx, tx, AuditEvent{Action: ActionRoleUpdated, Target: "role:" + rid.String(), Metadata: meta})
	})
	if err != nil {
		return Role{}, err
	}
	return s.getRole(ctx, s.client, rid)
}

// DeleteRole deletes a custom role. A role still bound is deleted only
// with cascade, which deletes its bindings too, and only by a user who
// could unassign each of them (see mayTake); it returns how many.
func (s *Service) DeleteRole(ctx context.Context, id string, cascade bool) (removed int, err error) {
	rid, err := ParseID(id)
	if err != nil {
		return 0, err
	}
	limits, err := s.callerLimits(ctx)
	if err != nil {
		return 0, err
	}
	err = s.inTx(ctx, func(tx *ent.Tx, ch *changes) error {
		// The row lock also waits for, and then sees, a binding being
		// added concurrently: inserting one locks the role's row too.
		name, err := s.lockRole(ctx, tx, rid, "deleted")
		if err != nil {
			return err
		}
		var bound int
		if err := queryRow(ctx, tx, `SELECT count(*) FROM bindings WHERE role_id = $1`, []any{rid}, &bound); err != nil {
			return err
		}
		if bound > 0 && !cascade {
			return failedPrecondition("role %q is still bound to %d user(s); unassign it first or delete with cascade", name, bound)
		}
		if bound > 0 {
			// Each binding removed is recorded as UnassignRole records it:
			// the log says who lost access, not only how many.
			rows, err := tx.QueryContext(ctx, `DELETE FROM bindings WHERE role_id = $1 RETURNING user_id, resource`, rid)
			if err != nil {
				return err
			}
			var unbound [][2]string // user, resource
			for rows.Next() {
				var b [2]string
				if err := rows.Scan(&b[0], &b[1]); err != nil {
					return errors.Join(err, rows.Close())
				}
				unbound = append(unbound, b)
			}
			if err := errors.Join(rows.Err(), rows.Close()); err != nil {
				return err
			}
			removed = len(unbound)
			role, err := s.getRole(ctx, tx.Client(), rid)
			if err != nil {
				return err
			}
			resources := map[string]bool{}
			for _, b := range unbound {
				resources[b[1]] = true
			}
			for resource := range resources {
				// As if each binding were unassigned; a refusal rolls the
				// delete back.
				if err := mayTake(limits, role.Permissions, resource); err != nil {
					return err
				}
			}
			events := make([]AuditEvent, len(unbound))
			for i, b := range unbound {
				meta := map[string]string{"role_id": rid.String(), "role_name": name, "reason": "role_deleted"}
				if b[1] != "" {
					meta["resource"] = b[1]
				}
				events[i] = AuditEvent{Action: ActionRoleUnassigned, Target: "user:" + b[0], Metadata: meta}
			}
			if err := s.audit.Record(ctx, tx, events...); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM roles WHERE id = $1`, rid); err != nil {
			if pqCode(err) == foreignKeyViolation {
				return failedPrecondition("role %q is still bound; retry", name)
			}
			return err
		}
		ch.roles = append(ch.roles, rid)
		return s.audit.Record(ctx, tx, AuditEvent{Action: ActionRoleDeleted, Target: "role:" + rid.String(),
			Metadata: map[string]string{"name": name, "cascade": boolString(cascade), "removed_bindings": itoa(removed)}})
	})
	return removed, err
}

// GrantPermissions adds permissions to a custom role; those it has already
// are left alone.
func (s *Service) GrantPermissions(ctx context.Context, id string, perms []string) (Role, error) {
	return s.changeGrants(ctx, id, perms, true)
}

// RevokePermissions removes permissions from a custom role, compared as
// exact strings; those it does not have are ignored. A user may revoke only
// permissions they could grant (see mayTake), whether the role has them or
// not.
func (s *Service) RevokePermissions(ctx context.Context, id string, perms []string) (Role, error) {
	return s.changeGrants(ctx, id, perms, false)
}

func (s *Service) changeGrants(ctx context.Context, id string, perms []string, grant bool) (Role, error) {
	rid, err := ParseID(id)
	if err != nil {
		return Role{}, err
	}
	perms, err = checkGrants(perms, false)
	if err != nil {
		return Role{}, err
	}
	limits, err := s.callerLimits(ctx)
	if err != nil {
		return Role{}, err
	}
	change := mayGive
	if !grant {
		change = mayTake
	}
	if err := change(limits, perms, ""); err != nil {
		return Role{}, err
	}
	err = s.inTx(ctx, func(tx *ent.Tx, ch *changes) error {
		name, err := s.lockRole(ctx, tx, rid, "changed")
		if err != nil {
			return err
		}
		now := s.now()
		var changed []string
		action := ActionPermissionsGranted
		if grant {
			changed, err = s.grantReturning(ctx, tx, rid, perms, now)
		} else {
			action = ActionPermissionsRevoked
			changed, err = stringsOf(tx.QueryContext(ctx, `DELETE FROM permissions WHERE role_id = $1 AND name = ANY($2) RETURNING name`, rid, pq.Array(perms)))
		}
		if err != nil {
			return err
		}
		if len(changed) == 0 {
			return nil // idempotent: nothing changed, nothing to announce
		}
		if _, err := tx.ExecContext(ctx, `UPDATE roles SET updated_at = $2 WHERE id = $1`, rid, now); err != nil {
			return err
		}
		ch.roles = append(ch.roles, rid)
		slices.Sort(changed)
		return s.audit.Record(ctx, tx, AuditEvent{Action: action, Target: "role:" + rid.String(),
			Metadata: withPermissions(map[string]string{"name": name}, changed)})
	})
	if err != nil {
		return Role{}, err
	}
	return s.getRole(ctx, s.client, rid)
}

func (s *Service) grant(ctx context.Context, tx *ent.Tx, id uuid.UUID, perms []string, now time.Time) error {
	_, err := s.grantReturning(ctx, tx, id, perms, now)
	return err
}

// grantReturning inserts grants and returns those that were new.
func (s *Service) grantReturning(ctx context.Context, tx *ent.Tx, id uuid.UUID, perms []string, now time.Time) ([]string, error) {
	if len(perms) == 0 {
		return nil, nil
	}
	return stringsOf(tx.QueryContext(ctx, `INSERT INTO permissions (role_id, name, created_at)
		SELECT $1, unnest($2::text[]), $3 ON CONFLICT (role_id, name) DO NOTHING RETURNING name`, id, pq.Array(perms), now))
}
