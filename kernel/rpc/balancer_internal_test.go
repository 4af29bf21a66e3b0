package rpc

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/kerneltest"
	"portcullis.dev/kernel/registry"
)

func TestPickSpreadsLoad(t *testing.T) {
	t.Parallel()
	b := newBalancer(nil, nil)
	instances := []registry.Instance{
		{Address: "10.0.0.1", Port: 1}, {Address: "10.0.0.2", Port: 1}, {Address: "10.0.0.3", Port: 1},
	}
	ep := func(i int) *endpoint { return b.endpoint(instances[i]) }
	counts := map[string]int{}
	for range 3000 {
		picked, ok := b.pick(instances, nil)
		assert.True(t, ok)
		counts[picked.addr]++
	}
	for addr, n := range counts {
		assert.InDelta(t, 1000, n, 200, "%s picked %d times of 3000", addr, n)
	}
	assert.Len(t, counts, 3)

	// The busier of two is avoided.
	ep(0).inFlight.Store(10)
	ep(1).inFlight.Store(10)
	busy := 0
	for range 1000 {
		if picked, _ := b.pick(instances, nil); picked != ep(2) {
			busy++
		}
	}
	// 10.0.0.3 loses only when both picks are the busy ones: 1/3 of pairs.
	assert.InDelta(t, 333, busy, 100)

	// Tried instances are skipped; ejected ones only as a last resort.
	picked, ok := b.pick(instances, []*endpoint{ep(0), ep(1)})
	assert.True(t, ok)
	assert.Equal(t, "10.0.0.3:1", picked.addr)
	_, ok = b.pick(instances, []*endpoint{ep(0), ep(1), ep(2)})
	assert.False(t, ok)
	for range 3 {
		b.record("svc", ep(2), false)
	}
	picked, ok = b.pick(instances, []*endpoint{ep(0)})
	assert.True(t, ok)
	assert.Equal(t, "10.0.0.2:1", picked.addr, "an ejected instance was picked over a healthy one")
	picked, ok = b.pick(instances, []*endpoint{ep(0), ep(1)})
	assert.True(t, ok, "an ejected instance is still better than none")
	assert.Equal(t, "10.0.0.3:1", picked.addr)
}

// TestPickAllocatesNothing: pick runs on every call, over every instance
// listed.
func TestPickAllocatesNothing(t *testing.T) {
	b := newBalancer(nil, nil)
	instances := []registry.Instance{
		{Address: "10.0.0.1", Port: 8080}, {Address: "10.0.0.2", Port: 8080}, {Address: "fd00::3", Port: 8080},
	}
	b.pick(instances, nil)
	assert.Zero(t, testing.AllocsPerRun(100, func() { b.pick(instances, nil) }))
}

// TestBalancerForgetsInstancesNoLongerListed: a gateway sees new addresses
// at every deploy on dynamic ports, for months; what it knows of the old
// ones goes once they are unlisted long enough, unless a call still uses
// them.
func TestBalancerForgetsInstancesNoLongerListed(t *testing.T) {
	t.Parallel()
	b := newBalancer(nil, nil)
	old := []registry.Instance{{Address: "10.0.0.1", Port: 1}, {Address: "10.0.0.2", Port: 1}, {Address: "10.0.0.3", Port: 1}}
	for range 20 {
		b.pick(old, nil)
	}
	known := func() (addrs []string) {
		b.endpoints.Range(func(_, ep any) bool { addrs = append(addrs, ep.(*endpoint).addr); return true })
		return addrs
	}
	require.ElementsMatch(t, []string{"10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"}, known())

	// Ten minutes on, only 10.0.0.3 is listed still, and a call still
	// reads from 10.0.0.2.
	longAgo := time.Now().Add(-endpointIdle - time.Second).UnixNano()
	for _, inst := range old {
		b.endpoint(inst).listed.Store(longAgo)
	}
	b.endpoint(old[1]).inFlight.Store(1)
	b.nextSweep.Store(0) // a minute on since the last sweep
	b.pick(old[2:], nil)
	assert.ElementsMatch(t, []string{"10.0.0.3:1", "10.0.0.2:1"}, known())

	// Sweeps run once a minute at most.
	b.endpoint(old[2]).listed.Store(longAgo)
	b.pick(old[:1], nil)
	assert.ElementsMatch(t, []string{"10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"}, known())
	b.nextSweep.Store(0)
	b.endpoint(old[1]).inFlight.Store(0)
	b.pick(old[:1], nil)
	assert.Equal(t, []string{"10.0.0.1:1"}, known())
}

// roundTripFunc is an http.RoundTripper of a function.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestEndedCallsCountForNobody: calls whose callers cancel, or whose
// deadlines pass, while an instance works neither eject it, nor clear its
// failures, nor go to another instance.
func TestEndedCallsCountForNobody(t *testing.T) {
	t.Parallel()
	instances := []registry.Instance{{Address: "10.0.0.1", Port: 1}, {Address: "10.0.0.2", Port: 1}}
	for _, tc := range []struct {
		name string
		end  func(context.Context) (context.Context, context.CancelFunc)
	}{
		{"caller left", func(ctx context.Context) (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(ctx)
			time.AfterFunc(time.Millisecond, cancel)
			return ctx, cancel
		}},
		{"deadline passed", func(ctx context.Context) (context.Context, context.CancelFunc) {
			return context.WithTimeout(ctx, time.Millisecond)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var attempts atomic.Int32
			slow := roundTripFunc(func(r *http.Request) (*http.Response, error) {
				attempts.Add(1)
				<-r.Context().Done()
				return nil, &net.OpError{Op: "dial", Net: "tcp", Err: r.Context().Err()}
			})
			b := newBalancer(slow, func(context.Context, string) ([]registry.Instance, error) { return instances, nil })
			for _, inst := range instances {
				b.endpoint(inst).failures.Store(1) // one failure each before
			}
			for range 5 {
				ctx, cancel := tc.end(t.Context())
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://svc/x", nil)
				require.NoError(t, err)
				_, err = b.RoundTrip(req)
				cancel()
				require.Error(t, err)
			}
			assert.EqualValues(t, 5, attempts.Load(), "an ended call went to another instance")
			for _, inst := range instances {
				ep := b.endpoint(inst)
				assert.EqualValues(t, 1, ep.failures.Load(), "%s: failures counted or cleared", inst.HostPort())
				assert.Zero(t, ep.ejectedUntil.Load(), "%s ejected", inst.HostPort())
			}
		})
	}
}

// TestSilentInstanceFailsItsCalls: an instance gone without closing its
// connection (its host powered off) answers no PING, and the calls waiting
// on it fail then, not at their deadlines. The ping times are shortened
// here; the test holds that the h2c transport pings at all.
func TestSilentInstanceFailsItsCalls(t *testing.T) {
	t.Parallel()
	addr := kerneltest.ServeTCP(t, func(nc net.Conn) {
		// An empty SETTINGS and the ACK of the client's: the connection is
		// up, and then nothing more comes.
		_, _ = nc.Write([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0})
		_, _ = io.Copy(io.Discard, nc)
	})
	tr := h2cTransport()
	require.NotNil(t, tr.HTTP2, "the transport pings quiet connections")
	tr.HTTP2.SendPingTimeout, tr.HTTP2.PingTimeout = 100*time.Millisecond, 200*time.Millisecond
	t.Cleanup(tr.CloseIdleConnections)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/waits", nil)
	require.NoError(t, err)
	res, err := tr.RoundTrip(req)
	if err == nil {
		_ = res.Body.Close()
	}
	require.Error(t, err)
	assert.NoError(t, ctx.Err(), "the call failed on the missing PING answer, before its deadline: %v", err)
}

// failingBody sends some bytes, then fails as a client that left
// mid-upload does.
type failingBody struct{ sent bool }

func (f *failingBody) Read(p []byte) (int, error) {
	if f.sent {
		return 0, io.ErrUnexpectedEOF
	}
	f.sent = true
	return copy(p, "partial"), nil
}

func (f *failingBody) Close() error { return nil }

// TestBodyErrorsCountForNobody: a call that fails because its caller's
// body could not be read (a client that left mid-upload, a body over the
// gateway's cap) says nothing of the instance, which stays in rotation.
func TestBodyErrorsCountForNobody(t *testing.T) {
	t.Parallel()
	srv := &http.Server{
		Handler:   http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) }),
		Protocols: new(http.Protocols),
	}
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	port := ln.Addr().(*net.TCPAddr).Port
	instances := []registry.Instance{{Address: "127.0.0.1", Port: port}}
	tr := h2cTransport()
	t.Cleanup(tr.CloseIdleConnections)
	b := newBalancer(tr, func(context.Context, string) ([]registry.Instance, error) { return instances, nil })
	for range 5 {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://svc/upload", &failingBody{})
		require.NoError(t, err)
		res, err := b.RoundTrip(req)
		if err == nil {
			_ = res.Body.Close()
		}
		require.Error(t, err, "the body failed")
	}
	ep := b.endpoint(instances[0])
	assert.Zero(t, ep.failures.Load(), "failures counted")
	assert.Zero(t, ep.ejectedUntil.Load(), "ejected")
}

// TestUnansweredCallsCountAgainstTheInstance: an instance that takes calls
// and never answers them (a deadlocked handler, its readiness check still
// passing) is ejected once calls reach the deadline set for its answer,
// which still reads as a deadline to the caller.
func TestUnansweredCallsCountAgainstTheInstance(t *testing.T) {
	t.Parallel()
	instances := []registry.Instance{{Address: "10.0.0.1", Port: 1}}
	hung := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		<-r.Context().Done()
		return nil, context.Cause(r.Context())
	})
	b := newBalancer(hung, func(context.Context, string) ([]registry.Instance, error) { return instances, nil })
	for range 3 {
		ctx, cancel := WithInstanceTimeout(t.Context(), time.Millisecond)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://svc/x", nil)
		require.NoError(t, err)
		_, err = b.RoundTrip(req)
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)
	}
	assert.NotZero(t, b.endpoint(instances[0]).ejectedUntil.Load(), "the instance is ejected")
}

// endlessUpload is a request body that never ends: a slow client, for as
// long as it is read. The transport closes it when the call ends.
func endlessUpload(t *testing.T) io.ReadCloser {
	r, w := io.Pipe()
	go func() {
		chunk := make([]byte, 1024)
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// h2cInstance serves handler over h2c and returns it as an instance.
func h2cInstance(t *testing.T, handler http.HandlerFunc) registry.Instance {
	srv := &http.Server{Handler: handler, Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return registry.Instance{Address: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port}
}

// TestUploadsThatFailAreCountedRight: an instance that resets every
// upload midway is counted failing (the transport's closing the body is
// not the caller's failure), and one that would answer a slow upload in
// time, were it ever finished, is not.
func TestUploadsThatFailAreCountedRight(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		timeout time.Duration
		ejected bool
	}{
		{"instance resets mid-upload", func(_ http.ResponseWriter, r *http.Request) {
			_, _ = io.CopyN(io.Discard, r.Body, 4096)
			panic(http.ErrAbortHandler)
		}, 10 * time.Second, true},
		{"caller too slow to finish", func(_ http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
		}, 100 * time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			instances := []registry.Instance{h2cInstance(t, tc.handler)}
			tr := h2cTransport()
			t.Cleanup(tr.CloseIdleConnections)
			b := newBalancer(tr, func(context.Context, string) ([]registry.Instance, error) { return instances, nil })
			for range 3 {
				ctx, cancel := WithInstanceTimeout(t.Context(), tc.timeout)
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://svc/upload", endlessUpload(t))
				require.NoError(t, err)
				res, err := b.RoundTrip(req)
				if err == nil {
					_ = res.Body.Close()
				}
				cancel()
				require.Error(t, err)
			}
			assert.Equal(t, tc.ejected, b.endpoint(instances[0]).ejectedUntil.Load() != 0)
		})
	}
}

// TestEjectedAgainIsNotNews: an instance ejected again without a call
// going well in between (one dead while Consul cannot say so) is logged at
// debug level; a new streak of failures after a call that went well warns
// again.
func TestEjectedAgainIsNotNews(t *testing.T) {
	t.Parallel()
	var logs kerneltest.Buffer
	b := newBalancer(nil, nil)
	b.logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ep := b.endpoint(registry.Instance{Address: "10.0.0.1", Port: 1})
	eject := func() {
		for range b.ejectAfter {
			b.record("svc", ep, false)
		}
	}
	eject()
	eject()
	eject()
	assert.Equal(t, 1, strings.Count(logs.String(), "level=WARN"), logs.String())
	assert.Equal(t, 2, strings.Count(logs.String(), "level=DEBUG"), logs.String())
	b.record("svc", ep, true)
	eject()
	assert.Equal(t, 2, strings.Count(logs.String(), "level=WARN"), "a new streak is news")
}
