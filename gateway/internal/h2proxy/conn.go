package h2proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http2"
)

// conn is one HTTP/2 connection, to a client (server side) or to an
// upstream instance (client side). One goroutine reads its frames and
// handles each at once, forwarding data to the other side of its stream;
// what it writes, to this connection or another, is flushed when nothing
// more is buffered to read, so frames that arrived together leave together.
type conn struct {
	nc     net.Conn
	br     *bufio.Reader
	rfr    *http2.Framer
	block  *block // decodes rfr's header blocks
	out    *out
	server *Server    // nil on a client-side connection
	owner  *Transport // nil on a server-side connection
	addr   string     // the upstream's address, client side
	remote string     // the client's address, server side

	closed    chan struct{}
	closeOnce sync.Once
	ready     chan struct{} // client side: the peer's first SETTINGS arrived
	readyOnce sync.Once

	mu         sync.Mutex
	streams    map[uint32]*half
	maxStreams uint32
	// handlers counts streams whose handler still runs, reset or not, so
	// that resetting streams cannot start handlers without bound.
	handlers   int
	lastPeerID uint32 // highest stream the peer opened (server side)
	goingAway  bool   // no new streams: GOAWAY sent or received
	idle       *time.Timer
	idleFor    time.Duration

	// Liveness (see watch): frames read, counted by the reading goroutine,
	// and what only the liveness timer's function touches.
	framesRead atomic.Uint64
	alive      *time.Timer
	aliveSeen  uint64
	pinged     bool

	// Receive accounting at the connection level, under out.mu: what the
	// peer may still send, and what was consumed but not yet given back.
	recvWin     int32
	recvUnacked int32
	// streamWin is the receive window this side advertises per stream.
	streamWin int32
}

func newConn(nc net.Conn, writeTimeout time.Duration, connWin, streamWin int32) *conn {
	c := &conn{
		nc:         nc,
		br:         bufio.NewReaderSize(newReader(nc), 32<<10),
		out:        newOut(nc, writeTimeout),
		closed:     make(chan struct{}),
		ready:      make(chan struct{}),
		streams:    make(map[uint32]*half),
		maxStreams: 1<<31 - 1,
		recvWin:    connWin,
		streamWin:  streamWin,
	}
	c.rfr = http2.NewFramer(nil, c.br)
	c.block = newBlock()
	c.rfr.SetMaxReadFrameSize(minMaxFrameSize)
	// Frames are handled before the next is read and their data copied on:
	// one DataFrame per connection does.
	c.rfr.SetReuseFrames()
	c.out.failed = func(err error) { c.close(err) }
	c.out.drained = func() {
		var b batch
		c.pumpAll(&b)
		b.flush()
	}
	return c
}

// rawReader reads a socket through its runtime poller, with the read
// itself made as sysRead makes it.
type rawReader struct {
	nc  net.Conn
	raw syscall.RawConn
	// The read in progress and its outcome, and the function handed to
	// the socket, made once: a closure handed to RawConn escapes, and one
	// made per call would be allocated on every read. One goroutine reads.
	p      []byte
	n      int
	errno  syscall.Errno
	readFD func(fd uintptr) bool
}

// newReader reads a TCP connection's socket directly, and any other
// connection, a wrapper's included, through its own Read.
func newReader(nc net.Conn) io.Reader {
	if raw := rawConn(nc); raw != nil {
		r := &rawReader{nc: nc, raw: raw}
		r.readFD = r.readSocket
		return r
	}
	return nc
}

// rawConn is the socket of a TCP connection, nil for any other kind: a
// type that wraps one (with bytes read ahead, say) must keep its Read and
// Write.
func rawConn(nc net.Conn) syscall.RawConn {
	if tc, ok := nc.(*net.TCPConn); ok {
		if raw, err := tc.SyscallConn(); err == nil {
			return raw
		}
	}
	return nil
}

func (r *rawReader) Read(p []byte) (int, error) {
	r.p = p
	// Read waits for the poller, deadlines included, while the function
	// reports false: the socket had nothing yet.
	err := r.raw.Read(r.readFD)
	r.p = nil
	n, errno := r.n, r.errno // set by readSocket, which ran unless err says why
	switch {
	case err != nil:
		return 0, err // a *net.OpError already
	case errno != 0:
		return 0, &net.OpError{Op: "read", Net: "tcp", Addr: r.nc.RemoteAddr(), Err: os.NewSyscallError("read", errno)}
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return n, nil
}

func (r *rawReader) readSocket(fd uintptr) bool {
	r.n, r.errno = sysRead(fd, r.p)
	return r.errno != syscall.EAGAIN
}

// writeSettings starts the connection: this side's settings and, beyond the
// default 64 KiB, its connection window.
func (c *conn) writeSettings(settings ...http2.Setting) {
	o := c.out
	o.mu.Lock()
	_ = o.fr.WriteSettings(settings...)
	if c.recvWin > initialWindow {
		_ = o.fr.WriteWindowUpdate(0, uint32(c.recvWin-initialWindow))
	}
	o.mu.Unlock()
}

// batch collects the connections a goroutine wrote to, to flush them
// together. A stream touches two at most, its client's and its upstream's:
// those fit in the batch itself.
type batch struct {
	outs  []*out
	inner [2]*out
}

func (b *batch) touch(o *out) {
	for _, x := range b.outs {
		if x == o {
			return
		}
	}
	if b.outs == nil {
		b.outs = b.inner[:0]
	}
	b.outs = append(b.outs, o)
}

func (b *batch) flush() {
	for _, o := range b.outs {
		o.flush()
	}
	b.outs = b.outs[:0]
}

// serve reads and handles frames until the connection fails or closes.
func (c *conn) serve() {
	var b batch
	for {
		f, err := c.rfr.ReadFrame()
		if err == nil {
			c.framesRead.Add(1)
			err = c.handle(f, &b)
		}
		if err == nil && c.out.queued() > maxQueued {
			// A peer that sends but does not read (PINGs, SETTINGS,
			// refused streams) would have the answers pile up.
			err = http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
		}
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				c.resetStream(se.StreamID, se.Code, &b)
				if c.server != nil {
					c.server.refusedUnread(c, se.StreamID)
				}
				err = nil
			} else {
				var ce http2.ConnectionError
				if errors.As(err, &ce) {
					c.goAway(http2.ErrCode(ce), &b)
				}
				b.flush()
				c.close(err)
				return
			}
		}
		if !c.frameBuffered() {
			b.flush()
		}
	}
}

// frameBuffered reports whether the reader holds the whole of the next
// frame, so that ReadFrame returns it without waiting on the socket; the
// batch is written before any wait, lest a frame cut short (by TCP, or a
// HEADERS without the CONTINUATION it announces) hold back what the frames
// before it made the proxy write. A HEADERS or PUSH_PROMISE that does not
// end its header block counts as not whole: ReadFrame reads on to its end.
func (c *conn) frameBuffered() bool {
	const headerLen = 9 // RFC 9113, 4.1
	if c.br.Buffered() < headerLen {
		return false
	}
	h, _ := c.br.Peek(headerLen) // buffered already: no read
	length := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
	typ, flags := http2.FrameType(h[3]), http2.Flags(h[4])
	if (typ == http2.FrameHeaders || typ == http2.FramePushPromise) && !flags.Has(http2.FlagHeadersEndHeaders) {
		return false
	}
	return c.br.Buffered() >= headerLen+length
}

func (c *conn) handle(f http2.Frame, b *batch) error {
	switch f := f.(type) {
	case *http2.HeadersFrame:
		mh, err := c.block.read(c.rfr, f)
		defer c.block.release()
		if err != nil {
			return err
		}
		if c.server != nil {
			return c.server.onHeaders(c, mh, b)
		}
		return c.onResponseHeaders(mh, b)
	case *http2.DataFrame:
		return c.onData(f, b)
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f, b)
	case *http2.RSTStreamFrame:
		if h := c.stream(f.StreamID); h != nil {
			h.x.peerReset(h, f.ErrCode, b)
		}
	case *http2.SettingsFrame:
		return c.onSettings(f, b)
	case *http2.PingFrame:
		if !f.IsAck() {
			c.out.mu.Lock()
			_ = c.out.fr.WritePing(true, f.Data)
			c.out.mu.Unlock()
			b.touch(c.out)
		}
	case *http2.GoAwayFrame:
		c.onGoAway(f, b)
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol) // push is off
	}
	return nil
}

func (c *conn) stream(id uint32) *half {
	c.mu.Lock()
	h := c.streams[id]
	c.mu.Unlock()
	return h
}

func (c *conn) onData(f *http2.DataFrame, b *batch) error {
	n := int32(f.Header().Length) // padding counts against the windows
	o := c.out
	o.mu.Lock()
	c.recvWin -= n
	overflow := c.recvWin < 0
	o.mu.Unlock()
	if overflow {
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	h := c.stream(f.StreamID)
	if h == nil {
		// A stream that ended already: late data is dropped, but the
		// connection's window must not shrink for it.
		c.credit(nil, int(n), b)
		return nil
	}
	h.x.onData(h, f, n, b)
	return nil
}

// credit gives back n bytes the peer sent on h (nil: on a stream that is
// gone) once they have been passed on or dropped, in batches for the
// connection and for the stream, unless the stream ended.
func (c *conn) credit(h *half, n int, b *batch) {
	if n <= 0 {
		return
	}
	o := c.out
	o.mu.Lock()
	c.recvUnacked += int32(n)
	if c.recvUnacked >= creditBatch {
		_ = o.fr.WriteWindowUpdate(0, uint32(c.recvUnacked))
		c.recvWin += c.recvUnacked
		c.recvUnacked = 0
	}
	if h != nil && !h.recvEnd && !h.reset {
		h.recvUnacked += int32(n)
		if h.recvUnacked >= streamCreditBatch {
			_ = o.fr.WriteWindowUpdate(h.id, uint32(h.recvUnacked))
			h.recvWin += h.recvUnacked
			h.recvUnacked = 0
		}
	}
	o.mu.Unlock()
	b.touch(o)
}

// creditBatch is how much connection-level credit is collected before a
// WINDOW_UPDATE gives it back: one frame per many small calls.
const creditBatch = 32 << 10

// streamCreditBatch is the same for a stream: a server stream of small
// messages would otherwise cost a WINDOW_UPDATE per message. The peer
// still has all of the stream's window (256 KiB upstream, 1 MiB from
// clients) but this batch to send in.
const streamCreditBatch = 16 << 10

func (c *conn) onWindowUpdate(f *http2.WindowUpdateFrame, b *batch) error {
	if f.StreamID == 0 {
		c.out.mu.Lock()
		err := addWindow(&c.out.connWin, int64(f.Increment))
		c.out.mu.Unlock()
		if err != nil {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		c.pumpAll(b)
		return nil
	}
	if h := c.stream(f.StreamID); h != nil {
		x := h.x
		x.mu.Lock()
		if err := addWindow(&h.sendWin, int64(f.Increment)); err != nil {
			x.mu.Unlock()
			return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeFlowControl}
		}
		x.pump(h, b)
		x.mu.Unlock()
	}
	return nil
}

// pumpAll sends what waits on any stream of c, after the connection's
// window or its buffer's room grew.
func (c *conn) pumpAll(b *batch) {
	for _, h := range c.snapshot() {
		x := h.x
		x.mu.Lock()
		if len(h.pend) > 0 || h.pendEnd {
			x.pump(h, b)
		}
		x.mu.Unlock()
	}
}

func (c *conn) snapshot() []*half {
	c.mu.Lock()
	hs := make([]*half, 0, len(c.streams))
	for _, h := range c.streams {
		hs = append(hs, h)
	}
	c.mu.Unlock()
	return hs
}

func (c *conn) onSettings(f *http2.SettingsFrame, b *batch) error {
	if f.IsAck() {
		return nil
	}
	o := c.out
	var (
		delta int32
		hs    []*half
	)
	o.mu.Lock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta += int32(s.Val) - o.initWin
			o.initWin = int32(s.Val)
		case http2.SettingMaxFrameSize:
			o.maxFrame = s.Val
		case http2.SettingHeaderTableSize:
			o.enc.SetMaxDynamicTableSizeLimit(s.Val)
		case http2.SettingMaxConcurrentStreams:
			c.mu.Lock()
			c.maxStreams = s.Val
			c.mu.Unlock()
		}
		return nil
	})
	if err == nil {
		_ = o.fr.WriteSettingsAck()
		if delta != 0 {
			// The streams open now, in the same critical section as the
			// new initial window: a stream opened after it starts with it.
			hs = c.snapshot()
		}
	}
	o.mu.Unlock()
	if err != nil {
		return err
	}
	b.touch(o)
	for _, h := range hs {
		x := h.x
		x.mu.Lock()
		err := addWindow(&h.sendWin, int64(delta))
		if err == nil {
			x.pump(h, b)
		}
		x.mu.Unlock()
		if err != nil {
			return http2.ConnectionError(http2.ErrCodeFlowControl) // RFC 9113, 6.9.2
		}
	}
	c.readyOnce.Do(func() { close(c.ready) })
	return nil
}

func (c *conn) onGoAway(f *http2.GoAwayFrame, b *batch) {
	c.mu.Lock()
	c.goingAway = true
	var refused []*half
	if c.server == nil {
		for id, h := range c.streams {
			if id > f.LastStreamID {
				refused = append(refused, h)
			}
		}
	}
	empty := len(c.streams) == 0
	c.mu.Unlock()
	for _, h := range refused {
		h.x.peerReset(h, http2.ErrCodeRefusedStream, b)
	}
	if empty {
		b.flush()
		c.close(nil)
	}
}

// goAway tells the peer that no new streams will be served.
func (c *conn) goAway(code http2.ErrCode, b *batch) {
	c.mu.Lock()
	c.goingAway = true
	last := c.lastPeerID
	c.mu.Unlock()
	c.out.mu.Lock()
	_ = c.out.fr.WriteGoAway(last, code, nil)
	c.out.mu.Unlock()
	b.touch(c.out)
}

// resetStream answers a stream error of the peer's.
func (c *conn) resetStream(id uint32, code http2.ErrCode, b *batch) {
	if h := c.stream(id); h != nil {
		h.x.peerReset(h, code, b)
	}
	c.writeReset(id, code, b)
}

func (c *conn) writeReset(id uint32, code http2.ErrCode, b *batch) {
	c.out.mu.Lock()
	_ = c.out.fr.WriteRSTStream(id, code)
	c.out.mu.Unlock()
	b.touch(c.out)
}

// add registers a stream of this connection.
func (c *conn) add(h *half) {
	c.streams[h.id] = h
	if c.idle != nil {
		c.idle.Stop()
	}
}

// remove forgets a stream that ended. A connection going away closes with
// its last stream; an idle one after its idle time.
func (c *conn) remove(h *half) {
	c.mu.Lock()
	if c.streams[h.id] != h {
		c.mu.Unlock()
		return
	}
	delete(c.streams, h.id)
	empty := len(c.streams) == 0
	if empty && c.idleFor > 0 {
		if c.idle == nil {
			c.idle = time.AfterFunc(c.idleFor, c.closeIfIdle)
		} else {
			c.idle.Reset(c.idleFor)
		}
	}
	closeNow := empty && c.goingAway
	c.mu.Unlock()
	if closeNow {
		// Not here: the caller holds its exchange's lock, and closing
		// takes every other's.
		go func() {
			c.out.drain(drainTimeout)
			c.close(nil)
		}()
	}
}

func (c *conn) closeIfIdle() {
	c.mu.Lock()
	if len(c.streams) > 0 {
		c.mu.Unlock()
		return
	}
	// Marked in the same critical section as the check, so that no
	// stream is added to a connection about to close.
	c.goingAway = true
	last := c.lastPeerID
	c.mu.Unlock()
	c.out.mu.Lock()
	_ = c.out.fr.WriteGoAway(last, http2.ErrCodeNo, nil)
	c.out.mu.Unlock()
	c.out.drain(drainTimeout)
	c.close(nil)
}

// errUnresponsive closes a connection whose peer answered no PING.
var errUnresponsive = errors.New("peer answered no PING")

// watch starts checking, every interval, that the connection still reads
// frames: one that read none since the last check is sent a PING, and one
// that has read none timeout after its PING is closed. So a silent peer is
// pinged between one and two intervals after its last frame. A connection
// in use reads frames, so only a quiet one is ever pinged.
func (c *conn) watch(interval, timeout time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.goingAway {
		return
	}
	// checkAlive reads c.alive under c.mu, held here until it is stored.
	c.alive = time.AfterFunc(interval, func() { c.checkAlive(interval, timeout) })
}

func (c *conn) checkAlive(interval, timeout time.Duration) {
	select {
	case <-c.closed:
		return // the timer fired as close stopped it
	default:
	}
	var next time.Duration
	switch n := c.framesRead.Load(); {
	case n != c.aliveSeen:
		c.aliveSeen, c.pinged = n, false
		next = interval
	case !c.pinged:
		c.pinged = true
		var b batch
		c.out.mu.Lock()
		_ = c.out.fr.WritePing(false, [8]byte{'p', 'o', 'r', 't', 'c', 'u', 'l', 'l'})
		c.out.mu.Unlock()
		b.touch(c.out)
		b.flush()
		next = timeout
	default:
		c.mu.Lock()
		streams := len(c.streams)
		c.mu.Unlock()
		if c.owner != nil && c.owner.Logger != nil {
			c.owner.Logger.Warn("h2proxy: upstream connection answers nothing; closing it",
				"upstream", c.addr, "streams", streams, "ping_timeout", timeout)
		}
		c.close(errUnresponsive)
		return
	}
	// Under c.mu, where close stops the timer: a connection closed
	// meanwhile (a failed flush closes it) is not watched again.
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.closed:
	default:
		c.alive.Reset(next)
	}
}

// drainTimeout bounds how long a closing connection waits for what it
// has buffered to be written.
const drainTimeout = 5 * time.Second

// close ends the connection and every stream on it.
func (c *conn) close(err error) {
	c.closeOnce.Do(func() {
		// Writes from here on go nowhere, and a flush does not fail again
		// into this close.
		c.out.mu.Lock()
		if c.out.err == nil {
			c.out.err = net.ErrClosed
		}
		c.out.mu.Unlock()
		close(c.closed)
		_ = c.nc.Close()
		c.mu.Lock()
		c.goingAway = true
		if c.idle != nil {
			c.idle.Stop()
		}
		if c.alive != nil {
			c.alive.Stop()
		}
		hs := make([]*half, 0, len(c.streams))
		for _, h := range c.streams {
			hs = append(hs, h)
		}
		c.mu.Unlock()
		var b batch
		for _, h := range hs {
			h.x.peerReset(h, http2.ErrCodeInternal, &b)
		}
		b.flush()
		if c.server != nil {
			c.server.forget(c)
		}
		if c.owner != nil {
			c.owner.forget(c)
		}
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
			c.logDebug("connection closed", err)
		}
	})
}

func (c *conn) logDebug(msg string, err error) {
	var l interface{ Debug(string, ...any) }
	switch {
	case c.server != nil && c.server.Logger != nil:
		l = c.server.Logger
	case c.owner != nil && c.owner.Logger != nil:
		l = c.owner.Logger
	default:
		return
	}
	l.Debug("http2: "+msg, "remote", c.nc.RemoteAddr().String(), "err", err)
}
