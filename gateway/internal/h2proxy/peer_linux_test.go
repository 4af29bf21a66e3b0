package h2proxy

import (
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPeerOpenSeesTheFIN(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	s, err := ln.Accept()
	require.NoError(t, err)
	raw, err := c.(syscall.Conn).SyscallConn()
	require.NoError(t, err)

	assert.True(t, peerOpen(raw))
	require.NoError(t, s.Close())
	assert.Eventually(t, func() bool { return !peerOpen(raw) }, time.Second, time.Millisecond)
}
