package freeport

import (
	"net"
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
		for _, port := range ports {
			assert.GreaterOrEqual(t, port, first)
			assert.Less(t, port, ephemeralLow())
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
