package h2proxy_test

import (
	"context"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	identityv1 "portcullis.dev/proto/identity/v1"
	"portcullis.dev/proto/identity/v1/identityv1connect"

	"portcullis.dev/gateway/internal/h2proxy"
)

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkProxyVsDirect compares a 1 KB Connect unary call made directly
// to an h2c server with the same call through the proxy, 16 callers each,
// in alternating rounds; it reports calls per second of both, their ratio,
// and the CPU time per call of the whole process on each path.
func BenchmarkProxyVsDirect(b *testing.B) {
	addr := upstream(b)
	base := proxy(b, addr, &h2proxy.Server{})
	msg := &identityv1.CreateUserRequest{Email: "a@example.com", DisplayName: strings.Repeat("x", 1000)}
	run := func(url string, d time.Duration) (calls int, cpu time.Duration, el time.Duration) {
		c := identityv1connect.NewIdentityServiceClient(h2cClient(), url)
		var mu sync.Mutex
		var wg sync.WaitGroup
		c0, t0 := processCPU(), time.Now()
		deadline := t0.Add(d)
		for range 16 {
			wg.Go(func() {
				n := 0
				for time.Now().Before(deadline) {
					if _, err := c.CreateUser(context.Background(), connect.NewRequest(msg)); err != nil {
						b.Error(err)
						return
					}
					n++
				}
				mu.Lock()
				calls += n
				mu.Unlock()
			})
		}
		wg.Wait()
		return calls, processCPU() - c0, time.Since(t0)
	}
	run("http://"+addr, 200*time.Millisecond)
	run(base, 200*time.Millisecond)
	var dn, pn int
	var dc, pc, de, pe time.Duration
	for range 5 {
		n, c, e := run("http://"+addr, 500*time.Millisecond)
		dn, dc, de = dn+n, dc+c, de+e
		n, c, e = run(base, 500*time.Millisecond)
		pn, pc, pe = pn+n, pc+c, pe+e
	}
	drps, prps := float64(dn)/de.Seconds(), float64(pn)/pe.Seconds()
	b.ReportMetric(drps, "direct-rps")
	b.ReportMetric(prps, "proxy-rps")
	b.ReportMetric(prps/drps, "proxy/direct")
	b.ReportMetric(float64(dc.Microseconds())/float64(dn), "direct-cpu-µs")
	b.ReportMetric(float64(pc.Microseconds())/float64(pn), "proxy-cpu-µs")
}
