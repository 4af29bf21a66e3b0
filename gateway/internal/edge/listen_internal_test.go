package edge

import (
	"log/slog"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// failingListener fails its first accepts with err, then accepts.
type failingListener struct {
	net.Listener
	err      error
	failures int
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.failures > 0 {
		l.failures--
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: l.err}
	}
	return l.Listener.Accept()
}

// TestSplitListenerWaitsOutPassingErrors: a flood that exhausts the file
// descriptors must slow the gateway down, not stop it.
func TestSplitListenerWaitsOutPassingErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		stops bool
	}{
		{"out of file descriptors", os.NewSyscallError("accept4", syscall.EMFILE), false},
		{"system out of files", os.NewSyscallError("accept4", syscall.ENFILE), false},
		{"out of buffers", os.NewSyscallError("accept4", syscall.ENOBUFS), false},
		{"not a socket", os.NewSyscallError("accept4", syscall.ENOTSOCK), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			l := newSplitListener(&failingListener{Listener: inner, err: tc.err, failures: 3}, time.Second,
				func(nc net.Conn) { _ = nc.Close() }, slog.New(slog.DiscardHandler))
			t.Cleanup(func() { _ = l.Close() })
			if tc.stops {
				_, err := l.Accept()
				assert.ErrorIs(t, err, tc.err.(*os.SyscallError).Err)
				return
			}
			dialed, err := net.Dial("tcp", inner.Addr().String())
			require.NoError(t, err)
			t.Cleanup(func() { _ = dialed.Close() })
			_, err = dialed.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
			require.NoError(t, err)
			nc, err := l.Accept()
			require.NoError(t, err, "the listener serves on after the errors")
			_ = nc.Close()
		})
	}
}
