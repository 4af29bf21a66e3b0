package registry_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/kerneltest"
	"portcullis.dev/kernel/registry"
)

// reaction bounds how long after Consul the resolver may reflect a change.
// It typically takes a few milliseconds; the bound leaves room for a loaded
// machine running the race detector.
const reaction = 500 * time.Millisecond

// settle bounds how long Consul may take to report a change of health: its
// check interval, plus a new agent's first sync.
const settle = 5 * time.Second

func TestResolverFollowsHealth(t *testing.T) {
	t.Parallel()
	reg, _ := newRegistry(t)
	res := reg.Resolver("identity")
	t.Cleanup(res.Close)
	require.NoError(t, res.Wait(t.Context()), "an unknown service is a known-empty answer")
	assert.Empty(t, res.Instances())

	a, b := newBackend(t), newBackend(t)
	instA := a.instance("identity", "portcullis.identity.v1.IdentityService")
	instA.Meta = map[string]string{"zone": "a"}
	idA := register(t, reg, instA)
	assert.Less(t, resolverLag(t, reg, res, settle, a.hostPort()), reaction, "a new instance is seen")
	assert.Equal(t, []registry.Instance{{
		ID:              idA,
		Service:         "identity",
		Address:         "127.0.0.1",
		Port:            instA.Port,
		Version:         "v1.2.3",
		ConnectServices: []string{"portcullis.identity.v1.IdentityService"},
		Meta:            map[string]string{"zone": "a"},
	}}, res.Instances())

	register(t, reg, b.instance("identity"))
	assert.Less(t, resolverLag(t, reg, res, settle, a.hostPort(), b.hostPort()), reaction, "a second instance is seen")

	b.setReady(false)
	assert.Less(t, resolverLag(t, reg, res, settle, a.hostPort()), reaction, "a critical instance is dropped")

	b.setReady(true)
	assert.Less(t, resolverLag(t, reg, res, settle, a.hostPort(), b.hostPort()), reaction, "a recovered instance is back")
}

func TestResolverEmptiesWhenTheLastInstanceLeaves(t *testing.T) {
	t.Parallel()
	reg, _ := newRegistry(t)
	tests := []struct {
		name  string
		leave func(t *testing.T, id string, b *backend)
	}{
		{"deregistered", func(t *testing.T, id string, _ *backend) {
			require.NoError(t, reg.Deregister(t.Context(), id))
		}},
		{"not ready", func(_ *testing.T, _ string, b *backend) { b.setReady(false) }},
		{"gone", func(_ *testing.T, _ string, b *backend) { b.srv.Close() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			service := "svc-" + tt.name[:3]
			res := reg.Resolver(service)
			t.Cleanup(res.Close)
			b := newBackend(t)
			id := register(t, reg, b.instance(service))
			waitForInstances(t, res, settle, b.hostPort())
			select {
			case <-res.Updates(): // drain the notification of the arrival
			default:
			}

			tt.leave(t, id, b)
			select {
			case <-res.Updates():
			case <-time.After(settle):
				t.Fatal("no update when the last instance left")
			}
			assert.Empty(t, res.Instances())
		})
	}
}

func TestResolverSurvivesConsulRestart(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("resolver's log:\n%s", logs.String())
		}
	})
	reg, consul := newRegistry(t, registry.WithLogger(logs.logger()))
	a := newBackend(t)
	inst := a.instance("identity")
	register(t, reg, inst)
	res := reg.Resolver("identity", registry.WithBackoff(20*time.Millisecond, 100*time.Millisecond))
	t.Cleanup(res.Close)
	waitForInstances(t, res, settle, a.hostPort())
	known := res.Instances()

	consul.Stop()
	require.Eventually(t, func() bool { return logs.count(slog.LevelDebug, "Consul query failed again") >= 5 },
		5*time.Second, 10*time.Millisecond, "the resolver keeps retrying")
	assert.Equal(t, known, res.Instances(), "the last known instances are kept")
	assert.Equal(t, 1, logs.count(slog.LevelWarn, "Consul query failed"), "one warning per outage:\n%s", logs.String())

	consul.Restart()        // an empty agent: registrations are lost, indexes start over
	inst.Version = "v1.2.4" // to tell the new registration from the known one
	_, err := reg.Register(t.Context(), inst)
	require.NoError(t, err)
	deadline := time.After(settle)
	for !slices.ContainsFunc(res.Instances(), func(i registry.Instance) bool { return i.Version == "v1.2.4" }) {
		select {
		case <-res.Updates():
		case <-deadline:
			t.Fatalf("the resolver did not pick up the registration after the restart: %+v\n%s", res.Instances(), logs.String())
		}
	}
	waitForInstances(t, res, 0, a.hostPort())
	require.Eventually(t, func() bool { return logs.count(slog.LevelInfo, "Consul answers again") == 1 },
		time.Second, 10*time.Millisecond, "recovery is logged:\n%s", logs.String())
	assert.Equal(t, 1, logs.count(slog.LevelWarn, "Consul query failed"))

	// The resolver still follows changes after the restart, once it has
	// settled (WithSettle: three check intervals and two seconds), and only
	// once: the agent that answers after the outage is the one it compares
	// later answers with, not the one it knew before. One settling and two
	// check intervals (a second settling took ten seconds).
	a.setReady(false)
	waitForInstances(t, res, 3*checkInterval+2*time.Second+2*checkInterval)
}

// TestConsulRestartLosesNoInstance: an agent restarted without its state
// learns the instance again from KeepRegistered, and meanwhile the
// resolver keeps serving it instead of going empty.
func TestConsulRestartLosesNoInstance(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	reg, consul := newRegistry(t, registry.WithLogger(logs.logger()))
	a := newBackend(t)
	inst := a.instance("keep")
	id := register(t, reg, inst)
	keepRegistered(t, reg, id, inst, nil)
	res := reg.Resolver("keep", registry.WithBackoff(20*time.Millisecond, 100*time.Millisecond))
	t.Cleanup(res.Close)
	waitForInstances(t, res, settle, a.hostPort())

	var emptied atomic.Bool
	sampling, stopSampling := context.WithCancel(context.Background())
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for sampling.Err() == nil {
			if len(res.Instances()) == 0 {
				emptied.Store(true)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	consul.Restart()
	require.Eventually(t, func() bool {
		entries, _, err := reg.Client().Health().Service("keep", "", true, nil)
		return err == nil && len(entries) == 1
	}, 3*checkInterval+settle, 20*time.Millisecond, "the instance registers again and passes:\n%s", logs.String())
	time.Sleep(3*checkInterval + 2*time.Second) // past the resolver's settling time
	stopSampling()
	<-sampled
	assert.False(t, emptied.Load(), "the resolver went empty while Consul relearned the instance")
	assert.Equal(t, []string{a.hostPort()}, hostPorts(res.Instances()))
	assert.Equal(t, 1, logs.count(slog.LevelWarn, "Consul did not know this instance (its agent restarted, it was critical for longer than registry.deregister_critical_after, or the agent did not answer when it started); registered it"), logs.String())
}

// TestKeepRegisteredSaysWhenTheAgentDoesNotAnswer: an instance whose agent
// does not answer cannot be found; the log says so once, not at every
// check, and says when it answers again.
func TestKeepRegisteredSaysWhenTheAgentDoesNotAnswer(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	reg, consul := newRegistry(t, registry.WithLogger(logs.logger()))
	a := newBackend(t)
	inst := a.instance("outage")
	id := register(t, reg, inst)
	consul.Stop()
	keepRegistered(t, reg, id, inst, nil)

	const down = "the Consul agent does not answer: this instance cannot be found through it until it does"
	require.Eventually(t, func() bool { return logs.count(slog.LevelWarn, down) == 1 }, 3*checkInterval, 20*time.Millisecond, logs.String())
	time.Sleep(2 * checkInterval)
	assert.Equal(t, 1, logs.count(slog.LevelWarn, down), "warned at every check")
	consul.Restart()
	require.Eventually(t, func() bool { return logs.count(slog.LevelInfo, "the Consul agent answers again") == 1 }, 3*checkInterval, 20*time.Millisecond, logs.String())
}

// TestResolverWaitWithoutConsul: a resolver whose first query failed says
// so at once, and again on each wait while Consul stays away, rather than
// hold a call to a service no one resolved yet until its deadline.
func TestResolverWaitWithoutConsul(t *testing.T) {
	t.Parallel()
	reg, err := registry.New(registry.Config{Addr: "127.0.0.1:1"})
	require.NoError(t, err)
	res := reg.Resolver("identity", registry.WithBackoff(10*time.Millisecond, 20*time.Millisecond))

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for range 2 {
		err = res.Wait(ctx)
		require.Error(t, err)
		assert.NotErrorIs(t, err, context.DeadlineExceeded, "the wait ran out its deadline")
		assert.ErrorContains(t, err, `resolve "identity": Consul has not answered: healthy instances of "identity"`)
		assert.ErrorContains(t, err, "connection refused")
	}
	assert.Empty(t, res.Instances())

	res.Close()
	require.ErrorIs(t, res.Wait(t.Context()), registry.ErrClosed)
	res.Close() // closing again does nothing
}

// TestCloseStopsTheWatch is not parallel: it counts goroutines.
func TestCloseStopsTheWatch(t *testing.T) {
	reg, err := registry.New(registry.Config{Addr: "127.0.0.1:1"})
	require.NoError(t, err)
	before := runtime.NumGoroutine()
	var closers []func()
	for range 10 {
		closers = append(closers,
			reg.Resolver("identity", registry.WithBackoff(time.Millisecond, 2*time.Millisecond)).Close,
			reg.WatchCatalog(registry.WithBackoff(time.Millisecond, 2*time.Millisecond)).Close)
	}
	assert.GreaterOrEqual(t, runtime.NumGoroutine(), before+20)
	time.Sleep(50 * time.Millisecond) // let them fail a few times
	for _, c := range closers {
		c()
	}
	// Close has waited for the watch goroutines; what may linger briefly
	// is the HTTP transport's. (Not assert.Eventually: it adds goroutines.)
	deadline := time.Now().Add(time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	assert.LessOrEqual(t, runtime.NumGoroutine(), before)
}

// TestKeepRegisteredComesBackCriticalWhenNotReady: an instance that is not
// ready when its agent forgets it (reaped for failing its check, say)
// comes back critical, not passing until its next check.
func TestKeepRegisteredComesBackCriticalWhenNotReady(t *testing.T) {
	t.Parallel()
	reg, consul := newRegistry(t)
	a := newBackend(t)
	a.setReady(false)
	inst := a.instance("unready")
	id := register(t, reg, inst)
	keepRegistered(t, reg, id, inst, func(context.Context) bool { return false })

	consul.Restart()
	require.Eventually(t, func() bool {
		_, _, err := reg.Client().Agent().Service(id, nil)
		return err == nil
	}, 10*checkInterval, 10*time.Millisecond, "the instance is not registered again")
	for range 20 {
		entries, _, err := reg.Client().Health().Service("unready", "", true, nil)
		require.NoError(t, err)
		require.Empty(t, entries, "an instance that is not ready came back passing")
		time.Sleep(checkInterval / 10)
	}
}

// TestFlakyConsulStillDropsLeavers: a Consul that fails queries now and
// then, more often than the settling time, must not keep an instance that
// left. Each failure settles the watcher for a while (WithSettle); settling
// again and again carried the leaver forward for ever.
func TestFlakyConsulStillDropsLeavers(t *testing.T) {
	t.Parallel()
	consul := kerneltest.StartConsul(t)
	target, err := url.Parse("http://" + consul.Addr())
	require.NoError(t, err)
	proxy := httputil.NewSingleHostReverseProxy(target)
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Every blocking health query fails after 200ms, as behind a
		// proxy that cuts long polls short: the watcher learns each
		// change only from the query after a failure.
		if strings.HasPrefix(r.URL.Path, "/v1/health/") && r.URL.Query().Get("index") != "" {
			select {
			case <-time.After(200 * time.Millisecond):
			case <-r.Context().Done():
			}
			http.Error(w, "upstream timed out", http.StatusGatewayTimeout)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(flaky.Close)
	var logs logBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("resolver's log:\n%s", logs.String())
		}
	})
	reg, err := registry.New(registry.Config{Addr: flaky.Listener.Addr().String(), CheckInterval: checkInterval},
		registry.WithLogger(logs.logger()))
	require.NoError(t, err)
	a, b := newBackend(t), newBackend(t)
	register(t, reg, a.instance("flaky"))
	register(t, reg, b.instance("flaky"))
	const settleFor = time.Second
	res := reg.Resolver("flaky", registry.WithBackoff(20*time.Millisecond, 50*time.Millisecond), registry.WithSettle(settleFor))
	t.Cleanup(res.Close)
	waitForInstances(t, res, settle, a.hostPort(), b.hostPort())

	b.setReady(false)
	// Consul's check interval, then at most the settling under way.
	waitForInstances(t, res, 2*checkInterval+settleFor+time.Second, a.hostPort())
}

// TestSecondRestartWithinTheCooldownLosesNoInstance: an agent that
// restarts again soon after a settling ended (within its cooldown, when a
// failure starts no new settling) is still told apart by its new ID, and
// the resolver keeps the instance while the new agent relearns it.
func TestSecondRestartWithinTheCooldownLosesNoInstance(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("resolver's log:\n%s", logs.String())
		}
	})
	reg, consul := newRegistry(t, registry.WithLogger(logs.logger()))
	a := newBackend(t)
	inst := a.instance("again")
	id := register(t, reg, inst)
	keepRegistered(t, reg, id, inst, nil)
	const settleFor = 5 * time.Second
	res := reg.Resolver("again", registry.WithBackoff(20*time.Millisecond, 100*time.Millisecond), registry.WithSettle(settleFor))
	t.Cleanup(res.Close)
	waitForInstances(t, res, settle, a.hostPort())

	// The first restart, one the resolver sees fail: a settling. (A
	// restart between two of its queries, whose new agent is up before the
	// next, is seen only when that query's wait ends.)
	consul.Stop()
	require.Eventually(t, func() bool { return logs.count(slog.LevelWarn, "Consul query failed") > 0 },
		10*time.Second, 10*time.Millisecond)
	consul.Restart()
	require.Eventually(t, func() bool { return logs.count(slog.LevelInfo, "Consul answers again") == 1 },
		10*time.Second, 10*time.Millisecond)
	settled := time.Now()
	require.Eventually(t, func() bool {
		entries, _, err := reg.Client().Health().Service("again", "", true, nil)
		return err == nil && len(entries) == 1
	}, 3*checkInterval+settle, 20*time.Millisecond, "the instance registers again and passes")
	time.Sleep(time.Until(settled.Add(settleFor + 500*time.Millisecond))) // the settling is over: its cooldown

	var emptied atomic.Bool
	sampling, stopSampling := context.WithCancel(context.Background())
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for sampling.Err() == nil {
			if len(res.Instances()) == 0 {
				emptied.Store(true)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	consul.Restart() // the second, within the cooldown
	require.Eventually(t, func() bool {
		entries, _, err := reg.Client().Health().Service("again", "", true, nil)
		return err == nil && len(entries) == 1
	}, 3*checkInterval+settle, 20*time.Millisecond, "the instance registers again and passes")
	time.Sleep(time.Second)
	stopSampling()
	<-sampled
	assert.False(t, emptied.Load(), "the resolver went empty while the restarted agent relearned the instance")
}

// TestResolverBornInAnOutageAnswersSoonAfterConsulDoes: a resolver made
// while Consul is down fails its waits at once, so it asks Consul again
// within a second rather than back off to its usual most: calls to its
// service work again soon after Consul does.
func TestResolverBornInAnOutageAnswersSoonAfterConsulDoes(t *testing.T) {
	t.Parallel()
	consul := kerneltest.StartConsul(t)
	reg, err := registry.New(registry.Config{Addr: consul.Addr()})
	require.NoError(t, err)
	consul.Stop()
	res := reg.Resolver("identity", registry.WithBackoff(100*time.Millisecond, time.Minute))
	t.Cleanup(res.Close)
	require.Error(t, res.Wait(t.Context()))
	time.Sleep(6 * time.Second) // long enough for the backoff to pass a few seconds

	consul.Restart()
	back := time.Now()
	require.Eventually(t, func() bool { return res.Wait(t.Context()) == nil }, 20*time.Second, 10*time.Millisecond)
	assert.Less(t, time.Since(back), 3*time.Second, "the resolver backed off as if it had answers to serve")
}
