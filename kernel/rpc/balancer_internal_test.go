package rpc

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"portcullis.dev/kernel/registry"
)

func TestPickSpreadsLoad(t *testing.T) {
	t.Parallel()
	b := newBalancer(nil, nil)
	instances := []registry.Instance{
		{Address: "10.0.0.1", Port: 1}, {Address: "10.0.0.2", Port: 1}, {Address: "10.0.0.3", Port: 1},
	}
	counts := map[string]int{}
	for range 3000 {
		inst, _, ok := b.pick(instances, nil)
		assert.True(t, ok)
		counts[inst.HostPort()]++
	}
	for addr, n := range counts {
		assert.InDelta(t, 1000, n, 200, "%s picked %d times of 3000", addr, n)
	}
	assert.Len(t, counts, 3)

	// The busier of two is avoided.
	b.endpoint("10.0.0.1:1").inFlight.Store(10)
	b.endpoint("10.0.0.2:1").inFlight.Store(10)
	two := instances[:2]
	two = append(two, registry.Instance{Address: "10.0.0.3", Port: 1})
	busy := 0
	for range 1000 {
		inst, _, _ := b.pick(two, nil)
		if inst.Address != "10.0.0.3" {
			busy++
		}
	}
	// 10.0.0.3 loses only when both picks are the busy ones: 1/3 of pairs.
	assert.InDelta(t, 333, busy, 100)

	// Tried instances are skipped; ejected ones only as a last resort.
	inst, _, ok := b.pick(instances, []string{"10.0.0.1:1", "10.0.0.2:1"})
	assert.True(t, ok)
	assert.Equal(t, "10.0.0.3:1", inst.HostPort())
	_, _, ok = b.pick(instances, []string{"10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"})
	assert.False(t, ok)
	for range 3 {
		b.record(b.endpoint("10.0.0.3:1"), false)
	}
	inst, _, ok = b.pick(instances, []string{"10.0.0.1:1"})
	assert.True(t, ok)
	assert.Equal(t, "10.0.0.2:1", inst.HostPort(), "an ejected instance was picked over a healthy one")
	inst, _, ok = b.pick(instances, []string{"10.0.0.1:1", "10.0.0.2:1"})
	assert.True(t, ok, "an ejected instance is still better than none")
	assert.Equal(t, "10.0.0.3:1", inst.HostPort())
}
