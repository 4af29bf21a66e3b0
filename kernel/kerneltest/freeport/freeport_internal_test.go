package freeport

import (
	"fmt"
	"net"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPickIsBelowTheEphemeralRange: the ports Pick returns are ones the
// kernel never hands out on its own, so nothing else takes them between the
// pick and the listen, and they differ within one pick.
func TestPickIsBelowTheEphemeralRange(t *testing.T) {
	t.Parallel()
	for range 20 {
		ports, err := Pick(5)
		require.NoError(t, err)
		seen := map[int]bool{}
		low, high := 32768, 60999
		if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
			_, err := fmt.Sscan(string(b), &low, &high)
			require.NoError(t, err)
		}
		for _, port := range ports {
			assert.True(t, port < low || port > high, "port %d is in the ephemeral range %d-%d", port, low, high)
			assert.False(t, seen[port], "port %d picked twice", port)
			seen[port] = true
		}
	}
}

func TestAddrIsFreeForTheCaller(t *testing.T) {
	t.Parallel()
	addr, err := Addr()
	require.NoError(t, err)
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	require.NoError(t, ln.Close())
}
