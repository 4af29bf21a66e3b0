package platform

import (
	"net"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFreeAddrIsBelowTheEphemeralRange: the addresses FreeAddr picks are
// ones the kernel never hands out on its own, so nothing else takes them
// between the pick and the listen.
func TestFreeAddrIsBelowTheEphemeralRange(t *testing.T) {
	t.Parallel()
	for range 20 {
		addr, err := FreeAddr()
		require.NoError(t, err)
		_, port, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		n, err := strconv.Atoi(port)
		require.NoError(t, err)
		assert.GreaterOrEqual(t, n, 20000)
		assert.Less(t, n, ephemeralLow())
	}
}
