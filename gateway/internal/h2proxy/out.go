package h2proxy

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// maxBuffered is how much a connection's outgoing buffer may hold before
// streams stop adding data to it. It is what a client that stops reading
// can make the proxy hold for it, beyond the flow-control windows.
const maxBuffered = 1 << 20

// out is a connection's outgoing side. Frames are appended to a buffer
// under its lock, never waiting on the network, and written by flush: at
// once when the socket takes them, else by a goroutine of its own. A peer
// that stops reading thus never stalls the goroutine that produced the
// frames — an upstream connection's reader, which serves many clients.
type out struct {
	mu    sync.Mutex
	nc    net.Conn
	raw   syscall.RawConn // nil: every write goes through the writing goroutine
	buf   []byte
	spare []byte
	fr    *http2.Framer // writes into buf
	hbuf  bytes.Buffer
	enc   *hpack.Encoder
	busy  bool // the writing goroutine owns the socket
	// roomBlocked: data was held back for want of room in buf; whoever
	// empties buf calls drained so that it goes on. inDrained: a flush is
	// calling drained now, and nested flushes leave it to that one.
	roomBlocked, inDrained bool
	// inFlight is what the writing goroutine is writing now.
	inFlight int
	wake     chan struct{}
	err      error
	timeout  time.Duration // for a write that has to wait

	// The peer's flow-control windows and limits.
	connWin     int32
	initWin     int32
	maxFrame    uint32
	maxStreams  uint32
	nextLocalID uint32 // the next stream this side opens (client side only)

	// The socket write in progress and its outcome, and the functions
	// handed to the socket (tryWrite's, peerOpen's): made once, as a
	// closure handed to RawConn escapes, and one made per call would be
	// allocated on every write and every forwarded call.
	wbuf    []byte
	wn      int
	werr    error
	writeFD func(fd uintptr) bool
	probe   func(fd uintptr)
	// peerOpen's answer, under probeMu.
	probeMu  sync.Mutex
	peerGone bool

	// drained is called, without locks, when a write that had to wait is
	// done: streams waiting for room in the buffer go on.
	drained func()
	// failed is called once, without locks, when a write fails.
	failed func(error)
}

// bufWriter lets the framer append to out.buf.
type bufWriter struct{ o *out }

func (w bufWriter) Write(p []byte) (int, error) {
	w.o.buf = append(w.o.buf, p...)
	return len(p), nil
}

func newOut(nc net.Conn, timeout time.Duration) *out {
	o := &out{
		nc:       nc,
		wake:     make(chan struct{}, 1),
		timeout:  timeout,
		connWin:  initialWindow,
		initWin:  initialWindow,
		maxFrame: minMaxFrameSize,
		// Until the peer's SETTINGS say otherwise (RFC 9113, 6.5.2: no limit).
		maxStreams: 1<<31 - 1,
	}
	o.raw = rawConn(nc)
	o.writeFD, o.probe = o.writeSocket, o.probeState
	o.fr = http2.NewFramer(bufWriter{o}, nil)
	o.enc = hpack.NewEncoder(&o.hbuf)
	return o
}

const (
	initialWindow   = 65535 // RFC 9113, 6.9.2
	minMaxFrameSize = 16384
)

// maxQueued is how much may wait to be written before the connection is
// closed: data stops at maxBuffered, so what passes this is frames the
// peer provokes without reading the answers.
const maxQueued = 4 * maxBuffered

// queued is how much waits to be written.
func (o *out) queued() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.buf) + o.inFlight
}

// drain flushes and waits, up to timeout, until everything buffered is
// written or the connection failed.
func (o *out) drain(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for {
		o.flush()
		o.mu.Lock()
		done := o.err != nil || (len(o.buf) == 0 && !o.busy)
		o.mu.Unlock()
		if done || time.Now().After(deadline) {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// room is how many more bytes of data may be queued now.
func (o *out) room() int { return maxBuffered - len(o.buf) - o.inFlight }

// writeHeaders encodes fields and writes them as one HEADERS frame and as
// many CONTINUATION frames as the peer's frame size needs. Call with o.mu.
func (o *out) writeHeaders(id uint32, fields []hpack.HeaderField, endStream bool) {
	o.hbuf.Reset()
	for _, f := range fields {
		_ = o.enc.WriteField(f)
	}
	block := o.hbuf.Bytes()
	max := int(o.maxFrame)
	first := block
	if len(first) > max {
		first = block[:max]
	}
	block = block[len(first):]
	_ = o.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: endStream, EndHeaders: len(block) == 0})
	for len(block) > 0 {
		chunk := block
		if len(chunk) > max {
			chunk = chunk[:max]
		}
		block = block[len(chunk):]
		_ = o.fr.WriteContinuation(id, len(block) == 0, chunk)
	}
}

// writeData writes as much of data as the peer's windows, its frame size
// and the buffer's room allow, ending the stream with the last of it if end
// is set, and returns how much it wrote. Call with o.mu.
func (o *out) writeData(id uint32, streamWin *int32, data []byte, end bool) int {
	n := max(min(len(data), int(*streamWin), int(o.connWin), o.room()), 0)
	if n < len(data) {
		end = false
		if n == max(o.room(), 0) {
			o.roomBlocked = true
		}
	}
	if n == 0 && !end {
		return 0
	}
	for sent := 0; ; {
		chunk := min(n-sent, int(o.maxFrame))
		sent += chunk
		_ = o.fr.WriteData(id, end && sent == n, data[sent-chunk:sent])
		if sent == n {
			break
		}
	}
	*streamWin -= int32(n)
	o.connWin -= int32(n)
	return n
}

// flush writes what is buffered. It tries the socket once without waiting;
// what the socket does not take is left to the writing goroutine. When the
// write emptied a buffer that had held data back, the streams waiting for
// room go on.
func (o *out) flush() {
	for o.flushOnce() {
		o.drained()
		o.mu.Lock()
		o.inDrained = false
		o.mu.Unlock()
	}
}

// flushOnce writes what the socket takes and reports whether the buffer is
// empty after data was held back for room, and it falls to this caller to
// call drained.
func (o *out) flushOnce() bool {
	o.mu.Lock()
	if o.busy || o.err != nil {
		o.mu.Unlock()
		return false
	}
	if len(o.buf) > 0 {
		n, err := o.tryWrite(o.buf)
		if err != nil {
			o.err = err
			o.mu.Unlock()
			o.failed(err)
			return false
		}
		if n < len(o.buf) {
			o.buf = append(o.buf[:0], o.buf[n:]...)
			o.busy = true
			o.mu.Unlock()
			select {
			case o.wake <- struct{}{}:
			default:
			}
			return false
		}
		o.buf = o.buf[:0]
	}
	again := o.roomBlocked && !o.inDrained && o.drained != nil
	if again {
		o.roomBlocked, o.inDrained = false, true
	}
	o.mu.Unlock()
	return again
}

// tryWrite writes p to the socket without waiting for room in it. Call
// with o.mu.
func (o *out) tryWrite(p []byte) (int, error) {
	if o.raw == nil {
		return 0, nil
	}
	o.wbuf = p
	err := o.raw.Write(o.writeFD)
	o.wbuf = nil
	if err != nil {
		return 0, err
	}
	return o.wn, o.werr
}

// writeSocket is tryWrite's one attempt on the socket. On EAGAIN nothing
// is written, and flush hands the rest to the writing goroutine.
func (o *out) writeSocket(fd uintptr) bool {
	n, errno := sysWrite(fd, o.wbuf) // 0 and the errno on failure
	o.wn, o.werr = n, nil
	if errno != 0 && errno != syscall.EAGAIN {
		o.werr = errno
	}
	return true
}

// run is the writing goroutine: it writes what flush left, waiting for the
// socket, until the connection closes.
func (o *out) run(closed <-chan struct{}) {
	for {
		select {
		case <-o.wake:
		case <-closed:
			return
		}
		for {
			o.mu.Lock()
			if len(o.buf) == 0 || o.err != nil {
				o.busy = false
				o.mu.Unlock()
				break
			}
			data := o.buf
			o.buf, o.spare = o.spare[:0], nil
			o.inFlight = len(data)
			o.mu.Unlock()

			if o.timeout > 0 {
				_ = o.nc.SetWriteDeadline(time.Now().Add(o.timeout))
			}
			_, err := o.nc.Write(data)

			o.mu.Lock()
			o.spare, o.inFlight = data[:0], 0
			if err != nil && o.err == nil {
				o.err = err
				o.mu.Unlock()
				o.failed(err)
				return
			}
			o.roomBlocked = false
			o.mu.Unlock()
			if o.drained != nil {
				o.drained()
			}
		}
	}
}

// errWindowOverflow is a WINDOW_UPDATE or SETTINGS that would take a window
// past 2^31-1.
var errWindowOverflow = errors.New("flow-control window overflow")

func addWindow(w *int32, n int64) error {
	if int64(*w)+n > 1<<31-1 {
		return errWindowOverflow
	}
	*w += int32(n)
	return nil
}
