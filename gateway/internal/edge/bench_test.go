package edge_test

import (
	"context"
	"log/slog"
	"math/bits"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/heapfloor"
	identityv1 "portcullis.dev/proto/identity/v1"
	"portcullis.dev/proto/identity/v1/identityv1connect"

	"portcullis.dev/gateway/config"
	"portcullis.dev/gateway/internal/edge"
)

// sample is what load phases of one path measured, summed over the
// phases: calls that succeeded, time spent, CPU time this process spent,
// the calls' latencies, and each phase's p99.
type sample struct {
	calls   int
	elapsed time.Duration
	cpu     time.Duration
	lat     latencies
	p99s    []time.Duration
}

func (s *sample) add(o sample) {
	s.calls += o.calls
	s.elapsed += o.elapsed
	s.cpu += o.cpu
	if o.lat.n > 0 {
		s.p99s = append(s.p99s, o.percentile(99))
	}
	s.lat.merge(&o.lat)
}

// phaseP99 is the median of the phases' p99s. A stall of the machine
// during one phase (seen here: 50–70 ms, in nginx and in this process
// alike) delays a percent of that path's calls and moves the p99 of all
// its phases pooled by milliseconds; the median over phases leaves it out,
// as it leaves out a fast phase, and still counts the tail every phase has.
func (s *sample) phaseP99() time.Duration {
	if len(s.p99s) == 0 {
		return 0
	}
	p := slices.Clone(s.p99s)
	slices.Sort(p)
	if n := len(p); n%2 == 0 {
		return (p[n/2-1] + p[n/2]) / 2
	}
	return p[len(p)/2]
}

func (s *sample) rps() float64 { return float64(s.calls) / s.elapsed.Seconds() }

// cpuPerCall is the CPU time this process spent per call.
func (s *sample) cpuPerCall() time.Duration { return s.cpu / time.Duration(max(s.calls, 1)) }

// percentile returns the p-th percentile latency (0 < p < 100).
func (s *sample) percentile(p int) time.Duration { return s.lat.percentile(p) }

// latencies counts latencies in buckets an 128th of a power of two wide,
// under 0.8 % apart, rather than keeping each: the list of every call of
// a run (millions) was live heap of this process, which hosts client and
// service, 16 MB by the last phases against 3 MB at the start; counted,
// it stays at 29 KiB a path.
type latencies struct {
	n      int
	counts [(64 - latencyShift + 1) << latencyShift]uint32
}

// latencyShift: 2^latencyShift buckets per power of two.
const latencyShift = 7

func latencyBucket(d time.Duration) int {
	v := uint64(max(d, 0))
	if v < 1<<latencyShift {
		return int(v)
	}
	k := bits.Len64(v) - 1 // v is in [2^k, 2^(k+1))
	sub := (v >> (k - latencyShift)) & (1<<latencyShift - 1)
	return (k-latencyShift+1)<<latencyShift + int(sub)
}

// latencyOf is the middle of bucket i.
func latencyOf(i int) time.Duration {
	if i < 1<<latencyShift {
		return time.Duration(i)
	}
	k := i>>latencyShift + latencyShift - 1
	sub := uint64(i & (1<<latencyShift - 1))
	low := (1<<latencyShift + sub) << (k - latencyShift)
	return time.Duration(low + 1<<(k-latencyShift)/2)
}

func (l *latencies) record(d time.Duration) {
	l.counts[latencyBucket(d)]++
	l.n++
}

func (l *latencies) merge(o *latencies) {
	for i, c := range o.counts {
		l.counts[i] += c
	}
	l.n += o.n
}

// percentile is the latency below which p percent of those recorded fall.
func (l *latencies) percentile(p int) time.Duration {
	if l.n == 0 {
		return 0
	}
	rank := min(l.n*p/100, l.n-1)
	seen := 0
	for i, c := range l.counts {
		seen += int(c)
		if seen > rank {
			return latencyOf(i)
		}
	}
	return latencyOf(len(l.counts) - 1)
}

// closedLoop calls call from workers goroutines, each starting its next
// call when the last one returned, for d: the throughput it finds is the
// path's peak for that many concurrent callers.
func closedLoop(b *testing.B, d time.Duration, workers int, cpuNow func() time.Duration, call func(context.Context) error) sample {
	var (
		mu  sync.Mutex
		all sample
		wg  sync.WaitGroup
	)
	ctx := context.Background()
	cpu := cpuNow()
	start := time.Now()
	deadline := start.Add(d)
	for range workers {
		wg.Go(func() {
			var lat latencies
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := call(ctx); err != nil {
					b.Error(err)
					return
				}
				lat.record(time.Since(t0))
			}
			mu.Lock()
			all.lat.merge(&lat)
			mu.Unlock()
		})
	}
	wg.Wait()
	all.calls, all.elapsed, all.cpu = all.lat.n, time.Since(start), cpuNow()-cpu
	return all
}

// openLoop starts calls at a fixed rate for d, each in its own goroutine,
// whether or not earlier calls returned, as independent clients do. The
// pacer's ticks are exact to the microsecond (see [pacer]); when the pacer
// itself was held up, the calls it owes start at once, so the rate holds.
func openLoop(b *testing.B, d time.Duration, rate float64, call func(context.Context) error) sample {
	var (
		mu  sync.Mutex
		all sample
		wg  sync.WaitGroup
	)
	ctx := context.Background()
	interval := time.Duration(float64(time.Second) / rate)
	n := int(d.Seconds() * rate)
	p, err := newPacer(interval)
	require.NoError(b, err)
	defer p.close()
	start := time.Now()
	for started := 0; started < n; {
		ticks, err := p.wait()
		require.NoError(b, err)
		for range min(ticks, n-started) {
			started++
			wg.Go(func() {
				t0 := time.Now()
				if err := call(ctx); err != nil {
					b.Error(err)
					return
				}
				l := time.Since(t0)
				mu.Lock()
				all.lat.record(l)
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	all.calls, all.elapsed = all.lat.n, time.Since(start)
	return all
}

// withoutCollections collects garbage, then runs f with the collector
// off, and turns it back on.
func withoutCollections[T any](f func() T) T {
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	return f()
}

// path is one way to reach the service.
type path struct {
	name string
	call func(context.Context) error
	res  sample
}

// interleave measures every path in rounds, one slice of each path per
// round in an order that rotates with the round, so that a change of the
// machine's other load during the run falls on all paths alike instead of
// on whichever ran last.
func interleave(rounds int, paths []*path, measure func(call func(context.Context) error) sample) {
	for r := range rounds {
		for i := range paths {
			p := paths[(i+r)%len(paths)]
			p.res.add(measure(p.call))
		}
	}
}

// openPaths are the paths the open loop at half of peak measures: direct,
// through the gateway, direct again (the control), through the bare
// forwarder and, when it is installed, through nginx.
type openPaths struct{ direct, gateway, control, forwarder, nginx *path }

func newOpenPaths(direct, gateway, control, forwarder func(context.Context) error, nginx *path) *openPaths {
	o := &openPaths{
		direct:    &path{name: "direct", call: direct},
		gateway:   &path{name: "gateway", call: gateway},
		control:   &path{name: "control", call: control},
		forwarder: &path{name: "forwarder", call: forwarder},
	}
	if nginx != nil {
		o.nginx = &path{name: "nginx", call: nginx.call}
	}
	return o
}

func (o *openPaths) list() []*path {
	l := []*path{o.direct, o.gateway, o.control, o.forwarder}
	if o.nginx != nil {
		l = append(l, o.nginx)
	}
	return l
}

func µs(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// BenchmarkGatewayVsDirect measures, in one run on loopback, a ~1 KB
// Connect unary call (CreateUser, protobuf over h2c with prior knowledge)
// made directly to an Identity instance, through the gateway, and through
// nginx proxying h2c to the same instance (grpc_pass; see [startNginx]),
// with one client and the same client settings for all three. The instance
// answers with the headers the real service sends, not the ones that
// report to tests what reached it (see identityServer). It runs its
// phases once whatever b.N is:
//
//	go test -run '^$' -bench GatewayVsDirect -benchtime 1x ./internal/edge
//
// It reports, with b.ReportMetric:
//
//   - Peak throughput: 16 closed-loop callers per path. direct-rps,
//     gateway-rps, nginx-rps; gateway/direct (target ≥ 0.7) and
//     gateway/nginx (target ≥ 1); the p50 and p99 latency of each path
//     under that load (direct-p50-µs, ..., nginx-p99-µs).
//   - Latency at half of peak: an open-loop load at half the gateway's own
//     closed-loop peak (half-peak-rps), offered alike to every path, so the
//     gateway runs at half its capacity and the difference to direct at the
//     same rate is what the gateway adds: half-peak-direct-p99-µs,
//     half-peak-gateway-p99-µs, half-peak-nginx-p99-µs, and
//     half-peak-added-p99-µs = gateway − direct (target < 1000), each
//     p99 the median of the ten phases' (see [sample.phaseP99]);
//     half-peak-added-pooled-p99-µs is the same from all phases pooled.
//     A control, the direct path measured again on a second connection,
//     says how much two measurements of one path differ on this machine
//     at this load: half-peak-control-p99-µs = control − direct.
//   - Token validation: the same closed loop with a Bearer access token,
//     direct and through the gateway. gateway/direct-with-token, and
//     token-overhead-%, the relative drop of gateway/direct that the token
//     causes (target < 5, thanks to the verified-token cache). The
//     service's own token check is on both sides of each ratio, so what
//     remains is the gateway's.
//
// Two figures say where the gateway's cost lies. reverseproxy-rps is a
// bare httputil.ReverseProxy (no access checks, metrics or logs) between
// an h2c net/http server and an h2c net/http transport, what the gateway
// still uses for HTTP/1.1 clients: gateway/reverseproxy is what h2proxy's
// frame-by-frame forwarding gains over net/http, access checks, metrics
// and logs included. A bare TCP forwarder in this process (see
// [startForwarderHere]) is the floor of a hop here: forwarder-rps,
// gateway/forwarder and half-peak-forwarder-added-p99-µs. direct-cpu-µs,
// gateway-cpu-µs and
// reverseproxy-cpu-µs are the CPU time this process (client, proxy and
// service) spends per call on each path.
//
// Without nginx on the PATH (or in /usr/sbin) the nginx figures are left
// out and the benchmark says so in its log. The paths are measured in
// interleaved rounds (see [interleave]): on a shared machine, load from
// elsewhere then skews the ratios less.
//
// Client, gateway and service run in this one process and share its
// cores; nginx runs beside it. The same gateway also runs as a process of
// its own, its binary as deployed (process-rps, process/direct,
// process/nginx, process-cpu-µs), measured in the closed loop only: on
// two shared cores each hop between processes costs the kernel's context
// switches, where in one process it is a goroutine switch, so it shows
// what the machine, not the proxy, costs.
//
// Last, the proxies get cores of their own, as when deployed: this process
// (client and service) is bound to the first CPU, the gateway's binary and
// nginx to the others (see [split]), and the closed and open loops run
// again for direct, the gateway process and nginx (own-cores-*: rps,
// gateway/direct, gateway/nginx, token-overhead-%, half-peak-added-p99-µs
// with its control, half-peak-nginx-added-p99-µs). The proxy then competes
// with neither client nor service, but every call crosses between cores.
// A bare TCP forwarder on the same core (see [startForwarder]) is the floor
// of any proxy there, a hop through one more process and pair of sockets:
// own-cores-forwarder-rps, own-cores-gateway/forwarder,
// own-cores-half-peak-forwarder-added-p99-µs (forwarder − direct) and
// own-cores-half-peak-added-over-forwarder-p99-µs (gateway − forwarder),
// what the gateway adds beyond the hop itself; own-cores-half-peak-*-p50-µs
// are the medians of the open loop there. What the gateway process
// allocates per call there (own-cores-half-peak-gateway-alloc-KiB) and how
// often it collects while it serves (own-cores-half-peak-gateway-
// collections/s) come from its own Go metrics: each collection takes a few
// ms of wall clock on its one CPU. In that open loop this process
// collects garbage only between phases (see [withoutCollections]): it
// stands for the clients' and the services' machines, whose collections
// are not the proxy's latency.
//
// CPU figures count this process, the gateway's own and nginx's. The
// figures compare paths on one machine in one run; they are not capacity
// figures for production.
func BenchmarkGatewayVsDirect(b *testing.B) {
	e := newEnv(b)
	// The gateway's binary sets its heap floor (gateway.heap_floor_bytes,
	// PORTCULLIS_GATEWAY_HEAP_FLOOR_BYTES=0 turns it off); the gateway in
	// this process runs with the same one, which in one process covers
	// client and service too, on every path alike.
	cfg, err := config.Load(nil)
	require.NoError(b, err)
	stopFloor := heapfloor.Set(cfg.Gateway.HeapFloorBytes)
	defer stopFloor() // a second call does nothing
	inst := e.startIdentityServer(b, &identityServer{name: "bench"})
	gw := e.startGateway(b, e.config(b), edge.WithLogger(slog.New(slog.DiscardHandler)))
	processURL, processPID := e.startGatewayProcess(b)
	nginxURL, nginxPID := startNginx(b, inst.addr)
	forwarderURL, forwarderPID := startForwarder(b, inst.addr)
	forwarderHere := startForwarderHere(b, inst.addr)
	stdURL := startReverseProxy(b, inst.addr)
	cpuNow := func() time.Duration { return processCPU(processPID, nginxPID) }

	client := h2cClient()
	token := e.auth.Issue()
	msg := &identityv1.CreateUserRequest{Email: "bench@example.com", DisplayName: strings.Repeat("x", 1000)}
	callWith := func(client *http.Client, baseURL, token string) func(context.Context) error {
		c := identityv1connect.NewIdentityServiceClient(client, baseURL)
		return func(ctx context.Context) error {
			req := connect.NewRequest(msg)
			if token != "" {
				req.Header().Set("Authorization", "Bearer "+token)
			}
			_, err := c.CreateUser(ctx, req)
			return err
		}
	}
	call := func(baseURL, token string) func(context.Context) error { return callWith(client, baseURL, token) }
	var (
		direct       = &path{name: "direct", call: call("http://"+inst.addr, "")}
		gateway      = &path{name: "gateway", call: call(gw.url, "")}
		directToken  = &path{name: "direct with token", call: call("http://"+inst.addr, token)}
		gatewayToken = &path{name: "gateway with token", call: call(gw.url, token)}
		stdProxy     = &path{name: "reverseproxy", call: call(stdURL, "")}
		forwarder    = &path{name: "forwarder", call: call(forwarderHere, "")}
		ownProcess   = &path{name: "gateway process", call: call(processURL, "")}
		nginx        *path
		paths        = []*path{direct, gateway, directToken, gatewayToken, stdProxy, ownProcess, forwarder}
	)
	if nginxURL != "" {
		nginx = &path{name: "nginx", call: call(nginxURL, "")}
		paths = append(paths, nginx)
	}

	// Warm up connections, resolvers and the token caches.
	deadline := time.Now().Add(15 * time.Second)
	for gatewayToken.call(context.Background()) != nil {
		if time.Now().After(deadline) {
			b.Fatal("the gateway never routed to the instance")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, p := range paths {
		if err := p.call(context.Background()); err != nil {
			b.Fatalf("%s: %v", p.name, err)
		}
		closedLoop(b, 200*time.Millisecond, 16, cpuNow, p.call)
	}

	const (
		workers = 16
		// Ten rounds: the token overhead is a ratio of four throughputs,
		// and with five its spread between runs was wider than the target.
		rounds = 10
		slice  = 500 * time.Millisecond // per path and round
	)
	b.ResetTimer()
	interleave(rounds, paths, func(call func(context.Context) error) sample {
		return closedLoop(b, slice, workers, cpuNow, call)
	})
	halfPeak := gateway.res.rps() / 2
	// The control is the direct path again, on a connection of its own:
	// how far two measurements of the same path differ is what this
	// machine's noise is at this load.
	control := callWith(h2cClient(), "http://"+inst.addr, "")
	open := newOpenPaths(direct.call, gateway.call, control, forwarder.call, nginx)
	interleave(rounds, open.list(), func(call func(context.Context) error) sample {
		return openLoop(b, slice, halfPeak, call)
	})

	// The same again with the proxies on cores of their own, as deployed:
	// this process (client and service) on the first CPU, the gateway's
	// binary and nginx on the others.
	var (
		ownDirect       = &path{name: "direct, own cores", call: direct.call}
		ownGateway      = &path{name: "gateway process, own cores", call: ownProcess.call}
		ownDirectToken  = &path{name: "direct with token, own cores", call: directToken.call}
		ownGatewayToken = &path{name: "gateway process with token, own cores", call: call(processURL, token)}
		ownNginx        *path
		ownForwarder    = &path{name: "forwarder, own cores", call: call(forwarderURL, "")}
		ownOpen         = newOpenPaths(direct.call, ownProcess.call, control, ownForwarder.call, nginx)
	)
	own := []*path{ownDirect, ownGateway, ownDirectToken, ownGatewayToken, ownForwarder}
	if nginx != nil {
		ownNginx = &path{name: "nginx, own cores", call: nginx.call}
		own = append(own, ownNginx)
	}
	var churn goStats // the gateway process's, over the open loop on its own core
	undo, ownCores := split(b, processPID, nginxPID, forwarderPID)
	defer undo()
	if ownCores {
		time.Sleep(2 * time.Second) // Go adapts GOMAXPROCS to the new affinity within a second or two
		for _, p := range own {
			closedLoop(b, 200*time.Millisecond, workers, cpuNow, p.call)
		}
		interleave(rounds, own, func(call func(context.Context) error) sample {
			return closedLoop(b, slice, workers, cpuNow, call)
		})
		// Here this process is only the load and the service, which stand
		// for machines of their own; the proxies collect in their own
		// processes. Its collections, every few tens of milliseconds
		// on one CPU, set the p99 of every path (direct p99 5 ms at
		// 7,000 calls/s with them, 0.15 ms without), and any difference
		// under that is lost in them. So it collects between phases, not
		// during: a phase allocates 100 MB or so. Its heap floor would set
		// GOGC again after each collection: it stops first.
		stopFloor()
		before := readGoStats(b, processURL+"/metrics")
		interleave(rounds, ownOpen.list(), func(call func(context.Context) error) sample {
			return withoutCollections(func() sample { return openLoop(b, slice, ownGateway.res.rps()/2, call) })
		})
		churn = readGoStats(b, processURL+"/metrics")
		churn.allocated -= before.allocated
		churn.collections -= before.collections
	} else {
		b.Log("fewer than two CPUs: no figures with the proxies on cores of their own")
	}
	b.StopTimer()

	d, g := &direct.res, &gateway.res
	b.ReportMetric(d.rps(), "direct-rps")
	b.ReportMetric(g.rps(), "gateway-rps")
	b.ReportMetric(g.rps()/d.rps(), "gateway/direct")
	b.ReportMetric(µs(d.percentile(50)), "direct-p50-µs")
	b.ReportMetric(µs(d.percentile(99)), "direct-p99-µs")
	b.ReportMetric(µs(g.percentile(50)), "gateway-p50-µs")
	b.ReportMetric(µs(g.percentile(99)), "gateway-p99-µs")
	b.ReportMetric(µs(d.cpuPerCall()), "direct-cpu-µs")
	b.ReportMetric(µs(g.cpuPerCall()), "gateway-cpu-µs")
	sp := &stdProxy.res
	b.ReportMetric(sp.rps(), "reverseproxy-rps")
	b.ReportMetric(g.rps()/sp.rps(), "gateway/reverseproxy")
	b.ReportMetric(µs(sp.cpuPerCall()), "reverseproxy-cpu-µs")
	op := &ownProcess.res
	b.ReportMetric(op.rps(), "process-rps")
	b.ReportMetric(op.rps()/d.rps(), "process/direct")
	b.ReportMetric(µs(op.cpuPerCall()), "process-cpu-µs")
	if nginx != nil {
		n := &nginx.res
		b.ReportMetric(op.rps()/n.rps(), "process/nginx")
		b.ReportMetric(n.rps(), "nginx-rps")
		b.ReportMetric(g.rps()/n.rps(), "gateway/nginx")
		b.ReportMetric(µs(n.percentile(50)), "nginx-p50-µs")
		b.ReportMetric(µs(n.percentile(99)), "nginx-p99-µs")
	}

	b.ReportMetric(halfPeak, "half-peak-rps")
	hd, hg := &open.direct.res, &open.gateway.res
	b.ReportMetric(µs(hd.percentile(50)), "half-peak-direct-p50-µs")
	b.ReportMetric(µs(hg.percentile(50)), "half-peak-gateway-p50-µs")
	b.ReportMetric(µs(hd.phaseP99()), "half-peak-direct-p99-µs")
	b.ReportMetric(µs(hg.phaseP99()), "half-peak-gateway-p99-µs")
	b.ReportMetric(µs(hg.phaseP99()-hd.phaseP99()), "half-peak-added-p99-µs")
	b.ReportMetric(µs(open.control.res.phaseP99()-hd.phaseP99()), "half-peak-control-p99-µs")
	b.ReportMetric(µs(hg.percentile(99)-hd.percentile(99)), "half-peak-added-pooled-p99-µs")
	b.ReportMetric(forwarder.res.rps(), "forwarder-rps")
	b.ReportMetric(g.rps()/forwarder.res.rps(), "gateway/forwarder")
	b.ReportMetric(µs(open.forwarder.res.phaseP99()-hd.phaseP99()), "half-peak-forwarder-added-p99-µs")
	if nginx != nil {
		b.ReportMetric(µs(open.nginx.res.phaseP99()), "half-peak-nginx-p99-µs")
	}

	dt, gt := &directToken.res, &gatewayToken.res
	b.ReportMetric(gt.rps()/dt.rps(), "gateway/direct-with-token")
	b.ReportMetric(100*(1-(gt.rps()/dt.rps())/(g.rps()/d.rps())), "token-overhead-%")

	if !ownCores {
		return
	}
	od, og := &ownDirect.res, &ownGateway.res
	b.ReportMetric(od.rps(), "own-cores-direct-rps")
	b.ReportMetric(og.rps(), "own-cores-gateway-rps")
	b.ReportMetric(og.rps()/od.rps(), "own-cores-gateway/direct")
	b.ReportMetric(µs(od.cpuPerCall()), "own-cores-direct-cpu-µs")
	b.ReportMetric(µs(og.cpuPerCall()), "own-cores-gateway-cpu-µs")
	b.ReportMetric(µs(og.percentile(50)), "own-cores-gateway-p50-µs")
	b.ReportMetric(µs(og.percentile(99)), "own-cores-gateway-p99-µs")
	odt, ogt := &ownDirectToken.res, &ownGatewayToken.res
	b.ReportMetric(100*(1-(ogt.rps()/odt.rps())/(og.rps()/od.rps())), "own-cores-token-overhead-%")
	b.ReportMetric(og.rps()/2, "own-cores-half-peak-rps")
	ohd, ohg := &ownOpen.direct.res, &ownOpen.gateway.res
	b.ReportMetric(µs(ohd.percentile(50)), "own-cores-half-peak-direct-p50-µs")
	b.ReportMetric(µs(ohg.percentile(50)), "own-cores-half-peak-gateway-p50-µs")
	b.ReportMetric(µs(ownOpen.forwarder.res.percentile(50)), "own-cores-half-peak-forwarder-p50-µs")
	b.ReportMetric(µs(ohd.phaseP99()), "own-cores-half-peak-direct-p99-µs")
	b.ReportMetric(µs(ohg.phaseP99()), "own-cores-half-peak-gateway-p99-µs")
	b.ReportMetric(µs(ohg.phaseP99()-ohd.phaseP99()), "own-cores-half-peak-added-p99-µs")
	b.ReportMetric(µs(ownOpen.control.res.phaseP99()-ohd.phaseP99()), "own-cores-half-peak-control-p99-µs")
	b.ReportMetric(µs(ohg.percentile(99)-ohd.percentile(99)), "own-cores-half-peak-added-pooled-p99-µs")
	of, ohf := &ownForwarder.res, &ownOpen.forwarder.res
	b.ReportMetric(of.rps(), "own-cores-forwarder-rps")
	b.ReportMetric(og.rps()/of.rps(), "own-cores-gateway/forwarder")
	b.ReportMetric(µs(ohf.phaseP99()-ohd.phaseP99()), "own-cores-half-peak-forwarder-added-p99-µs")
	b.ReportMetric(µs(ohg.phaseP99()-ohf.phaseP99()), "own-cores-half-peak-added-over-forwarder-p99-µs")
	b.ReportMetric(churn.allocated/float64(max(ohg.calls, 1))/1024, "own-cores-half-peak-gateway-alloc-KiB")
	b.ReportMetric(churn.collections/ohg.elapsed.Seconds(), "own-cores-half-peak-gateway-collections/s")
	if ownNginx != nil {
		on := &ownNginx.res
		b.ReportMetric(on.rps(), "own-cores-nginx-rps")
		b.ReportMetric(og.rps()/on.rps(), "own-cores-gateway/nginx")
		b.ReportMetric(µs(on.percentile(99)), "own-cores-nginx-p99-µs")
		b.ReportMetric(µs(ownOpen.nginx.res.phaseP99()-ohd.phaseP99()), "own-cores-half-peak-nginx-added-p99-µs")
		b.ReportMetric(µs(ownOpen.nginx.res.percentile(50)), "own-cores-half-peak-nginx-p50-µs")
	}
}

// startReverseProxy serves, until the test ends, a bare
// httputil.ReverseProxy to upstream (host:port): HTTP/1.1 and h2c in, h2c
// out over a transport configured like the kernel's, streamed responses
// flushed as the gateway does. It returns its base URL.
func startReverseProxy(t testing.TB, upstream string) string {
	t.Helper()
	transport := &http.Transport{MaxIdleConnsPerHost: 16, Protocols: new(http.Protocols)}
	transport.Protocols.SetUnencryptedHTTP2(true)
	proxy := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(&url.URL{Scheme: "http", Host: upstream}) },
		Transport: transport,
	}
	srv := &http.Server{Handler: proxy, Protocols: new(http.Protocols),
		HTTP2: &http.HTTP2Config{MaxReceiveBufferPerStream: 1 << 20}}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		transport.CloseIdleConnections()
	})
	return "http://" + ln.Addr().String()
}

func TestLatencies(t *testing.T) {
	for _, d := range []time.Duration{0, 1, 127, 128, 129, 255, 256, 1000, 73 * time.Microsecond, 4321 * time.Microsecond, 3 * time.Second} {
		var l latencies
		l.record(d)
		got := l.percentile(50)
		assert.InDelta(t, float64(d), float64(got), float64(d)/128+1, "latency %v comes back as %v", d, got)
	}
	var l latencies
	for i := 1; i <= 1000; i++ {
		l.record(time.Duration(i) * time.Microsecond)
	}
	assert.InEpsilon(t, 501*time.Microsecond, l.percentile(50), 0.01)
	assert.InEpsilon(t, 991*time.Microsecond, l.percentile(99), 0.01)
	var m latencies
	m.merge(&l)
	m.merge(&l)
	assert.Equal(t, 2000, m.n)
	assert.Equal(t, l.percentile(99), m.percentile(99))
}

// BenchmarkCall makes the 1 KB Connect unary call of
// [BenchmarkGatewayVsDirect] directly and through the gateway, in this one
// process, reporting time, bytes and allocations per call of client,
// service and (on the second path) gateway together: the difference
// between the two is what the gateway allocates, which its CPU per call
// and its collections follow.
func BenchmarkCall(b *testing.B) {
	e := newEnv(b)
	inst := e.startIdentityServer(b, &identityServer{name: "bench"})
	gw := e.startGateway(b, e.config(b), edge.WithLogger(slog.New(slog.DiscardHandler)))
	msg := &identityv1.CreateUserRequest{Email: "bench@example.com", DisplayName: strings.Repeat("x", 1000)}
	for _, tc := range []struct{ name, url string }{{"direct", "http://" + inst.addr}, {"gateway", gw.url}} {
		c := identityv1connect.NewIdentityServiceClient(h2cClient(), tc.url)
		deadline := time.Now().Add(15 * time.Second)
		for {
			if _, err := c.CreateUser(context.Background(), connect.NewRequest(msg)); err == nil {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s: never answered", tc.name)
			}
			time.Sleep(20 * time.Millisecond)
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.CreateUser(context.Background(), connect.NewRequest(msg)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
