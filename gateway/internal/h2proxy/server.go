package h2proxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Server serves HTTP/2 clients (prior knowledge, no TLS) stream by stream:
// for each stream it calls Handler in a goroutine of its own, which
// answers through the stream's ResponseWriter or forwards it upstream with
// [Stream.Forward]. Set its fields before the first ServeConn.
type Server struct {
	Handler func(*Stream)
	// MaxConcurrentStreams per connection; zero means 100. With the
	// per-stream window it bounds what one client can make the proxy hold.
	MaxConcurrentStreams uint32
	// MaxHeaderBytes bounds a request's header list; zero means 1 MiB.
	MaxHeaderBytes int
	// MaxBodyBytes bounds a request's body; zero means no bound.
	MaxBodyBytes int64
	// ReadHeaderTimeout bounds the wait for the client's preface and
	// settings; IdleTimeout closes a connection without streams;
	// WriteTimeout bounds a write the client does not take, and how long
	// a response waits on a client that opens no flow-control window for
	// it (then its stream is reset).
	ReadHeaderTimeout, IdleTimeout, WriteTimeout time.Duration
	// BaseContext is the parent of every stream's context.
	BaseContext context.Context
	Logger      *slog.Logger
	// Refused, if set, learns of each request answered before a handler
	// saw it: malformed (RFC 9113, 8.1.1), which resets the stream with
	// PROTOCOL_ERROR, or with headers over MaxHeaderBytes, answered 431
	// (status says which: 0 for the reset). st holds what could be read of
	// the request, nothing but RemoteAddr when the headers could not be
	// decoded, and is done. It runs on the connection's reading goroutine:
	// it must be quick.
	Refused func(st *Stream, status int)
	// StripTrailer, if set, reports whether a request trailer field (its
	// name in lower case) is dropped rather than passed on. The handler
	// decides which headers go upstream, but trailers come after it did:
	// fields the upstream trusts from the proxy alone must not reach it
	// as trailers either.
	StripTrailer func(name string) bool

	// work hands a new stream to an idle handler goroutine, whose stack
	// has already grown to what handlers need.
	work chan *Stream

	mu       sync.Mutex
	conns    map[*conn]struct{}
	shutdown bool
}

// The windows a client may fill: the connection's bounds what the proxy
// holds for one client.
const (
	serverConnWindow   = 1 << 20
	serverStreamWindow = 1 << 20
)

// Preface is what an HTTP/2 client with prior knowledge sends first.
const Preface = http2.ClientPreface

// ServeConn serves nc, whose client preface was read already, until the
// connection ends.
func (s *Server) ServeConn(nc net.Conn) {
	c := newConn(nc, s.WriteTimeout, serverConnWindow, serverStreamWindow)
	c.server = s
	c.remote = nc.RemoteAddr().String()
	c.idleFor = s.IdleTimeout
	max := s.MaxHeaderBytes
	if max <= 0 {
		max = 1 << 20
	}
	c.rfr.MaxHeaderListSize = uint32(max)
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		_ = nc.Close()
		return
	}
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
		s.work = make(chan *Stream)
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()

	c.writeSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: s.maxStreams()},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: serverStreamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: uint32(max)},
	)
	go c.out.run(c.closed)
	c.out.flush()
	if s.ReadHeaderTimeout > 0 {
		_ = nc.SetReadDeadline(time.Now().Add(s.ReadHeaderTimeout))
		go func() {
			select {
			case <-c.ready:
				_ = nc.SetReadDeadline(time.Time{})
			case <-c.closed:
			}
		}()
	}
	if c.idleFor > 0 {
		c.mu.Lock()
		c.idle = time.AfterFunc(c.idleFor, c.closeIfIdle)
		c.mu.Unlock()
	}
	c.serve()
}

func (s *Server) maxStreams() uint32 {
	if s.MaxConcurrentStreams == 0 {
		return 100
	}
	return s.MaxConcurrentStreams
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Shutdown tells every client that no new streams will be served, waits
// for the streams in flight to end or ctx to, then closes the connections.
func (s *Server) Shutdown(ctx context.Context) error {
	for _, c := range s.stop() {
		var b batch
		c.goAway(http2.ErrCodeNo, &b)
		b.flush()
		c.mu.Lock()
		empty := len(c.streams) == 0
		c.mu.Unlock()
		if empty {
			c.out.drain(drainTimeout)
			c.close(nil)
		}
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			s.Close()
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Close closes every connection at once.
func (s *Server) Close() {
	for _, c := range s.stop() {
		c.close(nil)
	}
}

// stop refuses new connections and returns the open ones.
func (s *Server) stop() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shutdown = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	return conns
}

// onHeaders opens a stream, or takes the trailers of one.
func (s *Server) onHeaders(c *conn, f *http2.MetaHeadersFrame, b *batch) error {
	id := f.StreamID
	c.mu.Lock()
	if h := c.streams[id]; h != nil {
		c.mu.Unlock()
		return h.x.onRequestTrailers(h, f, b)
	}
	if id%2 == 0 {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if id <= c.lastPeerID {
		c.mu.Unlock()
		c.writeReset(id, http2.ErrCodeStreamClosed, b)
		return nil
	}
	c.lastPeerID = id
	// Streams count while open (RFC 9113, 5.1.2), and handlers while they
	// run, reset or not.
	if c.goingAway || uint32(len(c.streams)) >= s.maxStreams() || uint32(c.handlers) >= s.maxStreams() {
		c.mu.Unlock()
		c.writeReset(id, http2.ErrCodeRefusedStream, b)
		return nil
	}
	c.mu.Unlock()
	// Only this goroutine changes a server connection's initial window.
	c.out.mu.Lock()
	sendWin := c.out.initWin
	c.out.mu.Unlock()

	x := &exchange{done: make(chan struct{}), maxBody: s.MaxBodyBytes, declared: -1, replayable: true}
	x.down = half{x: x, c: c, id: id, sendWin: sendWin, recvWin: c.streamWin, recvEnd: f.StreamEnded()}
	x.up = &half{x: x, pendEnd: f.StreamEnded()}
	st := newStream(x, f, c.remote, s.BaseContext)
	x.stream = st
	c.mu.Lock()
	if c.goingAway {
		// It went idle and began to close since the check above (the
		// lock was let go meanwhile): the stream was not processed.
		c.mu.Unlock()
		c.writeReset(id, http2.ErrCodeRefusedStream, b)
		return nil
	}
	c.add(&x.down)
	c.handlers++
	c.mu.Unlock()

	if f.Truncated {
		st.respond(http.StatusRequestHeaderFieldsTooLarge, nil, nil)
		st.release()
		s.refused(st, http.StatusRequestHeaderFieldsTooLarge)
		return nil
	}
	var ok bool
	x.declared, ok = contentLength(st.Header["Content-Length"])
	if st.Method == "" || st.Path == "" || st.Method == http.MethodConnect || f.PseudoValue("protocol") != "" ||
		!ok || x.bodyMalformed(f.StreamEnded()) {
		x.mu.Lock()
		x.abort(&x.down, http2.ErrCodeProtocol, b)
		x.mu.Unlock()
		st.release()
		s.refused(st, 0)
		return nil
	}
	select {
	case s.work <- st:
	default:
		go s.worker(st)
	}
	return nil
}

func (s *Server) refused(st *Stream, status int) {
	if s.Refused != nil {
		s.Refused(st, status)
	}
}

// refusedUnread reports a stream reset because its headers could not be
// read (a malformed field, a pseudo-header out of place: x/net's framer
// refuses those itself), if it opened a new stream; a stream error on an
// open one is its handler's to report.
func (s *Server) refusedUnread(c *conn, id uint32) {
	c.mu.Lock()
	opened := id%2 == 1 && id > c.lastPeerID
	if opened {
		c.lastPeerID = id
	}
	c.mu.Unlock()
	if opened {
		s.refused(&Stream{RemoteAddr: c.remote}, 0)
	}
}

// workerIdle is how long a handler goroutine waits for another stream
// before it exits.
const workerIdle = 10 * time.Second

// worker serves st, then the streams handed to it while it waits, until
// it has waited workerIdle for one.
func (s *Server) worker(st *Stream) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		s.serveStream(st)
		idle.Reset(workerIdle)
		select {
		case st = <-s.work:
		case <-idle.C:
			return
		}
	}
}

func (s *Server) serveStream(st *Stream) {
	defer st.finish()
	defer func() {
		// As net/http does: a handler's panic resets its stream, not the
		// process, and is logged with its stack unless it is
		// http.ErrAbortHandler, the way to end a response early.
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler && s.Logger != nil {
				s.Logger.Error("h2proxy: handler panicked", "panic", p, "path", st.Path, "stack", string(debug.Stack()))
			}
			st.reset(http2.ErrCodeInternal)
		}
	}()
	s.Handler(st)
}

// reset ends the stream with code toward the client, and its upstream
// stream if there is one.
func (s *Stream) reset(code http2.ErrCode) {
	x := s.x
	var b batch
	x.mu.Lock()
	if !x.down.reset && !x.down.sentEnd {
		x.abort(&x.down, code, &b)
	}
	x.mu.Unlock()
	b.flush()
}

// release gives back the stream's context and its place among the
// connection's running handlers.
func (s *Stream) release() {
	s.cancel()
	c := s.x.down.c
	c.mu.Lock()
	c.handlers--
	c.mu.Unlock()
}

// onRequestTrailers passes the client's trailers on after its data.
func (x *exchange) onRequestTrailers(h *half, f *http2.MetaHeadersFrame, b *batch) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !f.StreamEnded() || h.recvEnd {
		return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol}
	}
	if x.bodyMalformed(true) || !validTrailers(f) {
		return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol}
	}
	h.recvEnd = true
	x.replayable, x.replay = false, nil // trailers are not kept to send again
	up := x.up
	if x.local || up.reset || up.sentEnd {
		return nil
	}
	up.pendEnd = true
	fields := f.Fields
	if strip := x.down.c.server.StripTrailer; strip != nil {
		fields = slices.DeleteFunc(slices.Clone(fields), func(hf hpack.HeaderField) bool { return strip(hf.Name) })
	}
	var ignored string
	up.pendTrailers = forwardFields(nil, fields, nil, &ignored)
	x.pump(up, b)
	return nil
}

// contentLength is the value of a request's content-length fields, -1
// without one; false when they are not one non-negative number.
func contentLength(vs []string) (int64, bool) {
	if len(vs) == 0 {
		return -1, true
	}
	n, err := strconv.ParseUint(vs[0], 10, 63)
	if err != nil || slices.ContainsFunc(vs[1:], func(v string) bool { return v != vs[0] }) {
		return -1, false
	}
	return int64(n), true
}

// validTrailers reports whether a request's trailers are well formed, with
// no pseudo-header (RFC 9113, 8.1) and no field that must not be a
// trailer (RFC 9110, 6.5.1): a Go upstream resets a stream that has one.
func validTrailers(f *http2.MetaHeadersFrame) bool {
	for _, hf := range f.Fields {
		if hf.IsPseudo() || !httpguts.ValidTrailerHeader(canonicalHeader(hf.Name)) {
			return false
		}
	}
	return true
}

// Stream is one request from a client.
type Stream struct {
	x *exchange
	// The request's pseudo-headers and headers (canonical keys).
	Method, Scheme, Authority, Path string
	Header                          http.Header
	RemoteAddr                      string

	ctx    context.Context
	cancel context.CancelFunc
	w      responseWriter
	// bodyless: the request ended with its headers.
	bodyless bool
	// neverIndexed names the fields the client sent as literals never to
	// be indexed: an intermediary passes them on so (RFC 7541, 6.2.3).
	neverIndexed []string
}

func newStream(x *exchange, f *http2.MetaHeadersFrame, remote string, base context.Context) *Stream {
	if base == nil {
		base = context.Background()
	}
	st := &Stream{
		x:          x,
		Method:     f.PseudoValue("method"),
		Scheme:     f.PseudoValue("scheme"),
		Authority:  f.PseudoValue("authority"),
		Path:       f.PseudoValue("path"),
		RemoteAddr: remote,
		bodyless:   f.StreamEnded(),
	}
	regular := f.RegularFields()
	// Room for the fields a proxy adds: IDs, trace and X-Forwarded-*.
	st.Header = make(http.Header, len(regular)+8)
	// One array holds every value; a key's first value takes a slice of it
	// capped at one, so a second value appends elsewhere.
	values := make([]string, len(regular))
	for i, hf := range regular {
		if hf.Sensitive {
			st.neverIndexed = append(st.neverIndexed, hf.Name)
		}
		k := canonicalHeader(hf.Name)
		if vs, ok := st.Header[k]; ok {
			st.Header[k] = append(vs, hf.Value)
			continue
		}
		values[i] = hf.Value
		st.Header[k] = values[i : i+1 : i+1]
	}
	st.ctx, st.cancel = context.WithCancel(base)
	st.w.st = st
	return st
}

// Context ends when the client resets the stream or its connection ends.
func (s *Stream) Context() context.Context { return s.ctx }

// Request returns the stream as an http.Request without a body, for code
// that decides about requests in net/http's terms.
func (s *Stream) Request() (*http.Request, error) {
	u, err := parsePath(s.Path)
	if err != nil {
		return nil, err
	}
	host := s.Authority
	if host == "" {
		host = s.Header.Get("Host")
	}
	r := &http.Request{
		Method:     s.Method,
		URL:        u,
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     s.Header,
		Body:       http.NoBody,
		Host:       host,
		RemoteAddr: s.RemoteAddr,
		RequestURI: s.Path,
	}
	r.ContentLength = -1
	if v := s.Header.Get("Content-Length"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			r.ContentLength = n
		}
	} else if s.bodyless {
		r.ContentLength = 0
	}
	return r.WithContext(s.ctx), nil
}

// parsePath is url.ParseRequestURI, without its cost for the plain paths
// of RPCs: /pkg.Service/Method, maybe with a query.
func parsePath(p string) (*url.URL, error) {
	path, query, _ := strings.Cut(p, "?")
	if len(path) > 0 && path[0] == '/' && !strings.ContainsAny(path, "%#") && !strings.Contains(query, "#") {
		return &url.URL{Path: path, RawQuery: query}, nil
	}
	return url.ParseRequestURI(p)
}

// ResponseWriter answers the stream from the proxy itself. What is written
// goes out when the handler returns, unless the stream was forwarded.
func (s *Stream) ResponseWriter() http.ResponseWriter { return &s.w }

// finish sends what the handler wrote, if it did not forward the stream,
// and releases the stream.
func (s *Stream) finish() {
	w := &s.w
	s.respond(max(w.status, http.StatusOK), w.header, w.body)
	s.release()
}

// respond answers the client, unless a response started already.
func (s *Stream) respond(status int, header http.Header, body []byte) {
	x := s.x
	var b batch
	x.mu.Lock()
	down := &x.down
	if x.respStarted || down.reset || down.sentEnd {
		x.mu.Unlock()
		return
	}
	x.respStarted, x.local, x.status = true, true, status
	x.grpcStatus = header.Get("Grpc-Status")
	x.dropPending(x.up, &b)
	fields := make([]hpack.HeaderField, 0, len(header)+2)
	fields = append(fields, hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
	fields = appendHeader(fields, header, nil)
	if header.Get("Content-Length") == "" && status != http.StatusNoContent && status != http.StatusNotModified {
		fields = append(fields, hpack.HeaderField{Name: "content-length", Value: strconv.Itoa(len(body))})
	}
	o := down.c.out
	o.mu.Lock()
	o.writeHeaders(down.id, fields, len(body) == 0)
	o.mu.Unlock()
	b.touch(o)
	if len(body) == 0 {
		x.sentEnd(down, &b)
	} else {
		down.pend, down.pendEnd = body, true
		x.pump(down, &b)
	}
	x.mu.Unlock()
	b.flush()
}

// responseWriter buffers the proxy's own answers: errors, health, metrics.
type responseWriter struct {
	st     *Stream
	header http.Header
	status int
	body   []byte
}

func (w *responseWriter) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header, 8) // request ID and RateLimit-* on every answer
	}
	return w.header
}

func (w *responseWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
}

func (w *responseWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.body = append(w.body, p...)
	return len(p), nil
}

// Flush does nothing: the answer goes out whole when the handler returns.
func (*responseWriter) Flush() {}

var _ io.Writer = (*responseWriter)(nil)

// canonicalHeader is http.CanonicalHeaderKey of a lower-case HTTP/2 field
// name, without allocating for the common ones.
func canonicalHeader(name string) string {
	if k, ok := commonCanonical[name]; ok {
		return k
	}
	return http.CanonicalHeaderKey(name)
}

// lowerHeader is the HTTP/2 field name of a header key.
func lowerHeader(key string) string {
	if k, ok := commonLower[key]; ok {
		return k
	}
	return strings.ToLower(key)
}

var commonCanonical, commonLower = func() (map[string]string, map[string]string) {
	names := []string{
		"accept", "accept-encoding", "authorization", "content-encoding", "content-length", "content-type",
		"date", "grpc-accept-encoding", "grpc-encoding", "grpc-message", "grpc-status", "grpc-status-details-bin",
		"grpc-timeout", "connect-protocol-version", "connect-timeout-ms", "connect-accept-encoding",
		"connect-content-encoding", "host", "origin", "ratelimit-limit", "ratelimit-policy", "ratelimit-remaining",
		"ratelimit-reset", "retry-after", "te", "traceparent", "tracestate", "user-agent", "vary",
		"x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-request-id", "x-user-agent",
		"access-control-allow-origin", "access-control-expose-headers", "access-control-allow-credentials",
	}
	canon := make(map[string]string, len(names))
	lower := make(map[string]string, len(names))
	for _, n := range names {
		k := http.CanonicalHeaderKey(n)
		canon[n], lower[k] = k, n
	}
	return canon, lower
}()
