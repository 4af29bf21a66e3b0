package authz_test

import (
	"context"
	"testing"
	"time"

	"entgo.io/ent/dialect"
	"github.com/stretchr/testify/require"

	"portcullis.dev/authzsvc/ent"
	"portcullis.dev/authzsvc/internal/authz"
	"portcullis.dev/kernel/config"
	"portcullis.dev/kernel/database"
	"portcullis.dev/kernel/kerneltest"
)

// replica is one running instance of the domain: its own pool, its own
// notification connection.
type replica struct {
	*authz.Service
	db *database.Client[*ent.Client]
}

// newSchema returns a fresh schema name and the test database URL.
func newSchema(t testing.TB) (dsn, schema string) {
	t.Helper()
	dsn, _ = kerneltest.Postgres(t)
	return dsn, kerneltest.SchemaName(t)
}

// startReplica opens a pool on schema, bootstraps and starts listening;
// it waits until decisions are cached (the notification connection is up).
func startReplica(t testing.TB, dsn, schema string, cfg authz.Config) *replica {
	t.Helper()
	return startReplicaWithPool(t, dsn, schema, cfg, 8)
}

// startReplicaWithPool is startReplica with a pool of maxOpen connections.
func startReplicaWithPool(t testing.TB, dsn, schema string, cfg authz.Config, maxOpen int) *replica {
	t.Helper()
	ctx := context.Background()
	db, err := database.NewEntClient(ctx, database.Config{DSN: config.DSN(dsn), Schema: schema, MaxOpenConns: maxOpen}, ent.Migrations(),
		func(d dialect.Driver) *ent.Client { return ent.NewClient(ent.Driver(d)) })
	require.NoError(t, err)
	svc, err := authz.New(db.Ent, schema, dsn, cfg)
	require.NoError(t, err)
	require.NoError(t, svc.Bootstrap(ctx))
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = db.Close(context.Background())
	})
	require.Eventually(t, svc.Live, 5*time.Second, 5*time.Millisecond, "notification connection never came up")
	return &replica{Service: svc, db: db}
}

func newReplica(t testing.TB) *replica {
	t.Helper()
	dsn, schema := newSchema(t)
	return startReplica(t, dsn, schema, authz.Config{})
}

func (r *replica) mustRole(t testing.TB, name string, perms ...string) authz.Role {
	t.Helper()
	role, err := r.CreateRole(t.Context(), authz.NewRole{Name: name, Permissions: perms})
	require.NoError(t, err)
	return role
}

func (r *replica) mustAssign(t testing.TB, user string, role authz.Role, resource string) {
	t.Helper()
	_, err := r.AssignRole(t.Context(), user, role.ID.String(), resource)
	require.NoError(t, err)
}

func (r *replica) check(t testing.TB, user, perm, resource string) bool {
	t.Helper()
	ok, err := r.Check(t.Context(), authz.Question{Subject: user, Permission: perm, Resource: resource})
	require.NoError(t, err)
	return ok
}

func (r *replica) roleByName(t testing.TB, name string) authz.Role {
	t.Helper()
	roles, _, err := r.ListRoles(t.Context(), authz.Page{Size: 1000})
	require.NoError(t, err)
	for _, role := range roles {
		if role.Name == name {
			return role
		}
	}
	t.Fatalf("no role %q", name)
	return authz.Role{}
}

// prime checks until the answer is want and cached: a load is not cached
// when a notification (such as the echo of the change just made) lands
// while it runs.
func (r *replica) prime(t testing.TB, user, perm string, want bool) {
	t.Helper()
	require.Eventually(t, func() bool { return r.check(t, user, perm, "") == want && r.Cached(user) }, 2*time.Second, time.Millisecond)
}
