package flows_test

import (
	"database/sql"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/lib/pq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/e2e/platform"
	"portcullis.dev/e2e/platformtest"
	identityv1 "portcullis.dev/proto/identity/v1"
	"portcullis.dev/proto/identity/v1/identityv1connect"
)

// No audit event is lost while the Audit service is down: changes made
// through the gateway meanwhile wait in the services' outboxes and arrive,
// once each and in order, when it is back. The test reads the database
// only to watch the outbox, never to drive the platform.
func TestAuditEventsSurviveAuditDowntime(t *testing.T) {
	t.Parallel()
	dbURL := platformtest.Database(t)
	p, logs := platformtest.Start(t, platform.Options{
		DatabaseURL: dbURL,
		// A thousand sign-ups from one address in a few seconds.
		Env: append([]string{"PORTCULLIS_RATELIMIT_ENABLED=false"}, platformtest.FastHashing...),
	})
	ctx := t.Context()
	const workers = 8
	// One kept connection per worker, rather than a new one for most calls.
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = workers
	identity := identityv1connect.NewIdentityServiceClient(&http.Client{Transport: transport}, p.GatewayURL)

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
		wg      sync.WaitGroup
		next    = make(chan int)
		errs    = make(chan error, changes)
		targets = make([]string, changes) // "user:<id>" of each created user
	)
	for range workers {
		wg.Go(func() {
			for i := range next {
				res, err := identity.CreateUser(ctx, connect.NewRequest(&identityv1.CreateUserRequest{
					Email: "user" + strconv.Itoa(i) + "@example.com", Password: "correct horse battery",
				}))
				if err != nil {
					errs <- err
					continue
				}
				targets[i] = "user:" + res.Msg.GetUser().GetId()
			}
		})
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
	// Once each: every user created while Audit was down is the target of
	// exactly one identity.user.created event. (Counting idempotency keys
	// would prove nothing: the log's index makes them unique.)
	rows, err := db.QueryContext(ctx, `
		SELECT t.target, count(a.sequence)
		FROM unnest($1::text[]) AS t(target)
		LEFT JOIN audit.audit_log a ON a.target = t.target AND a.action = 'identity.user.created'
		GROUP BY t.target`, pq.Array(targets))
	require.NoError(t, err)
	defer rows.Close()
	recorded := map[string]int{}
	for rows.Next() {
		var (
			target string
			n      int
		)
		require.NoError(t, rows.Scan(&target, &n))
		recorded[target] = n
	}
	require.NoError(t, rows.Err())
	require.Len(t, recorded, changes, "the users' IDs are not distinct")
	for target, n := range recorded {
		if n != 1 {
			assert.Failf(t, "not recorded once", "identity.user.created on %s recorded %d times", target, n)
		}
	}
	// In order: the log's sequence follows the outbox's order.
	assert.Zero(t, count(`
		SELECT count(*) FROM (
			SELECT o.id, a.sequence, lag(a.sequence) OVER (ORDER BY o.id) AS prev
			FROM identity.outbox_events o JOIN audit.audit_log a USING (idempotency_key)
		) x WHERE prev IS NOT NULL AND sequence < prev`), "events arrived out of order")
	assert.Zero(t, count(`SELECT count(*) FROM identity.outbox_events WHERE delivered_at IS NULL`))
}
