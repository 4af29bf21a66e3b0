package authz_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/authzsvc/internal/authz"
	"portcullis.dev/kernel/kerneltest"
)

func TestWildcardAndSuperuserGrants(t *testing.T) {
	t.Parallel()
	r := newReplica(t)
	readers := r.mustRole(t, "user-readers", "identity.users.read")
	users := r.mustRole(t, "user-admins", "identity.users.*")
	identity := r.mustRole(t, "identity-admins", "identity.*")
	r.mustAssign(t, "reader", readers, "")
	r.mustAssign(t, "users", users, "")
	r.mustAssign(t, "identity", identity, "")
	r.mustAssign(t, "root", r.roleByName(t, authz.AdminRole), "")

	tests := []struct {
		user, perm string
		want       bool
	}{
		{"reader", "identity.users.read", true},
		{"reader", "identity.users.write", false},
		{"reader", "identity.groups.read", false},
		{"users", "identity.users.read", true},
		{"users", "identity.users.delete", true},
		{"users", "identity.groups.read", false},
		{"users", "identityx.users.read", false},
		{"identity", "identity.groups.read", true},
		{"identity", "authz.roles.write", false},
		{"root", "authz.roles.write", true},
		{"root", "anything.at.all", true},
		{"nobody", "identity.users.read", false},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, r.check(t, tt.user, tt.perm, ""), "%s %s", tt.user, tt.perm)
		// A global binding applies on every resource too.
		assert.Equal(t, tt.want, r.check(t, tt.user, tt.perm, "org:acme"), "%s %s on org:acme", tt.user, tt.perm)
	}

	perms, err := r.ListUserPermissions(t.Context(), "users", "")
	require.NoError(t, err)
	assert.Equal(t, []string{"identity.users.*"}, perms)
}

func TestScopedBindings(t *testing.T) {
	t.Parallel()
	r := newReplica(t)
	editors := r.mustRole(t, "editors", "docs.pages.write")
	viewers := r.mustRole(t, "viewers", "docs.pages.read")
	r.mustAssign(t, "alice", editors, "org:acme")
	r.mustAssign(t, "alice", viewers, "")

	assert.True(t, r.check(t, "alice", "docs.pages.write", "org:acme"))
	assert.False(t, r.check(t, "alice", "docs.pages.write", "org:globex"), "scoped binding leaks to another resource")
	assert.False(t, r.check(t, "alice", "docs.pages.write", ""), "scoped binding leaks to unscoped checks")
	assert.True(t, r.check(t, "alice", "docs.pages.read", "org:globex"), "global binding must apply on every resource")

	perms, err := r.ListUserPermissions(t.Context(), "alice", "org:acme")
	require.NoError(t, err)
	assert.Equal(t, []string{"docs.pages.read", "docs.pages.write"}, perms)
	perms, err = r.ListUserPermissions(t.Context(), "alice", "")
	require.NoError(t, err)
	assert.Equal(t, []string{"docs.pages.read"}, perms)

	// Unassigning the scoped binding only removes that one.
	require.NoError(t, r.UnassignRole(t.Context(), "alice", editors.ID.String(), "org:acme"))
	assert.False(t, r.check(t, "alice", "docs.pages.write", "org:acme"))
	assert.True(t, r.check(t, "alice", "docs.pages.read", ""))
}

func TestDeleteBoundRole(t *testing.T) {
	t.Parallel()
	r := newReplica(t)
	ops := r.mustRole(t, "ops", "infra.hosts.reboot")
	r.mustAssign(t, "u1", ops, "")
	r.mustAssign(t, "u2", ops, "org:acme")
	require.True(t, r.check(t, "u1", "infra.hosts.reboot", ""))

	_, err := r.DeleteRole(t.Context(), ops.ID.String(), false)
	require.Error(t, err)
	assert.Equal(t, authz.KindFailedPrecondition, authz.KindOf(err))
	assert.Contains(t, err.Error(), "still bound to 2")
	assert.True(t, r.check(t, "u1", "infra.hosts.reboot", ""), "a refused delete must change nothing")

	removed, err := r.DeleteRole(t.Context(), ops.ID.String(), true)
	require.NoError(t, err)
	assert.Equal(t, 2, removed)
	// Who lost access is in the audit log, one event for each binding.
	var unassigned int
	require.NoError(t, r.db.DB.QueryRowContext(t.Context(), `SELECT count(*) FROM outbox_events
		WHERE position(convert_to('authz.role.unassigned', 'UTF8') in payload) > 0`).Scan(&unassigned))
	assert.Equal(t, 2, unassigned)
	assert.False(t, r.check(t, "u1", "infra.hosts.reboot", ""))
	assert.False(t, r.check(t, "u2", "infra.hosts.reboot", "org:acme"))
	_, err = r.GetRole(t.Context(), ops.ID.String())
	assert.Equal(t, authz.KindNotFound, authz.KindOf(err))

	// An unbound role needs no cascade.
	lone := r.mustRole(t, "lone")
	removed, err = r.DeleteRole(t.Context(), lone.ID.String(), false)
	require.NoError(t, err)
	assert.Zero(t, removed)
}

func TestBuiltInRolesAreProtected(t *testing.T) {
	t.Parallel()
	r := newReplica(t)
	admin := r.roleByName(t, authz.AdminRole)
	user := r.roleByName(t, authz.UserRole)
	assert.True(t, admin.BuiltIn)
	assert.Equal(t, []string{"*"}, admin.Permissions)
	assert.True(t, user.BuiltIn)
	assert.Empty(t, user.Permissions)

	name := "root"
	for _, role := range []authz.Role{admin, user} {
		ctx := t.Context()
		calls := map[string]func() error{
			"delete":       func() error { _, err := r.DeleteRole(ctx, role.ID.String(), true); return err },
			"rename":       func() error { _, err := r.UpdateRole(ctx, role.ID.String(), authz.RoleChange{Name: &name}); return err },
			"revoke":       func() error { _, err := r.RevokePermissions(ctx, role.ID.String(), []string{"*"}); return err },
			"grant":        func() error { _, err := r.GrantPermissions(ctx, role.ID.String(), []string{"x.y.z"}); return err },
			"empty update": func() error { _, err := r.UpdateRole(ctx, role.ID.String(), authz.RoleChange{}); return err },
		}
		for what, call := range calls {
			err := call()
			require.Error(t, err, "%s %s", what, role.Name)
			assert.Equal(t, authz.KindFailedPrecondition, authz.KindOf(err), "%s %s: %v", what, role.Name, err)
		}
	}
	assert.Equal(t, []string{"*"}, r.roleByName(t, authz.AdminRole).Permissions)

	// A custom role cannot take a built-in name.
	_, err := r.CreateRole(t.Context(), authz.NewRole{Name: authz.AdminRole})
	assert.Equal(t, authz.KindAlreadyExists, authz.KindOf(err))
}

func TestBootstrapIsIdempotentAcrossReplicas(t *testing.T) {
	t.Parallel()
	dsn, schema := newSchema(t)
	var wg sync.WaitGroup
	replicas := make([]*replica, 3)
	for i := range replicas {
		wg.Go(func() {
			replicas[i] = startReplica(t, dsn, schema, authz.Config{BootstrapAdmins: []string{"first-admin"}})
		})
	}
	wg.Wait()
	roles, _, err := replicas[0].ListRoles(t.Context(), authz.Page{})
	require.NoError(t, err)
	require.Len(t, roles, 2)
	assert.Equal(t, authz.AdminRole, roles[0].Name)
	assert.Equal(t, authz.UserRole, roles[1].Name)
	bindings, _, err := replicas[1].ListUserRoles(t.Context(), "first-admin", authz.Page{})
	require.NoError(t, err)
	require.Len(t, bindings, 1)
	assert.Equal(t, authz.AdminRole, bindings[0].RoleName)
	assert.True(t, replicas[2].check(t, "first-admin", "authz.roles.write", ""))
	require.NoError(t, replicas[2].Bootstrap(t.Context()))

	// The admin role's grant, tampered with in the database, is restored
	// at the next start, and the repair is in the audit log.
	restored := func() (n int) {
		require.NoError(t, replicas[0].db.DB.QueryRowContext(t.Context(), `SELECT count(*) FROM outbox_events
			WHERE position(convert_to('restored', 'UTF8') in payload) > 0`).Scan(&n))
		return n
	}
	require.Zero(t, restored())
	_, err = replicas[0].db.DB.ExecContext(t.Context(), `DELETE FROM permissions WHERE role_id = $1`, roles[0].ID)
	require.NoError(t, err)
	require.NoError(t, replicas[2].Bootstrap(t.Context()))
	assert.Equal(t, []string{"*"}, replicas[0].roleByName(t, authz.AdminRole).Permissions)
	assert.Equal(t, 1, restored())
}

func TestAdminCallsAreIdempotent(t *testing.T) {
	t.Parallel()
	r := newReplica(t)
	role := r.mustRole(t, "support", "identity.users.read")

	again, err := r.GrantPermissions(t.Context(), role.ID.String(), []string{"identity.users.read", "identity.users.read"})
	require.NoError(t, err)
	assert.Equal(t, []string{"identity.users.read"}, again.Permissions)
	assert.Equal(t, role.UpdatedAt, again.UpdatedAt, "a grant that changes nothing must not touch the role")

	grown, err := r.GrantPermissions(t.Context(), role.ID.String(), []string{"identity.users.write", "identity.users.read"})
	require.NoError(t, err)
	assert.Equal(t, []string{"identity.users.read", "identity.users.write"}, grown.Permissions)

	// Revoking compares exact strings and ignores what is not granted.
	wild, err := r.GrantPermissions(t.Context(), role.ID.String(), []string{"audit.*"})
	require.NoError(t, err)
	assert.Contains(t, wild.Permissions, "audit.*")
	shrunk, err := r.RevokePermissions(t.Context(), role.ID.String(), []string{"audit.events.read", "identity.users.write", "never.granted.this"})
	require.NoError(t, err)
	assert.Equal(t, []string{"audit.*", "identity.users.read"}, shrunk.Permissions)

	b1, err := r.AssignRole(t.Context(), "u1", role.ID.String(), "org:acme")
	require.NoError(t, err)
	b2, err := r.AssignRole(t.Context(), "u1", role.ID.String(), "org:acme")
	require.NoError(t, err)
	assert.Equal(t, b1.CreatedAt.UTC(), b2.CreatedAt.UTC())
	assert.Equal(t, "support", b2.RoleName)

	require.NoError(t, r.UnassignRole(t.Context(), "u1", role.ID.String(), "org:acme"))
	require.NoError(t, r.UnassignRole(t.Context(), "u1", role.ID.String(), "org:acme"))

	desc := "Support staff"
	newName := "support-staff"
	updated, err := r.UpdateRole(t.Context(), role.ID.String(), authz.RoleChange{Name: &newName, Description: &desc})
	require.NoError(t, err)
	assert.Equal(t, "support-staff", updated.Name)
	assert.Equal(t, "Support staff", updated.Description)
	taken := authz.AdminRole
	_, err = r.UpdateRole(t.Context(), role.ID.String(), authz.RoleChange{Name: &taken})
	assert.Equal(t, authz.KindAlreadyExists, authz.KindOf(err))
}

func TestInvalidInputIsRefused(t *testing.T) {
	t.Parallel()
	r := newReplica(t)
	role := r.mustRole(t, "valid")
	id := role.ID.String()
	ctx := t.Context()
	long := make([]string, authz.MaxPermissionsPerCall+1)
	for i := range long {
		long[i] = fmt.Sprintf("svc.res.a%d", i)
	}
	badName := "Bad Name"
	nulDesc := "a\x00b"
	tests := map[string]func() error{
		"create bad name":   func() error { _, err := r.CreateRole(ctx, authz.NewRole{Name: badName}); return err },
		"create empty name": func() error { _, err := r.CreateRole(ctx, authz.NewRole{}); return err },
		"create bad permission": func() error {
			_, err := r.CreateRole(ctx, authz.NewRole{Name: "x", Permissions: []string{"Identity.users.read"}})
			return err
		},
		"create long desc": func() error {
			_, err := r.CreateRole(ctx, authz.NewRole{Name: "x", Description: string(make([]byte, 501))})
			return err
		},
		"create desc with NUL": func() error {
			_, err := r.CreateRole(ctx, authz.NewRole{Name: "x", Description: nulDesc})
			return err
		},
		"update desc with NUL": func() error {
			_, err := r.UpdateRole(ctx, id, authz.RoleChange{Description: &nulDesc})
			return err
		},
		"get bad id":          func() error { _, err := r.GetRole(ctx, "not-a-uuid"); return err },
		"rename bad":          func() error { _, err := r.UpdateRole(ctx, id, authz.RoleChange{Name: &badName}); return err },
		"grant none":          func() error { _, err := r.GrantPermissions(ctx, id, nil); return err },
		"grant too many":      func() error { _, err := r.GrantPermissions(ctx, id, long); return err },
		"grant mid wildcard":  func() error { _, err := r.GrantPermissions(ctx, id, []string{"a.*.c"}); return err },
		"revoke bad":          func() error { _, err := r.RevokePermissions(ctx, id, []string{"a b"}); return err },
		"assign no user":      func() error { _, err := r.AssignRole(ctx, "", id, ""); return err },
		"assign bad resource": func() error { _, err := r.AssignRole(ctx, "u1", id, "acme"); return err },
		"unassign bad role":   func() error { return r.UnassignRole(ctx, "u1", "x", "") },
		"check wildcard":      func() error { _, err := r.Check(ctx, authz.Question{Subject: "u1", Permission: "a.b.*"}); return err },
		"check no subject":    func() error { _, err := r.Check(ctx, authz.Question{Permission: "a.b.c"}); return err },
		"check bad resource": func() error {
			_, err := r.Check(ctx, authz.Question{Subject: "u", Permission: "a.b.c", Resource: ":"})
			return err
		},
		"batch empty": func() error { _, err := r.CheckBatch(ctx, nil); return err },
		"batch one bad": func() error {
			_, err := r.CheckBatch(ctx, []authz.Question{{Subject: "u", Permission: "a.b.c"}, {Subject: "u"}})
			return err
		},
		"list roles bad token":    func() error { _, _, err := r.ListRoles(ctx, authz.Page{Token: "!!"}); return err },
		"list roles neg size":     func() error { _, _, err := r.ListRoles(ctx, authz.Page{Size: -1}); return err },
		"list bindings no user":   func() error { _, _, err := r.ListUserRoles(ctx, "", authz.Page{}); return err },
		"list perms bad resource": func() error { _, err := r.ListUserPermissions(ctx, "u", "x"); return err },
		"list bindings token bad role name": func() error {
			_, _, err := r.ListUserRoles(ctx, "u1", authz.Page{Token: pageToken("u1", "\xff", "")})
			return err
		},
		"list bindings token bad resource": func() error {
			_, _, err := r.ListUserRoles(ctx, "u1", authz.Page{Token: pageToken("u1", "valid", "org:\xff")})
			return err
		},
	}
	for name, call := range tests {
		t.Run(name, func(t *testing.T) {
			err := call()
			require.Error(t, err)
			assert.Equal(t, authz.KindInvalid, authz.KindOf(err), "%v", err)
		})
	}
	_, err := r.AssignRole(ctx, "u1", "00000000-0000-0000-0000-000000000001", "")
	assert.Equal(t, authz.KindNotFound, authz.KindOf(err))
}

// The description's limit is in characters, as the contract says, not in
// the bytes that UTF-8 takes to store them.
func TestDescriptionLimitCountsCharacters(t *testing.T) {
	t.Parallel()
	r := newReplica(t)
	tests := []struct {
		name string
		desc string
		want authz.Kind // 0: accepted
	}{
		{"500 ASCII", strings.Repeat("a", 500), 0},
		{"500 two-byte", strings.Repeat("é", 500), 0},
		{"500 four-byte", strings.Repeat("🎉", 500), 0},
		{"501 two-byte", strings.Repeat("é", 501), authz.KindInvalid},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check := func(what string, role authz.Role, err error) {
				t.Helper()
				if tt.want != 0 {
					assert.Equal(t, tt.want, authz.KindOf(err), "%s: %v", what, err)
					return
				}
				if assert.NoError(t, err, what) {
					assert.True(t, role.Description == tt.desc, "%s: the description changed on the way", what)
				}
			}
			created, err := r.CreateRole(t.Context(), authz.NewRole{Name: fmt.Sprintf("created-%d", i), Description: tt.desc})
			check("create", created, err)
			role := r.mustRole(t, fmt.Sprintf("updated-%d", i))
			updated, err := r.UpdateRole(t.Context(), role.ID.String(), authz.RoleChange{Description: &tt.desc})
			check("update", updated, err)
		})
	}
}

// pageToken makes a ListUserRoles page token as the service does: it is
// base64 of user, role name and resource, separated by NUL.
func pageToken(user, roleName, resource string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(user + "\x00" + roleName + "\x00" + resource))
}

func TestListPaging(t *testing.T) {
	t.Parallel()
	r := newReplica(t)
	var want []string
	for i := range 5 {
		role := r.mustRole(t, fmt.Sprintf("role-%d", i), "svc.res.read")
		r.mustAssign(t, "pager", role, "")
		r.mustAssign(t, "pager", role, "org:b")
		r.mustAssign(t, "pager", role, "org:a")
		want = append(want, role.Name+"|", role.Name+"|org:a", role.Name+"|org:b")
	}
	var got []string
	page := authz.Page{Size: 4}
	for {
		bs, next, err := r.ListUserRoles(t.Context(), "pager", page)
		require.NoError(t, err)
		for _, b := range bs {
			got = append(got, b.RoleName+"|"+b.Resource)
		}
		if next == "" {
			break
		}
		page.Token = next
	}
	assert.Equal(t, want, got)
	_, _, err := r.ListUserRoles(t.Context(), "someone-else", page)
	assert.Equal(t, authz.KindInvalid, authz.KindOf(err), "a token is bound to its user")

	var names []string
	page = authz.Page{Size: 3}
	for {
		roles, next, err := r.ListRoles(t.Context(), page)
		require.NoError(t, err)
		for _, role := range roles {
			names = append(names, role.Name)
		}
		if next == "" {
			break
		}
		page.Token = next
	}
	assert.Equal(t, []string{"admin", "role-0", "role-1", "role-2", "role-3", "role-4", "user"}, names)
}

func TestEveryChangeIsAudited(t *testing.T) {
	t.Parallel()
	dsn, schema := newSchema(t)
	r := startReplica(t, dsn, schema, authz.Config{})
	_, admin := kerneltest.Postgres(t)
	count := func() int {
		var n int
		require.NoError(t, admin.QueryRow(`SELECT count(*) FROM `+schema+`.outbox_events`).Scan(&n))
		return n
	}
	base := count() // the built-in roles' creation
	assert.Equal(t, 2, base)

	role := r.mustRole(t, "audited", "a.b.c")
	r.mustAssign(t, "u1", role, "")
	_, err := r.GrantPermissions(t.Context(), role.ID.String(), []string{"a.b.d"})
	require.NoError(t, err)
	_, err = r.RevokePermissions(t.Context(), role.ID.String(), []string{"a.b.d"})
	require.NoError(t, err)
	require.NoError(t, r.UnassignRole(t.Context(), "u1", role.ID.String(), ""))
	_, err = r.DeleteRole(t.Context(), role.ID.String(), false)
	require.NoError(t, err)
	assert.Equal(t, base+6, count())

	// No-ops and refusals write nothing.
	require.NoError(t, r.UnassignRole(t.Context(), "u1", role.ID.String(), ""))
	_, err = r.CreateRole(t.Context(), authz.NewRole{Name: authz.AdminRole})
	require.Error(t, err)
	assert.Equal(t, base+6, count())
}

// TestTwoReplicas runs two instances on one schema, each with its own pool
// and notification connection: a change through one reaches the other's
// cached decisions within a second.
func TestTwoReplicas(t *testing.T) {
	t.Parallel()
	dsn, schema := newSchema(t)
	a := startReplica(t, dsn, schema, authz.Config{})
	b := startReplica(t, dsn, schema, authz.Config{})

	role := a.mustRole(t, "writers", "docs.pages.write")
	a.mustAssign(t, "alice", role, "")
	b.prime(t, "alice", "docs.pages.write", true)

	start := time.Now()
	_, err := a.RevokePermissions(t.Context(), role.ID.String(), []string{"docs.pages.write"})
	require.NoError(t, err)
	assert.False(t, a.check(t, "alice", "docs.pages.write", ""), "the replica that made the change reads its own write")
	require.Eventually(t, func() bool { return !b.check(t, "alice", "docs.pages.write", "") }, time.Second, time.Millisecond,
		"revoked grant still allowed by the other replica")
	t.Logf("revocation reached the other replica in %s", time.Since(start))

	// Grants, bindings and deletions travel the same way.
	require.True(t, b.check(t, "bob", "docs.pages.read", "") == false)
	reader := a.mustRole(t, "readers")
	a.mustAssign(t, "bob", reader, "")
	require.False(t, b.check(t, "bob", "docs.pages.read", ""))
	_, err = a.GrantPermissions(t.Context(), reader.ID.String(), []string{"docs.pages.read"})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return b.check(t, "bob", "docs.pages.read", "") }, time.Second, time.Millisecond)
	_, err = a.DeleteRole(t.Context(), reader.ID.String(), true)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return !b.check(t, "bob", "docs.pages.read", "") }, time.Second, time.Millisecond)
}

// TestLostNotificationsDropTheCache kills a replica's notification
// connection, then changes a grant behind its back (no NOTIFY): the
// replica must not answer from what it cached before.
func TestLostNotificationsDropTheCache(t *testing.T) {
	t.Parallel()
	dsn, schema := newSchema(t)
	_, admin := kerneltest.Postgres(t)
	// A slow reconnection keeps the replica uncached long enough to look.
	r := startReplica(t, dsn, schema, authz.Config{ListenerMinReconnect: 2 * time.Second, ListenerMaxReconnect: 2 * time.Second})
	role := r.mustRole(t, "ops", "infra.hosts.reboot")
	r.mustAssign(t, "carol", role, "")
	r.prime(t, "carol", "infra.hosts.reboot", true)

	var killed int
	require.NoError(t, admin.QueryRow(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE query = 'LISTEN "authz_changes_`+schema+`"'`).Scan(&killed))
	require.Equal(t, 1, killed)
	require.Eventually(t, func() bool { return !r.Live() }, 5*time.Second, time.Millisecond)
	assert.False(t, r.Cached("carol"), "the cache must be dropped with the connection")

	// Behind the service's back: no notification.
	revoke := func(perm string) {
		_, err := admin.ExecContext(context.Background(), `DELETE FROM `+schema+`.permissions WHERE name = $1`, perm)
		require.NoError(t, err)
	}
	revoke("infra.hosts.reboot")
	assert.False(t, r.check(t, "carol", "infra.hosts.reboot", ""), "served a stale grant while notifications were down")
	assert.False(t, r.Cached("carol"), "nothing is cached while notifications are down")
	_, err := admin.ExecContext(context.Background(), `INSERT INTO `+schema+`.permissions (role_id, name, created_at) VALUES ($1, 'infra.hosts.drain', now())`, role.ID)
	require.NoError(t, err)
	assert.True(t, r.check(t, "carol", "infra.hosts.drain", ""))

	// Back again: caching resumes, and notifications work.
	require.Eventually(t, r.Live, 10*time.Second, 5*time.Millisecond)
	r.prime(t, "carol", "infra.hosts.drain", true)
	_, err = r.RevokePermissions(t.Context(), role.ID.String(), []string{"infra.hosts.drain"})
	require.NoError(t, err)
	assert.False(t, r.check(t, "carol", "infra.hosts.drain", ""))
}

// TestABurstOfChangesDoesNotStopTheListener: pq reads a ping's answer on
// the connection the notifications arrive on, and stops reading while
// they wait to be taken. A burst of changes arriving while the replica
// waited for a ping stopped its listener for good, and it served what it
// had cached from then on.
func TestABurstOfChangesDoesNotStopTheListener(t *testing.T) {
	t.Parallel()
	dsn, schema := newSchema(t)
	_, admin := kerneltest.Postgres(t)
	a := startReplica(t, dsn, schema, authz.Config{})
	b := startReplica(t, dsn, schema, authz.Config{ListenerPingInterval: time.Millisecond}) // a ping always in flight
	role := a.mustRole(t, "ops", "infra.hosts.reboot")
	a.mustAssign(t, "carol", role, "")
	for range 5 {
		_, err := admin.ExecContext(t.Context(), `SELECT pg_notify('authz_changes_`+schema+`', 'user:someone-' || i) FROM generate_series(1, 2000) i`)
		require.NoError(t, err)
	}
	b.prime(t, "carol", "infra.hosts.reboot", true) // cached: b listens
	_, err := a.RevokePermissions(t.Context(), role.ID.String(), []string{"infra.hosts.reboot"})
	require.NoError(t, err)
	// Through the notification, well before an unanswered ping (1s) would
	// turn caching off and the database answer instead.
	require.Eventually(t, func() bool { return !b.check(t, "carol", "infra.hosts.reboot", "") }, 500*time.Millisecond, time.Millisecond,
		"the revocation never reached the replica")
	assert.True(t, b.Live(), "caching turned off: the listener stopped answering")
}

func TestConcurrentChecksAndChanges(t *testing.T) {
	t.Parallel()
	dsn, schema := newSchema(t)
	a := startReplica(t, dsn, schema, authz.Config{})
	b := startReplica(t, dsn, schema, authz.Config{MaxSubjects: 3})
	role := a.mustRole(t, "flappy", "x.y.z")
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				_, err := b.Check(ctx, authz.Question{Subject: fmt.Sprintf("u%d", i%5), Permission: "x.y.z"})
				if err != nil && ctx.Err() == nil {
					t.Error(err)
				}
			}
		})
	}
	for i := 0; ctx.Err() == nil; i++ {
		u := fmt.Sprintf("u%d", i%5)
		if _, err := a.AssignRole(t.Context(), u, role.ID.String(), ""); err != nil {
			t.Fatal(err)
		}
		require.NoError(t, a.UnassignRole(t.Context(), u, role.ID.String(), ""))
	}
	wg.Wait()
	// Settled: nobody is bound, and b must agree once notifications land.
	for i := range 5 {
		u := fmt.Sprintf("u%d", i)
		require.Eventually(t, func() bool { return !b.check(t, u, "x.y.z", "") }, time.Second, time.Millisecond)
	}
}
