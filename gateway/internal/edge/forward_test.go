package edge_test

import (
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
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

// forward copies bytes between each client of listen and a connection of
// its own to upstream, both ways, until either side closes: no HTTP, no
// parsing, the least a proxy can do.
func forward(listen, upstream string) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		os.Exit(2)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			os.Exit(2)
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
