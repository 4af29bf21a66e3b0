package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"portcullis.dev/kernel/registry"
)

// balancer is an http.RoundTripper that sends a request for http://<service>/...
// to one healthy instance of <service>: the less busy of two picked at
// random (power of two choices), skipping instances ejected for failing.
// A request that never left — the connection was refused — is retried on
// another instance; anything else is not, since it may have run.
type balancer struct {
	base      http.RoundTripper
	instances func(ctx context.Context, service string) ([]registry.Instance, error)
	// ejectAfter consecutive failures eject an instance for ejectFor.
	ejectAfter  int32
	ejectFor    time.Duration
	maxAttempts int
	logger      *slog.Logger // says when an instance is ejected

	endpoints sync.Map // endpointKey → *endpoint
	// nextSweep is when endpoints is next swept of instances no longer
	// listed (unix nanoseconds). Each deploy on dynamic ports lists new
	// addresses, and a gateway runs for months.
	nextSweep atomic.Int64
}

// endpointIdle is how long an instance must go unlisted before the
// balancer forgets it; it outlasts any ejection.
const endpointIdle = 10 * time.Minute

// endpointKey identifies an instance to the balancer. Looking it up costs
// no allocation, where a host:port string would cost one per instance
// listed, on every call.
type endpointKey struct {
	address string
	port    int
}

// endpoint is what the balancer knows of one instance.
type endpoint struct {
	addr         string // host:port: what to dial
	inFlight     atomic.Int64
	failures     atomic.Int32
	ejectedUntil atomic.Int64 // unix nanoseconds
	ejections    atomic.Int32 // in a row, without a call that went well
	// listed is when a pick last saw the instance among the healthy ones
	// (unix nanoseconds), kept to the second: a store on every pick would
	// make the instances' cores fight over the line.
	listed atomic.Int64
}

func newBalancer(base http.RoundTripper, instances func(context.Context, string) ([]registry.Instance, error)) *balancer {
	b := &balancer{
		base:        base,
		instances:   instances,
		ejectAfter:  3,
		ejectFor:    10 * time.Second,
		maxAttempts: 3,
		logger:      slog.New(slog.DiscardHandler),
	}
	b.nextSweep.Store(time.Now().Add(time.Minute).UnixNano())
	return b
}

// h2cTransport speaks HTTP/2 with prior knowledge over plain TCP, the way
// services call each other on a trusted network.
func h2cTransport() *http.Transport {
	t := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		Protocols:           new(http.Protocols),
		// An instance whose host went away without closing the connection
		// answers no PING: the connection closes and its calls fail in
		// seconds rather than at TCP's minutes or their own deadlines.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 10 * time.Second, PingTimeout: 5 * time.Second},
	}
	t.Protocols.SetUnencryptedHTTP2(true)
	return t
}

func (b *balancer) RoundTrip(req *http.Request) (*http.Response, error) {
	service := req.URL.Hostname()
	instances, err := b.instances(req.Context(), service)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	// A request whose body was read and cannot be read again cannot be
	// sent again; one without a body (a GET, say) needs no GetBody.
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	var (
		resp *http.Response
		sent bool // the transport took the request, and closes its body
	)
	err = b.call(req.Context(), service, instances, func(addr string, ep *endpoint, first bool) (bool, bool, error) {
		// A shallow copy with its own URL: the headers are not changed, so
		// they need no copy (http.Request.Clone would copy them each call).
		out := new(http.Request)
		*out = *req
		u := *req.URL
		u.Host = addr
		out.URL = &u
		out.Host = addr
		if !first && req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return true, false, fmt.Errorf("replay request body: %w", err)
			}
			out.Body = body
		}
		var body *callerBody
		if out.Body != nil && out.Body != http.NoBody {
			body = &callerBody{ReadCloser: out.Body}
			out.Body = body
		}
		ep.inFlight.Add(1)
		sent = true
		r, err := b.base.RoundTrip(out)
		if err != nil {
			ep.inFlight.Add(-1)
			switch {
			case body != nil && body.failed.Load():
				// The caller's body failed (a client that left
				// mid-upload, a body over the gateway's cap): nothing
				// to hold against the instance, nor to try elsewhere.
				return false, false, NotTheInstance(err)
			case body != nil && !body.ended.Load() && InstanceTimedOut(req.Context()):
				// The caller was still sending when the time ran out (a
				// slow upload): the instance was never asked for all.
				return false, false, NotTheInstance(err)
			}
			return false, replayable && neverSent(err), err
		}
		// The call goes on until its body is read or closed.
		r.Body = &trackedBody{ReadCloser: r.Body, done: func() { ep.inFlight.Add(-1) }}
		resp = r
		return r.StatusCode != http.StatusServiceUnavailable, false, nil
	})
	if err != nil {
		if !sent {
			closeBody(req)
		}
		return nil, err
	}
	return resp, nil
}

// call runs attempt on an instance of service picked by [balancer.pick],
// and on others, up to maxAttempts in all and never one twice, while
// attempt says the call may go elsewhere (retry: it never reached the
// instance). attempt also says whether the instance is to be counted
// healthy, which ejects one that keeps failing. Once ctx, the call's, has
// ended, nothing is counted and nothing retried: a caller that left, or
// whose deadline passed, says nothing of the instance, and the deadline is
// the caller's to choose (a client of the gateway sends a grpc-timeout of
// 1 ms, say), unless it is one set for the instance's answer
// ([WithInstanceTimeout]). An attempt whose error is [NotTheInstance]
// counts for nobody either. first is true on the first try. call returns
// attempt's last error, or why no instance could be picked.
func (b *balancer) call(ctx context.Context, service string, instances []registry.Instance, attempt func(addr string, ep *endpoint, first bool) (healthy, retry bool, err error)) error {
	var (
		tried   []*endpoint // at most maxAttempts: a slice beats a map
		lastErr error
	)
	for len(tried) < b.maxAttempts {
		ep, ok := b.pick(instances, tried)
		if !ok {
			break
		}
		tried = append(tried, ep)
		healthy, retry, err := attempt(ep.addr, ep, len(tried) == 1)
		ended := ctx.Err() != nil
		if (!ended || InstanceTimedOut(ctx)) && (err == nil || !errors.As(err, new(notTheInstance))) {
			b.record(service, ep, healthy)
		}
		if err == nil {
			return nil
		}
		lastErr = fmt.Errorf("%s instance %s: %w", service, ep.addr, err)
		if !retry || ended {
			return lastErr
		}
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("no healthy instance of %q", service)
	}
	return lastErr
}

// pick chooses the less busy of two random usable instances. Ejected
// instances are usable only when nothing else is: better a doubtful
// instance than certain failure.
func (b *balancer) pick(instances []registry.Instance, tried []*endpoint) (*endpoint, bool) {
	now := time.Now().UnixNano()
	var (
		best, second     int = -1, -1
		bestEp, secondEp *endpoint
		seen             int
		fallback         = -1
		fallbackEp       *endpoint
	)
	// One pass of reservoir sampling picks two usable instances uniformly
	// at random without building a list.
	b.sweep(now)
	for i := range instances {
		ep := b.endpoint(instances[i])
		if slices.Contains(tried, ep) {
			continue
		}
		if ep.listed.Load() < now-int64(time.Second) {
			ep.listed.Store(now)
		}
		if ep.ejectedUntil.Load() > now {
			if fallback < 0 || rand.IntN(2) == 0 {
				fallback, fallbackEp = i, ep
			}
			continue
		}
		seen++
		switch {
		case seen == 1:
			best, bestEp = i, ep
		case seen == 2:
			second, secondEp = i, ep
		default:
			if j := rand.IntN(seen); j == 0 {
				best, bestEp = i, ep
			} else if j == 1 {
				second, secondEp = i, ep
			}
		}
	}
	switch {
	case best < 0 && fallback < 0:
		return nil, false
	case best < 0:
		return fallbackEp, true
	case second < 0:
		return bestEp, true
	}
	// The less busy of the two; a tie (the common case when idle) is broken
	// at random, or the first instance listed would take every call.
	a, c := bestEp.inFlight.Load(), secondEp.inFlight.Load()
	if c < a || (c == a && rand.IntN(2) == 0) {
		return secondEp, true
	}
	return bestEp, true
}

func (b *balancer) endpoint(inst registry.Instance) *endpoint {
	key := endpointKey{inst.Address, inst.Port}
	if ep, ok := b.endpoints.Load(key); ok {
		return ep.(*endpoint)
	}
	fresh := &endpoint{addr: inst.HostPort()}
	fresh.listed.Store(time.Now().UnixNano())
	ep, _ := b.endpoints.LoadOrStore(key, fresh)
	return ep.(*endpoint)
}

// sweep forgets, once a minute at most, the instances no pick has seen
// listed for [endpointIdle] and that no call is using. A pick racing the
// sweep may still hold a forgotten endpoint: its counts are then lost,
// which costs no more than a fresh start for an instance gone ten minutes.
func (b *balancer) sweep(now int64) {
	next := b.nextSweep.Load()
	if now < next || !b.nextSweep.CompareAndSwap(next, now+int64(time.Minute)) {
		return
	}
	b.endpoints.Range(func(key, ep any) bool {
		if e := ep.(*endpoint); e.listed.Load() < now-int64(endpointIdle) && e.inFlight.Load() == 0 {
			b.endpoints.Delete(key)
		}
		return true
	})
}

func (b *balancer) record(service string, ep *endpoint, ok bool) {
	if ok {
		ep.failures.Store(0)
		ep.ejections.Store(0)
		return
	}
	if ep.failures.Add(1) >= b.ejectAfter {
		ep.ejectedUntil.Store(time.Now().Add(b.ejectFor).UnixNano())
		ep.failures.Store(0)
		// An instance that is gone for good (dead while Consul cannot say
		// so) is tried and ejected again every ejectFor: the first time
		// is news, the others are not.
		level := slog.LevelWarn
		n := ep.ejections.Add(1)
		if n > 1 {
			level = slog.LevelDebug
		}
		b.logger.Log(context.Background(), level, "instance ejected: it failed calls in a row", "service", service, "instance", ep.addr,
			"failures", b.ejectAfter, "for", b.ejectFor.String(), "times", n)
	}
}

// neverSent reports whether err means the request did not reach the
// instance at all, so sending it elsewhere cannot run it twice.
func neverSent(err error) bool {
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// errCallTimeout is the cause of a [WithInstanceTimeout] deadline. Transports
// return a context's cause: it is a [context.DeadlineExceeded] to errors.Is,
// so that a call that hits it maps as any deadline does.
var errCallTimeout error = callTimeoutError{}

type callTimeoutError struct{}

func (callTimeoutError) Error() string        { return "the instance did not answer in time" }
func (callTimeoutError) Is(target error) bool { return target == context.DeadlineExceeded }
func (callTimeoutError) Timeout() bool        { return true }

// WithInstanceTimeout returns ctx with a deadline d away, set for an instance's
// answer rather than by the caller's own patience: a call that reaches it
// unanswered counts against the instance, so one that hangs (a deadlocked
// handler behind a passing readiness check) is ejected like one that
// refuses. A deadline of ctx's own, or its cancellation, still counts for
// nobody.
func WithInstanceTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, d, errCallTimeout)
}

// InstanceTimedOut reports whether ctx ended at a deadline set by
// [WithInstanceTimeout].
func InstanceTimedOut(ctx context.Context) bool {
	return ctx.Err() != nil && context.Cause(ctx) == errCallTimeout
}

// NotTheInstance marks err, an attempt's error, as saying nothing of the
// instance: the caller's doing (a request body that failed, or was still
// being sent when the time ran out), or a failure another attempt counted
// already. The balancer counts such an attempt for nobody.
func NotTheInstance(err error) error { return notTheInstance{err} }

type notTheInstance struct{ error }

func (e notTheInstance) Unwrap() error { return e.error }

// callerBody is a request body that remembers whether reading it failed,
// and whether it was read to its end. The transport reads it in a
// goroutine of its own, hence the atomics.
type callerBody struct {
	io.ReadCloser
	failed, ended, closed atomic.Bool
}

func (c *callerBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		c.ended.Store(true)
	case err != nil && !c.closed.Load():
		// Reads after the transport closed the body (the instance reset
		// the stream mid-upload) fail for the instance's doing.
		c.failed.Store(true)
	}
	return n, err
}

func (c *callerBody) Close() error {
	c.closed.Store(true)
	return c.ReadCloser.Close()
}

// trackedBody calls done once, when the response body is closed or read to
// the end: for a stream, that is when the call ends.
type trackedBody struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (t *trackedBody) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	if err != nil {
		t.once.Do(t.done)
	}
	return n, err
}

func (t *trackedBody) Close() error {
	t.once.Do(t.done)
	return t.ReadCloser.Close()
}
