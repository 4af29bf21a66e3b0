package h2proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Transport holds HTTP/2 cleartext connections to upstream instances, as
// many per instance as its stream limit needs. Its zero value is ready.
type Transport struct {
	// DialTimeout bounds connecting and the upstream's first SETTINGS;
	// zero means 2s.
	DialTimeout time.Duration
	// IdleTimeout closes a connection without streams; zero means 90s.
	IdleTimeout time.Duration
	// A connection that reads nothing for a whole PingInterval (it is
	// checked every PingInterval) is sent a PING, and closed, failing its
	// streams, if it still reads nothing PingTimeout later. An instance
	// whose host went away without closing its connections (powered off,
	// cut off by a partition) answers nothing; TCP alone would notice
	// after minutes, and meanwhile a stream on the connection waits for
	// its route's timeout. Zero or less means 10s and 5s, but a negative
	// PingInterval sends no PINGs.
	PingInterval, PingTimeout time.Duration
	Logger                    *slog.Logger

	mu      sync.Mutex
	conns   map[string][]*conn
	dialing map[string]*dialCall
	closed  bool
}

// dialCall is a dial under way, which other streams to the same address
// wait on rather than dialling too.
type dialCall struct {
	done chan struct{}
	// err, set before done closes, is why the dial failed, unless its
	// caller left: an instance that does not answer fails every stream
	// that waited on it at once, each free to go to another instance.
	err error
}

// The windows an upstream may fill: per stream, what one slow client makes
// the proxy hold; the connection's is large, so that a slow client never
// holds up the others sharing it.
const (
	upstreamConnWindow   = 1 << 30
	upstreamStreamWindow = 256 << 10
)

// NotSentError is Forward's error when the request never reached the
// upstream: it may be sent to another instance.
type NotSentError struct {
	Err error
	// Shared: the error of a dial another stream made and waited on too,
	// which that stream's caller counts against the instance already.
	Shared bool
}

func (e *NotSentError) Error() string { return "request not sent: " + e.Err.Error() }
func (e *NotSentError) Unwrap() error { return e.Err }

// get returns a connection to addr with room for a stream, dialling one
// if there is none.
func (t *Transport) get(ctx context.Context, addr string) (*conn, error) {
	for {
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return nil, &NotSentError{Err: net.ErrClosed}
		}
		for _, c := range t.conns[addr] {
			if c.usable() {
				t.mu.Unlock()
				return c, nil
			}
		}
		if d, ok := t.dialing[addr]; ok {
			t.mu.Unlock()
			select {
			case <-d.done:
				if d.err != nil {
					return nil, &NotSentError{Err: d.err, Shared: true}
				}
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if t.dialing == nil {
			t.dialing = make(map[string]*dialCall)
			t.conns = make(map[string][]*conn)
		}
		d := &dialCall{done: make(chan struct{})}
		t.dialing[addr] = d
		t.mu.Unlock()

		c, err := t.dial(ctx, addr)

		t.mu.Lock()
		delete(t.dialing, addr)
		if err != nil && ctx.Err() == nil {
			d.err = err
		}
		close(d.done)
		if err == nil {
			select {
			case <-c.closed: // closed already, and forgotten before it was added
				err = errors.New("connection closed as it opened")
			default:
				t.conns[addr] = append(t.conns[addr], c)
			}
		}
		t.mu.Unlock()
		if err != nil {
			return nil, &NotSentError{Err: err}
		}
		return c, nil
	}
}

func (c *conn) usable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.goingAway && uint32(len(c.streams)) < c.maxStreams && c.out.nextLocalID < 1<<31-1
}

func (t *Transport) dial(ctx context.Context, addr string) (*conn, error) {
	timeout := t.DialTimeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nc, err := (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := newConn(nc, 0, upstreamConnWindow, upstreamStreamWindow)
	c.owner, c.addr = t, addr
	c.idleFor = t.IdleTimeout
	if c.idleFor <= 0 {
		c.idleFor = 90 * time.Second
	}
	c.out.nextLocalID = 1
	c.rfr.MaxHeaderListSize = 1 << 20
	c.out.mu.Lock()
	c.out.buf = append(c.out.buf, http2.ClientPreface...)
	c.out.mu.Unlock()
	c.writeSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: upstreamStreamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: 1 << 20},
	)
	go c.out.run(c.closed)
	go c.serve()
	c.out.flush()
	select {
	case <-c.ready:
		if t.PingInterval >= 0 {
			c.watch(cmp.Or(t.PingInterval, 10*time.Second), cmp.Or(max(t.PingTimeout, 0), 5*time.Second))
		}
		return c, nil
	case <-c.closed:
		return nil, fmt.Errorf("connection to %s closed before its settings", addr)
	case <-ctx.Done():
		c.close(nil)
		return nil, fmt.Errorf("settings of %s: %w", addr, ctx.Err())
	}
}

func (t *Transport) forget(c *conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	cs := t.conns[c.addr]
	for i, x := range cs {
		if x == c {
			t.conns[c.addr] = append(cs[:i:i], cs[i+1:]...)
			break
		}
	}
	if len(t.conns[c.addr]) == 0 {
		delete(t.conns, c.addr)
	}
}

// Close closes every connection.
func (t *Transport) Close() {
	t.mu.Lock()
	t.closed = true
	var all []*conn
	for _, cs := range t.conns {
		all = append(all, cs...)
	}
	t.mu.Unlock()
	for _, c := range all {
		c.close(nil)
	}
}

// Result is how a forwarded exchange went.
type Result struct {
	Status     int    // the upstream's HTTP status; 0 if none came
	GRPCStatus string // its grpc-status, from headers or trailers
	// BodyCode is the outcome a gRPC-Web or Connect streaming body ended
	// with, as [envelope.Reader.Code] says it; "" if none.
	BodyCode string
	Started  bool // the response reached the client: the handler must not answer
	Sent     bool // the whole request, to its end, reached the upstream
}

// Forward sends the stream to the upstream at addr with header (which
// replaces the client's headers; the pseudo-headers are the stream's, but
// :authority is addr) and passes the response back with extra added to its
// headers, in place of the upstream's fields of the same names (but Vary,
// which takes both). It returns when the exchange ends or ctx does. A
// [*NotSentError] means the request never left and may go elsewhere; any
// other error with Started false leaves the answer to the caller.
func (s *Stream) Forward(ctx context.Context, t *Transport, addr string, header http.Header, extra http.Header) (Result, error) {
	x := s.x
	x.mu.Lock()
	if x.forwarded || x.respStarted {
		x.mu.Unlock()
		return Result{}, errors.New("h2proxy: stream forwarded or answered already")
	}
	if x.tooLarge {
		x.mu.Unlock()
		return Result{}, ErrBodyTooLarge
	}
	x.mu.Unlock()

	// On the stack for the usual number of fields: they are encoded into
	// the connection's buffer below and not kept.
	var room [32]hpack.HeaderField
	fields := append(room[:0],
		hpack.HeaderField{Name: ":method", Value: s.Method},
		hpack.HeaderField{Name: ":scheme", Value: "http"},
		hpack.HeaderField{Name: ":authority", Value: addr},
		hpack.HeaderField{Name: ":path", Value: s.Path})
	fields = appendHeader(fields, header, s.neverIndexed)

	var (
		b  batch
		c  *conn
		o  *out
		up *half
	)
	for attempt := 0; ; attempt++ {
		var err error
		if c, err = t.get(ctx, addr); err != nil {
			return Result{}, err
		}
		if !c.out.peerOpen() {
			// The instance closed the connection and its reader has not
			// seen it yet (an instance killed a moment ago): nothing is
			// sent on it, and get will not offer it again.
			c.mu.Lock()
			c.goingAway = true
			c.mu.Unlock()
			if attempt >= 3 {
				return Result{}, &NotSentError{Err: errors.New("upstream closed its connections")}
			}
			continue
		}
		x.mu.Lock()
		if x.finished && x.retry && !x.down.reset {
			x.finished, x.err, x.retry = false, nil, false
			x.done = make(chan struct{})
		}
		if x.finished || x.down.reset {
			x.mu.Unlock()
			return Result{}, context.Canceled
		}
		if x.tooLarge {
			x.mu.Unlock()
			return Result{}, ErrBodyTooLarge
		}
		up, o = x.up, c.out
		o.mu.Lock()
		c.mu.Lock()
		if o.err == nil && !c.goingAway && uint32(len(c.streams)) < c.maxStreams {
			break // with x.mu, o.mu and c.mu held
		}
		c.mu.Unlock()
		o.mu.Unlock()
		x.mu.Unlock()
		if attempt >= 3 {
			return Result{}, &NotSentError{Err: errors.New("connections closing or full")}
		}
		// The connection filled up or started going away since get chose
		// it: get finds or dials another.
	}
	up.c, up.id = c, o.nextLocalID
	o.nextLocalID += 2
	up.sendWin, up.recvWin = o.initWin, c.streamWin
	c.add(up)
	c.mu.Unlock()
	end := up.pendEnd && len(up.pend) == 0 && up.pendTrailers == nil
	o.writeHeaders(up.id, fields, end)
	o.mu.Unlock()
	b.touch(o)
	x.forwarded, x.extra = true, extra
	done := x.done
	if end {
		up.pendEnd = false
		x.sentEnd(up, &b)
	} else {
		x.pump(up, &b)
	}
	x.mu.Unlock()
	b.flush()

	select {
	case <-done:
	case <-ctx.Done():
		x.mu.Lock()
		if !x.finished {
			x.cancelUp(&b)
			if x.respStarted {
				x.resetDown(http2.ErrCodeCancel, &b)
			}
			x.finish(ctx.Err())
		}
		x.mu.Unlock()
		b.flush()
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	return Result{Status: x.status, GRPCStatus: x.grpcStatus, BodyCode: x.body.Code(), Started: x.respStarted, Sent: x.up.sentEnd}, x.err
}
