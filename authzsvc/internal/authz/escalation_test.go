package authz_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/authzsvc/internal/authz"
	"portcullis.dev/kernel/authn"
)

// TestNoOneGivesAwayWhatTheyDoNotHold: the holders of authz.roles.write
// and authz.bindings.write may grant and bind only what they hold, so
// that neither can make themselves, or anyone, more than they are, and
// take away only what they could give, so that neither can lock the
// administrators out.
func TestNoOneGivesAwayWhatTheyDoNotHold(t *testing.T) {
	t.Parallel()
	r := newReplica(t)
	as := func(user string) context.Context {
		return authn.NewContext(t.Context(), authn.Principal{Kind: authn.KindUser, Subject: user})
	}
	// The role manager holds authz.* and identity.users.read everywhere;
	// the org admin holds identity.* on org:acme only.
	r.mustAssign(t, "manager", r.mustRole(t, "role-manager", "authz.*", "identity.users.read"), "")
	r.mustAssign(t, "org-admin", r.mustRole(t, "acme-admin", "authz.bindings.write", "identity.*"), "org:acme")
	admin := r.roleByName(t, "admin")
	readers := r.mustRole(t, "readers", "identity.users.read")
	editors := r.mustRole(t, "editors", "identity.users.read", "identity.users.write")

	denied := func(t *testing.T, err error) {
		t.Helper()
		require.Error(t, err)
		assert.Equal(t, authz.KindPermissionDenied, authz.KindOf(err), "%v", err)
	}

	t.Run("grant", func(t *testing.T) {
		_, err := r.GrantPermissions(as("manager"), readers.ID.String(), []string{"*"})
		denied(t, err)
		assert.ErrorContains(t, err, "you do not hold *")
		_, err = r.GrantPermissions(as("manager"), readers.ID.String(), []string{"identity.users.write", "identity.*", "authz.roles.read"})
		denied(t, err)
		assert.ErrorContains(t, err, "you do not hold identity.users.write, identity.*")
		_, err = r.GrantPermissions(as("manager"), readers.ID.String(), []string{"authz.roles.read", "authz.*", "identity.users.read"})
		assert.NoError(t, err, "what the caller holds, wildcards through wildcards")
		// Held on one resource is not held everywhere, and a role may be
		// bound anywhere.
		_, err = r.GrantPermissions(as("org-admin"), editors.ID.String(), []string{"identity.users.delete"})
		denied(t, err)
	})

	t.Run("create", func(t *testing.T) {
		_, err := r.CreateRole(as("manager"), authz.NewRole{Name: "root-too", Permissions: []string{"*"}})
		denied(t, err)
		_, err = r.CreateRole(as("manager"), authz.NewRole{Name: "authz-too", Permissions: []string{"authz.roles.write"}})
		assert.NoError(t, err)
	})

	t.Run("bind", func(t *testing.T) {
		_, err := r.AssignRole(as("manager"), "manager", admin.ID.String(), "")
		denied(t, err)
		assert.ErrorContains(t, err, "you can give only permissions you hold everywhere")
		_, err = r.AssignRole(as("manager"), "eve", editors.ID.String(), "")
		denied(t, err)
		// readers grants what the manager holds everywhere, so on org:acme too.
		_, err = r.AssignRole(as("manager"), "eve", readers.ID.String(), "org:acme")
		assert.NoError(t, err)
		// The org admin binds on their own organisation only.
		_, err = r.AssignRole(as("org-admin"), "eve", editors.ID.String(), "org:acme")
		assert.NoError(t, err)
		_, err = r.AssignRole(as("org-admin"), "eve", editors.ID.String(), "org:other")
		denied(t, err)
		assert.ErrorContains(t, err, "on org:other")
		_, err = r.AssignRole(as("org-admin"), "eve", editors.ID.String(), "")
		denied(t, err)
		assert.False(t, r.check(t, "eve", "identity.users.write", "org:other"))
	})

	t.Run("take away", func(t *testing.T) {
		r.mustAssign(t, "root", admin, "")
		staff := r.mustRole(t, "staff", "identity.users.read", "identity.users.write")
		r.mustAssign(t, "grace", staff, "")
		r.mustAssign(t, "heidi", staff, "org:acme")

		err := r.UnassignRole(as("manager"), "root", admin.ID.String(), "")
		denied(t, err)
		assert.ErrorContains(t, err, "you can take away only permissions you hold everywhere")
		assert.True(t, r.check(t, "root", "authz.roles.write", ""), "the administrator keeps admin")

		_, err = r.RevokePermissions(as("manager"), staff.ID.String(), []string{"identity.users.write", "identity.users.read"})
		denied(t, err)
		assert.ErrorContains(t, err, "you do not hold identity.users.write")
		assert.True(t, r.check(t, "grace", "identity.users.read", ""), "a refusal revokes nothing")
		_, err = r.RevokePermissions(as("manager"), staff.ID.String(), []string{"identity.users.delete"})
		denied(t, err) // whether the role has it or not: nothing is told of the role
		err = r.UnassignRole(as("manager"), "nobody", admin.ID.String(), "")
		denied(t, err) // whether the binding exists or not: nothing is told of who holds admin

		_, err = r.DeleteRole(as("manager"), staff.ID.String(), true)
		denied(t, err)
		assert.True(t, r.check(t, "grace", "identity.users.write", ""), "a refusal deletes nothing")

		// The org admin unbinds on their own organisation only.
		err = r.UnassignRole(as("org-admin"), "grace", staff.ID.String(), "")
		denied(t, err)
		require.NoError(t, r.UnassignRole(as("org-admin"), "heidi", staff.ID.String(), "org:acme"))
		assert.False(t, r.check(t, "heidi", "identity.users.write", "org:acme"))

		_, err = r.RevokePermissions(as("manager"), staff.ID.String(), []string{"identity.users.read"})
		assert.NoError(t, err, "what the caller holds")
		// Everyone may give up what they hold.
		require.NoError(t, r.UnassignRole(as("grace"), "grace", staff.ID.String(), ""))
		removed, err := r.DeleteRole(as("manager"), staff.ID.String(), true)
		require.NoError(t, err, "no bindings left: nothing is taken away")
		assert.Zero(t, removed)
	})

	t.Run("services and the superuser are not limited", func(t *testing.T) {
		svc := authn.NewContext(t.Context(), authn.Principal{Kind: authn.KindService, Subject: "identitysvc"})
		_, err := r.AssignRole(svc, "frank", admin.ID.String(), "")
		assert.NoError(t, err)
		_, err = r.GrantPermissions(as("frank"), editors.ID.String(), []string{"*"})
		assert.NoError(t, err)
	})
}

// TestChangesByUsersNeedOneConnection: what a user holds is read before
// a change's transaction takes its connection, so that changes made at
// once by as many users as the pool has connections do not each wait, in
// their transaction, for a connection to read it.
func TestChangesByUsersNeedOneConnection(t *testing.T) {
	t.Parallel()
	dsn, schema := newSchema(t)
	r := startReplicaWithPool(t, dsn, schema, authz.Config{}, 1)
	admin := r.roleByName(t, "admin")
	readers := r.mustRole(t, "readers", "docs.pages.read")
	r.mustAssign(t, "eve", readers, "")
	// Each change made as an administrator whose decisions are not cached
	// yet, so that it reads them.
	as := func(root string) context.Context {
		r.mustAssign(t, root, admin, "")
		ctx, cancel := context.WithTimeout(authn.NewContext(t.Context(), authn.Principal{Kind: authn.KindUser, Subject: root}), 5*time.Second)
		t.Cleanup(cancel)
		return ctx
	}
	require.NoError(t, r.UnassignRole(as("root-1"), "eve", readers.ID.String(), ""))
	_, err := r.AssignRole(as("root-2"), "eve", readers.ID.String(), "")
	require.NoError(t, err)
	_, err = r.RevokePermissions(as("root-3"), readers.ID.String(), []string{"docs.pages.read"})
	require.NoError(t, err)
	_, err = r.DeleteRole(as("root-4"), readers.ID.String(), true)
	require.NoError(t, err)
}

// TestBindingWaitsForAGrantToItsRole: a binding made while the role is
// being granted more is judged on what the role has once the grant
// commits, not on what it had before.
func TestBindingWaitsForAGrantToItsRole(t *testing.T) {
	t.Parallel()
	r := newReplica(t)
	r.mustAssign(t, "binder", r.mustRole(t, "binders", "authz.bindings.write", "docs.pages.read"), "")
	readers := r.mustRole(t, "readers", "docs.pages.read")

	// An administrator's grant of docs.pages.write to readers, begun and
	// not yet committed, as GrantPermissions holds it.
	grant, err := r.db.DB.BeginTx(t.Context(), nil)
	require.NoError(t, err)
	defer func() { _ = grant.Rollback() }()
	_, err = grant.ExecContext(t.Context(), `SELECT 1 FROM roles WHERE id = $1 FOR UPDATE`, readers.ID)
	require.NoError(t, err)
	_, err = grant.ExecContext(t.Context(), `INSERT INTO permissions (role_id, name, created_at) VALUES ($1, 'docs.pages.write', now())`, readers.ID)
	require.NoError(t, err)

	done := make(chan error, 1)
	go func() {
		_, err := r.AssignRole(authn.NewContext(t.Context(), authn.Principal{Kind: authn.KindUser, Subject: "binder"}), "bob", readers.ID.String(), "")
		done <- err
	}()
	// AssignRole waits for the grant's lock (on the role, or in its
	// binding's foreign key) before the grant commits.
	require.Eventually(t, func() bool {
		var waiting int
		err := r.db.DB.QueryRowContext(t.Context(), `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'
			AND (query LIKE '%roles WHERE id = $1 FOR SHARE%' OR query LIKE 'INSERT INTO bindings%')`).Scan(&waiting)
		return err == nil && waiting > 0
	}, 5*time.Second, time.Millisecond)
	require.NoError(t, grant.Commit())
	err = <-done
	require.Error(t, err, "bound to a role that gives what the binder does not hold")
	assert.Equal(t, authz.KindPermissionDenied, authz.KindOf(err))
}

// TestCovers: a user covers another when they hold everything the other
// holds, everywhere and on each of the other's resources.
func TestCovers(t *testing.T) {
	t.Parallel()
	r := newReplica(t)
	r.mustAssign(t, "root", r.roleByName(t, "admin"), "")
	r.mustAssign(t, "helpdesk", r.mustRole(t, "helpdesk", "identity.users.*"), "")
	r.mustAssign(t, "reader", r.mustRole(t, "reader", "identity.users.read"), "")
	r.mustAssign(t, "acme-reader", r.roleByName(t, "reader"), "org:acme")
	r.mustAssign(t, "acme-helpdesk", r.roleByName(t, "helpdesk"), "org:acme")
	for _, tc := range []struct {
		subject, target string
		want            bool
	}{
		{"root", "helpdesk", true},
		{"helpdesk", "root", false},
		{"helpdesk", "reader", true},
		{"reader", "helpdesk", false}, // a wildcard only through a wildcard
		{"reader", "acme-reader", true},
		{"acme-reader", "reader", false}, // on one resource is not everywhere
		{"acme-helpdesk", "acme-reader", true},
		{"acme-reader", "acme-helpdesk", false},
		{"reader", "nobody", true}, // who holds nothing is covered by all
		{"nobody", "nobody", true},
		{"nobody", "reader", false},
	} {
		got, err := r.Covers(t.Context(), tc.subject, tc.target)
		require.NoError(t, err)
		assert.Equal(t, tc.want, got, "%s covers %s", tc.subject, tc.target)
	}
	_, err := r.Covers(t.Context(), "", "root")
	assert.Equal(t, authz.KindInvalid, authz.KindOf(err))
	assert.ErrorContains(t, err, "subject must be")
	_, err = r.Covers(t.Context(), "root", "has space")
	assert.ErrorContains(t, err, "target must be")
}
