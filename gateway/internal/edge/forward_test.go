package edge_test

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// forwardEnv makes the test binary a bare TCP forwarder ("listen upstream")
// instead of running tests: see [startForwarder] and TestMain.
const forwardEnv = "PORTCULLIS_EDGE_TEST_FORWARD"

// forward serves [serveForward] on listen until the process is stopped.
func forward(spec string) {
	listen, upstream, _ := strings.Cut(spec, " ")
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "forwarder:", err)
		os.Exit(2)
	}
	serveForward(ln, upstream, nil)
}

// serveForward copies bytes between each client of ln and a connection of
// its own to upstream, both ways, until either side closes: no HTTP, no
// parsing, the least a proxy can do (between two TCP sockets, Go's io.Copy
// is splice(2): the bytes do not even pass through this process). It
// returns when ln is closed; track, if not nil, is told of every
// connection it opens or accepts.
func serveForward(ln net.Listener, upstream string, track func(net.Conn)) {
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
			if track != nil {
				track(c)
				track(u)
			}
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
	pid := startProcess(t, "forwarder", cmd, func() string { return "" }, listening(addr))
	return "http://" + addr, pid
}

// startForwarderHere serves the same forwarder from this process, beside
// the gateway that runs in it, until the test ends.
func startForwarderHere(t testing.TB, upstream string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	go serveForward(ln, upstream, func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	})
	return "http://" + ln.Addr().String()
}
