package authz

import (
	"context"
	"encoding/base64"
	"strings"
	"time"

	"github.com/google/uuid"

	"portcullis.dev/authzsvc/ent"
)

// Binding gives a user a role, everywhere (empty Resource) or on one
// resource.
type Binding struct {
	UserID    string
	RoleID    uuid.UUID
	RoleName  string
	Resource  string
	CreatedAt time.Time
}

// AssignRole binds a role to a user; an existing binding is returned
// unchanged.
func (s *Service) AssignRole(ctx context.Context, user, roleID, resource string) (Binding, error) {
	if err := checkUserID(user); err != nil {
		return Binding{}, err
	}
	rid, err := ParseID(roleID)
	if err != nil {
		return Binding{}, err
	}
	if err := checkResource(resource); err != nil {
		return Binding{}, err
	}
	limits, err := s.callerLimits(ctx)
	if err != nil {
		return Binding{}, err
	}
	var b Binding
	err = s.inTx(ctx, func(tx *ent.Tx, ch *changes) error {
		// Shared, against GrantPermissions' exclusive lock: a grant made
		// to the role meanwhile commits first and is judged here too, or
		// the binding, whose foreign key waits for it, would give what
		// the caller was never checked for.
		if _, err := tx.ExecContext(ctx, `SELECT 1 FROM roles WHERE id = $1 FOR SHARE`, rid); err != nil {
			return err
		}
		role, err := s.getRole(ctx, tx.Client(), rid)
		if err != nil {
			return err
		}
		if err := mayGive(limits, role.Permissions, resource); err != nil {
			return err
		}
		b, _, err = s.bind(ctx, tx, ch, user, rid, role.Name, resource)
		return err
	})
	return b, err
}

// bind inserts a binding unless it exists, and returns it.
func (s *Service) bind(ctx context.Context, tx *ent.Tx, ch *changes, user string, rid uuid.UUID, roleName, resource string) (Binding, bool, error) {
	b := Binding{UserID: user, RoleID: rid, RoleName: roleName, Resource: resource}
	err := queryRow(ctx, tx, `INSERT INTO bindings (user_id, role_id, resource, created_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id, role_id, resource) DO NOTHING RETURNING created_at`, []any{user, rid, resource, s.now()}, &b.CreatedAt)
	switch {
	case err == errNoRows:
		// Already bound: success, unchanged.
		err = queryRow(ctx, tx, `SELECT created_at FROM bindings WHERE user_id = $1 AND role_id = $2 AND resource = $3`,
			[]any{user, rid, resource}, &b.CreatedAt)
		return b, false, err
	case pqCode(err) == foreignKeyViolation:
		return Binding{}, false, notFound("role %s does not exist", rid)
	case err != nil:
		return Binding{}, false, err
	}
	ch.users = append(ch.users, user)
	meta := map[string]string{"role_id": rid.String(), "role_name": roleName}
	if resource != "" {
		meta["resource"] = resource
	}
	return b, true, s.audit.Record(ctx, tx, AuditEvent{Action: ActionRoleAssigned, Target: "user:" + user, Metadata: meta})
}

// UnassignRole removes a binding; one that does not exist is no error. A
// user may remove only a binding they could have made (see mayTake).
func (s *Service) UnassignRole(ctx context.Context, user, roleID, resource string) error {
	if err := checkUserID(user); err != nil {
		return err
	}
	rid, err := ParseID(roleID)
	if err != nil {
		return err
	}
	if err := checkResource(resource); err != nil {
		return err
	}
	limits, err := s.callerLimits(ctx)
	if err != nil {
		return err
	}
	return s.inTx(ctx, func(tx *ent.Tx, ch *changes) error {
		// Shared, as AssignRole takes it: a grant to the role made
		// meanwhile commits first and is judged here too.
		if _, err := tx.ExecContext(ctx, `SELECT 1 FROM roles WHERE id = $1 FOR SHARE`, rid); err != nil {
			return err
		}
		role, err := s.getRole(ctx, tx.Client(), rid)
		if KindOf(err) == KindNotFound {
			return nil // no role, no binding to it
		}
		if err != nil {
			return err
		}
		// Judged whether the binding exists or not: else the answer
		// would tell who holds a role to someone who may not read it.
		if err := mayTake(limits, role.Permissions, resource); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM bindings WHERE user_id = $1 AND role_id = $2 AND resource = $3`, user, rid, resource)
		if err != nil {
			return err
		}
		if affected(res) == 0 {
			return nil
		}
		ch.users = append(ch.users, user)
		meta := map[string]string{"role_id": rid.String()}
		if resource != "" {
			meta["resource"] = resource
		}
		return s.audit.Record(ctx, tx, AuditEvent{Action: ActionRoleUnassigned, Target: "user:" + user, Metadata: meta})
	})
}

// ListUserRoles pages through a user's bindings by role name, then
// resource.
func (s *Service) ListUserRoles(ctx context.Context, user string, page Page) (bindings []Binding, next string, err error) {
	if err := checkUserID(user); err != nil {
		return nil, "", err
	}
	size, err := page.size()
	if err != nil {
		return nil, "", err
	}
	var afterName, afterResource string
	if page.Token != "" {
		if afterName, afterResource, err = parseUserRolesToken(page.Token, user); err != nil {
			return nil, "", err
		}
	}
	rows, err := s.client.QueryContext(ctx, `SELECT b.role_id, r.name, b.resource, b.created_at
		FROM bindings b JOIN roles r ON r.id = b.role_id
		WHERE b.user_id = $1 AND (r.name, b.resource) > ($2, $3)
		ORDER BY r.name, b.resource LIMIT $4`, user, afterName, afterResource, size+1)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	for rows.Next() {
		b := Binding{UserID: user}
		if err := rows.Scan(&b.RoleID, &b.RoleName, &b.Resource, &b.CreatedAt); err != nil {
			return nil, "", err
		}
		bindings = append(bindings, b)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	if len(bindings) > size {
		bindings = bindings[:size]
		last := bindings[size-1]
		next = base64.RawURLEncoding.EncodeToString([]byte(user + "\x00" + last.RoleName + "\x00" + last.Resource))
	}
	return bindings, next, nil
}

// parseUserRolesToken returns the role name and resource after which the
// next page of user's bindings starts. The token comes back from the
// caller, who may have made it up: its parts must pass the checks the
// values it was made from passed, or they would reach the query unchecked.
func parseUserRolesToken(token, user string) (afterName, afterResource string, err error) {
	raw, err := base64.RawURLEncoding.DecodeString(token)
	parts := strings.Split(string(raw), "\x00")
	if err != nil || len(parts) != 3 || !ValidRoleName(parts[1]) || checkResource(parts[2]) != nil {
		return "", "", invalid("page_token is invalid")
	}
	if parts[0] != user {
		return "", "", invalid("page_token belongs to another user_id")
	}
	return parts[1], parts[2], nil
}

// ListUserPermissions returns the distinct permissions the user holds
// everywhere and, when resource is set, on it; sorted, wildcards as
// granted.
func (s *Service) ListUserPermissions(ctx context.Context, user, resource string) ([]string, error) {
	if err := checkUserID(user); err != nil {
		return nil, err
	}
	if err := checkResource(resource); err != nil {
		return nil, err
	}
	d, err := s.decisions(ctx, user)
	if err != nil {
		return nil, err
	}
	return d.permissions(resource), nil
}
