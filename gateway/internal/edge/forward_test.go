package edge_test

import (
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// forwardEnv makes the test binary a bare TCP forwarder ("listen upstream")
// instead of running tests: see [startForwarder].
const forwardEnv = "PORTCULLIS_EDGE_TEST_FORWARD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(forwardEnv); spec != "" {
		listen, upstream, _ := strings.Cut(spec, " ")
		forward(listen, upstream)
		return
	}
	os.Exit(m.Run())
}

func forward(listen, upstream string) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		os.Exit(2)
	}
	serveForward(ln, upstream)
	os.Exit(2)
}

// serveForward copies bytes between each client of ln and a connection of
// its own to upstream, both ways, until either side closes: no HTTP, no
// parsing, the least a proxy can do. It returns when ln is closed.
func serveForward(ln net.Listener, upstream string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				return
			}
			defer u.Close()
			go func() {
				_, _ = io.Copy(u, c)
				_ = u.(*net.TCPConn).CloseWrite()
			}()
			_, _ = io.Copy(c, u)
		}()
	}
}

// startForwarder runs a bare TCP forwarder to upstream (host:port) as a
// process of its own, this test binary in [forward]'s role, and returns its
// base URL and process ID. It is the floor of what any proxy adds: a hop
// through one more process and one more pair of sockets.
func startForwarder(t testing.TB, upstream string) (string, int) {
	t.Helper()
	addr := freeAddr(t)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), forwardEnv+"="+addr+" "+upstream)
	pid := startProcess(t, "forwarder", cmd, func() string { return "" }, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	})
	return "http://" + addr, pid
}

// startForwarderHere serves the same forwarder from this process, beside
// the gateway that runs in it, until the test ends.
func startForwarderHere(t testing.TB, upstream string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go serveForward(ln, upstream)
	return "http://" + ln.Addr().String()
}
