package flows_test

import (
	"database/sql"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/e2e/platform"
	"portcullis.dev/e2e/platformtest"
	identityv1 "portcullis.dev/proto/identity/v1"
	"portcullis.dev/proto/identity/v1/identityv1connect"
)

// serviceURL is the base URL of a passing instance of service in Consul.
func serviceURL(t *testing.T, p *platform.Platform, service string) string {
	t.Helper()
	addrs, err := p.Instances(t.Context(), service)
	require.NoError(t, err)
	require.NotEmpty(t, addrs, "no passing instance of %s", service)
	return "http://" + addrs[0]
}

// No audit event is lost while the Audit service is down: changes made
// meanwhile wait in the services' outboxes and arrive, once each and in
// order, when it is back.
func TestAuditEventsSurviveAuditDowntime(t *testing.T) {
	t.Parallel()
	dbURL := platformtest.Database(t)
	p, logs := platformtest.Start(t, platform.Options{DatabaseURL: dbURL, Env: platformtest.FastHashing})
	ctx := t.Context()
	identity := identityv1connect.NewIdentityServiceClient(http.DefaultClient, serviceURL(t, p, "identitysvc"))

	db, err := sql.Open("postgres", dbURL)
	require.NoError(t, err)
	defer db.Close()
	count := func(query string) int {
		var n int
		require.NoError(t, db.QueryRowContext(ctx, query).Scan(&n))
		return n
	}
	// Start from a drained outbox (the bootstrap admin's creation is
	// audited too), then take Audit away.
	require.Eventually(t, func() bool {
		return count(`SELECT count(*) FROM identity.outbox_events WHERE delivered_at IS NULL`) == 0
	}, 30*time.Second, 50*time.Millisecond)
	before := count(`SELECT count(*) FROM audit.audit_log WHERE action = 'identity.user.created'`)
	require.NoError(t, p.StopService(ctx, "auditsvc"))
	const changes = 1000
	var (
		wg   sync.WaitGroup
		next = make(chan int)
		errs = make(chan error, changes)
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				_, err := identity.CreateUser(ctx, connect.NewRequest(&identityv1.CreateUserRequest{
					Email: "user" + strconv.Itoa(i) + "@example.com", Password: "correct horse battery",
				}))
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := range changes {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	assert.Equal(t, changes, count(`SELECT count(*) FROM identity.outbox_events WHERE delivered_at IS NULL`), "the events are not waiting in the outbox")

	require.NoError(t, p.StartService(ctx, "auditsvc"))
	created := func() int {
		return count(`SELECT count(*) FROM audit.audit_log WHERE action = 'identity.user.created'`) - before
	}
	require.Eventually(t, func() bool { return created() == changes }, 60*time.Second, 100*time.Millisecond,
		"%d of %d events arrived; logs:\n%s", created(), changes, logs.String())
	time.Sleep(time.Second) // and no more than that
	assert.Equal(t, changes, created())
	assert.Equal(t, count(`SELECT count(*) FROM audit.audit_log`), count(`SELECT count(DISTINCT idempotency_key) FROM audit.audit_log`), "an event arrived twice")
	// In order: the log's sequence follows the outbox's order.
	assert.Zero(t, count(`
		SELECT count(*) FROM (
			SELECT o.id, a.sequence, lag(a.sequence) OVER (ORDER BY o.id) AS prev
			FROM identity.outbox_events o JOIN audit.audit_log a USING (idempotency_key)
		) x WHERE prev IS NOT NULL AND sequence < prev`), "events arrived out of order")
	assert.Zero(t, count(`SELECT count(*) FROM identity.outbox_events WHERE delivered_at IS NULL`))
}
