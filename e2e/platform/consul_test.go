package platform

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/kerneltest"
	"portcullis.dev/kernel/kerneltest/freeport"
)

// TestStartConsulTriesOtherPortsWhenOneIsTaken gives the agent, at first, a
// Serf port another process holds, as a parallel test can between the
// choice and the agent's bind.
func TestStartConsulTriesOtherPortsWhenOneIsTaken(t *testing.T) {
	bin := filepath.Dir(kerneltest.ConsulBinary(t))
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = taken.Close() })

	var calls atomic.Int32
	var progress strings.Builder
	p := &Platform{
		exited:   make(chan *process, 4),
		progress: &progress,
		stopped:  map[*process]bool{},
		freePorts: func(n int) ([]int, error) {
			ports, err := freeport.Pick(n)
			if calls.Add(1) == 1 && err == nil {
				ports[2] = taken.Addr().(*net.TCPAddr).Port // serf LAN
			}
			return ports, err
		},
	}
	t.Cleanup(func() { _ = p.Stop(t.Context()) })
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	addr, err := p.startConsul(ctx, bin, -1, newPrefixLog(&kerneltest.Buffer{}, false, "consul"))
	require.NoError(t, err)
	require.NoError(t, consulLeader(ctx, addr))
	// Another test may take a port of the second pick too; the agent
	// then tries a third time.
	assert.GreaterOrEqual(t, calls.Load(), int32(2))
	assert.Contains(t, progress.String(), "lost a port")
	assert.Len(t, p.procs, 1, "the agent that lost is forgotten")
}
