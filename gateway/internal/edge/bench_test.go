package edge_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	identityv1 "portcullis.dev/proto/identity/v1"
	"portcullis.dev/proto/identity/v1/identityv1connect"

	"portcullis.dev/gateway/internal/edge"
)

// load is what one closed-loop load phase measured.
type load struct {
	rps      float64
	p50, p99 time.Duration
}

// measure calls call from workers goroutines for d and returns the
// throughput and latency percentiles of the calls that succeeded.
func measure(b *testing.B, d time.Duration, workers int, call func(context.Context) error) load {
	var (
		mu  sync.Mutex
		all []time.Duration
		wg  sync.WaitGroup
	)
	ctx := context.Background()
	deadline := time.Now().Add(d)
	start := time.Now()
	for range workers {
		wg.Go(func() {
			lat := make([]time.Duration, 0, 4096)
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := call(ctx); err != nil {
					b.Error(err)
					return
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(all)
	if len(all) == 0 {
		b.Fatal("no call succeeded")
	}
	return load{
		rps: float64(len(all)) / elapsed.Seconds(),
		p50: all[len(all)/2],
		p99: all[len(all)*99/100],
	}
}

// BenchmarkGatewayVsDirect measures, in one run on loopback, a ~1 KB Connect
// unary call (protobuf over h2c) made directly to an Identity instance and
// through the gateway, without and with an access token, and reports the
// gateway's throughput as a fraction of direct (target ≥ 0.7) and what
// token validation costs at the gateway (target < 5%, thanks to the
// verified-token cache). It runs its phases once whatever b.N is:
//
//	go test -run '^$' -bench GatewayVsDirect -benchtime 1x ./internal/edge
func BenchmarkGatewayVsDirect(b *testing.B) {
	e := newEnv(b)
	inst := e.startIdentity(b, "bench")
	gw := e.startGateway(b, e.config(b), edge.WithLogger(slog.New(slog.DiscardHandler)))
	client := h2cClient()
	direct := identityv1connect.NewIdentityServiceClient(client, "http://"+inst.addr)
	through := identityv1connect.NewIdentityServiceClient(client, gw.url)
	token := e.auth.Issue()
	msg := &identityv1.CreateUserRequest{Email: "bench@example.com", DisplayName: strings.Repeat("x", 1000)}
	call := func(c identityv1connect.IdentityServiceClient, token string) func(context.Context) error {
		return func(ctx context.Context) error {
			req := connect.NewRequest(msg)
			if token != "" {
				req.Header().Set("Authorization", "Bearer "+token)
			}
			_, err := c.CreateUser(ctx, req)
			return err
		}
	}
	// Warm up connections, resolvers and the token caches.
	deadline := time.Now().Add(15 * time.Second)
	for call(through, token)(context.Background()) != nil {
		if time.Now().After(deadline) {
			b.Fatal("the gateway never routed to the instance")
		}
		time.Sleep(20 * time.Millisecond)
	}
	measure(b, 300*time.Millisecond, 16, call(through, token))
	measure(b, 300*time.Millisecond, 16, call(direct, token))

	const phase, workers = 2 * time.Second, 16
	b.ResetTimer()
	d := measure(b, phase, workers, call(direct, ""))
	g := measure(b, phase, workers, call(through, ""))
	dt := measure(b, phase, workers, call(direct, token))
	gt := measure(b, phase, workers, call(through, token))
	b.StopTimer()

	b.ReportMetric(d.rps, "direct-rps")
	b.ReportMetric(g.rps, "gateway-rps")
	b.ReportMetric(g.rps/d.rps, "gateway/direct")
	b.ReportMetric(gt.rps/dt.rps, "gateway/direct-with-token")
	b.ReportMetric(float64(d.p50.Microseconds()), "direct-p50-µs")
	b.ReportMetric(float64(d.p99.Microseconds()), "direct-p99-µs")
	b.ReportMetric(float64(g.p50.Microseconds()), "gateway-p50-µs")
	b.ReportMetric(float64(g.p99.Microseconds()), "gateway-p99-µs")
	b.ReportMetric(float64(gt.p99.Microseconds()), "gateway-token-p99-µs")
	// The drop of the gateway's relative throughput when a token is
	// present is what the gateway's own token check costs; the service's
	// check is in both sides of each ratio.
	b.ReportMetric(100*(1-(gt.rps/dt.rps)/(g.rps/d.rps)), "token-overhead-%")
}
