package edge

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"portcullis.dev/gateway/internal/h2proxy"
)

// splitListener sorts a listener's connections by their first bytes:
// those that open with the HTTP/2 preface go to serveH2, the rest to
// net/http through Accept.
type splitListener struct {
	inner   net.Listener
	timeout time.Duration // for the first bytes
	serveH2 func(net.Conn)
	logger  *slog.Logger
	conns   chan net.Conn
	done    chan struct{}
	once    sync.Once
	err     error // why accepting stopped, if not Close
}

func newSplitListener(ln net.Listener, timeout time.Duration, serveH2 func(net.Conn), logger *slog.Logger) *splitListener {
	l := &splitListener{inner: ln, timeout: timeout, serveH2: serveH2, logger: logger, conns: make(chan net.Conn), done: make(chan struct{})}
	go l.acceptLoop()
	return l
}

func (l *splitListener) acceptLoop() {
	var (
		delay   time.Duration
		lastLog time.Time
	)
	for {
		nc, err := l.inner.Accept()
		if err != nil {
			if passing(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				if time.Since(lastLog) >= time.Second { // a shortage lasts: say so, not at each accept
					l.logger.Warn("accept failed; retrying", "error", err, "in", delay)
					lastLog = time.Now()
				}
				select {
				case <-time.After(delay):
					continue
				case <-l.done:
					return
				}
			}
			l.stop(err)
			return
		}
		delay = 0
		go l.dispatch(nc)
	}
}

// passing reports whether an accept error is one to wait out rather than
// stop serving for: out of file descriptors or kernel memory, say, as a
// flood of connections brings about. net/http waits on timeouts, EMFILE,
// ENFILE, ECONNRESET and ECONNABORTED; ENOBUFS and ENOMEM pass as well.
func passing(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, errno := range [...]syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.ECONNRESET} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

func (l *splitListener) dispatch(nc net.Conn) {
	h2, peeked, err := sniff(nc, l.timeout)
	switch {
	case err != nil:
		_ = nc.Close()
	case h2:
		l.serveH2(nc)
	default:
		select {
		case l.conns <- &peekedConn{Conn: nc, r: io.MultiReader(bytes.NewReader(peeked), nc)}:
		case <-l.done:
			_ = nc.Close()
		}
	}
}

// sniff reads as much of the HTTP/2 client preface as the connection
// starts with: all of it, or the bytes that show it is something else.
func sniff(nc net.Conn, timeout time.Duration) (h2 bool, peeked []byte, err error) {
	if timeout > 0 {
		_ = nc.SetReadDeadline(time.Now().Add(timeout))
		defer func() { _ = nc.SetReadDeadline(time.Time{}) }()
	}
	buf := make([]byte, len(h2proxy.Preface))
	n := 0
	for n < len(buf) {
		m, err := nc.Read(buf[n:])
		n += m
		if !strings.HasPrefix(h2proxy.Preface, string(buf[:n])) {
			return false, buf[:n], nil
		}
		if err != nil {
			return false, nil, err
		}
	}
	return true, nil, nil
}

func (l *splitListener) Accept() (net.Conn, error) {
	select {
	case nc := <-l.conns:
		return nc, nil
	case <-l.done:
		if l.err != nil {
			return nil, l.err
		}
		return nil, net.ErrClosed
	}
}

func (l *splitListener) stop(err error) {
	l.once.Do(func() {
		l.err = err
		close(l.done)
		_ = l.inner.Close()
	})
}

func (l *splitListener) Close() error {
	l.stop(nil)
	return nil
}

func (l *splitListener) Addr() net.Addr { return l.inner.Addr() }

// peekedConn reads the bytes sniffing took before the rest.
type peekedConn struct {
	net.Conn
	r io.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
