package h2proxy

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Close() })
	server, err = ln.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { _ = server.Close() })
	return client, server
}

func TestPeerOpenSeesTheFIN(t *testing.T) {
	c, s := tcpPair(t)
	o := newOut(c, 0)

	assert.True(t, o.peerOpen())
	require.NoError(t, s.Close())
	assert.Eventually(t, func() bool { return !o.peerOpen() }, time.Second, time.Millisecond)
}

// The socket calls made for every forwarded call allocate nothing: a
// closure handed to RawConn escapes, and one made per read, write or
// probe was a tenth of the gateway's allocations per call.
func TestSocketCallsDoNotAllocate(t *testing.T) {
	c, s := tcpPair(t)
	o := newOut(c, 0)
	r := newReader(s)
	msg, buf := make([]byte, 1024), make([]byte, 1024)

	allocs := testing.AllocsPerRun(100, func() {
		o.mu.Lock()
		n, err := o.tryWrite(msg)
		o.mu.Unlock()
		open := o.peerOpen()
		if err != nil || n != len(msg) || !open {
			t.Fatalf("write %d bytes, %v; peer open %v", n, err, open)
		}
		if _, err := io.ReadFull(r, buf); err != nil {
			t.Fatalf("read: %v", err)
		}
	})
	assert.Zero(t, allocs)
}
