package registry_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/kerneltest"
	"portcullis.dev/kernel/registry"
)

// checkInterval is Consul's minimum, so that Consul notices health changes
// quickly.
const checkInterval = time.Second

// newRegistry starts a Consul agent for t and returns a registry on it.
func newRegistry(t *testing.T, opts ...registry.Option) (*registry.Registry, *kerneltest.Consul) {
	t.Helper()
	consul := kerneltest.StartConsul(t)
	reg, err := registry.New(registry.Config{Addr: consul.Addr(), CheckInterval: checkInterval}, opts...)
	require.NoError(t, err)
	return reg, consul
}

// backend is an instance's readiness endpoint that a test can turn
// unhealthy.
type backend struct {
	srv    *httptest.Server
	status atomic.Int32
}

func newBackend(t *testing.T) *backend {
	t.Helper()
	b := &backend{}
	b.status.Store(http.StatusOK)
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != registry.DefaultCheckPath {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(b.status.Load()))
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) instance(service string, connect ...string) registry.Instance {
	host, port, _ := net.SplitHostPort(b.srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	return registry.Instance{Service: service, Address: host, Port: p, Version: "v1.2.3", ConnectServices: connect}
}

// setReady switches the answer of the readiness endpoint.
func (b *backend) setReady(ready bool) {
	if ready {
		b.status.Store(http.StatusOK)
	} else {
		b.status.Store(http.StatusServiceUnavailable)
	}
}

func (b *backend) hostPort() string { return b.srv.Listener.Addr().String() }

// logBuffer collects JSON log records.
type logBuffer struct{ kerneltest.Buffer }

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// count returns how many records have the level and a message containing
// msg.
func (l *logBuffer) count(level slog.Level, msg string) int {
	n := 0
	for line := range strings.Lines(l.String()) {
		var rec struct{ Level, Msg string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Level == level.String() && strings.Contains(rec.Msg, msg) {
			n++
		}
	}
	return n
}

// register registers inst and deregisters it when the test ends.
func register(t *testing.T, reg *registry.Registry, inst registry.Instance) string {
	t.Helper()
	id, err := reg.Register(t.Context(), inst)
	require.NoError(t, err)
	t.Cleanup(func() { _ = reg.Deregister(context.Background(), id) })
	return id
}

// waitForInstances waits, on the resolver's updates, until it holds
// instances at exactly the given host:ports.
func waitForInstances(t *testing.T, res *registry.Resolver, timeout time.Duration, want ...string) {
	t.Helper()
	slices.Sort(want)
	deadline := time.After(timeout)
	for {
		got := hostPorts(res.Instances())
		slices.Sort(got)
		if slices.Equal(got, want) {
			return
		}
		select {
		case <-res.Updates():
		case <-deadline:
			t.Fatalf("resolver of %q holds %v after %s, want %v", res.Service(), got, timeout, want)
		}
	}
}

// resolverLag waits until both Consul and the resolver hold exactly the
// healthy instances at the given host:ports, and returns how long after
// Consul the resolver got there. Measuring from Consul leaves out what the
// resolver cannot change: Consul's check interval, and a new agent's habit
// of holding back check updates for up to three seconds while it first
// syncs with its servers.
func resolverLag(t *testing.T, reg *registry.Registry, res *registry.Resolver, timeout time.Duration, want ...string) time.Duration {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	consulAt := make(chan time.Time, 1)
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			entries, _, err := reg.Client().Health().Service(res.Service(), "", true, (&api.QueryOptions{}).WithContext(ctx))
			if err == nil {
				got := make([]string, 0, len(entries))
				for _, e := range entries {
					got = append(got, net.JoinHostPort(e.Service.Address, strconv.Itoa(e.Service.Port)))
				}
				if slices.Sort(got); slices.Equal(got, want) {
					consulAt <- time.Now()
					return
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	waitForInstances(t, res, timeout, want...)
	resolvedAt := time.Now()
	select {
	case at := <-consulAt:
		return max(resolvedAt.Sub(at), 0)
	case <-ctx.Done():
		t.Fatalf("Consul did not report %v within %s", want, timeout)
		return 0
	}
}

// hostPorts returns the instances' addresses, for comparisons that ignore
// IDs.
func hostPorts(instances []registry.Instance) []string {
	out := make([]string, 0, len(instances))
	for _, i := range instances {
		out = append(out, i.HostPort())
	}
	return out
}

// keepRegistered runs reg.KeepRegistered for the instance until the test
// ends.
func keepRegistered(t *testing.T, reg *registry.Registry, id string, inst registry.Instance, ready func(context.Context) bool) {
	ctx, cancel := context.WithCancel(context.Background())
	kept := make(chan struct{})
	go func() { defer close(kept); reg.KeepRegistered(ctx, id, inst, ready) }()
	t.Cleanup(func() { cancel(); <-kept })
}
