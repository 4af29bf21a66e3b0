package heapfloor

import (
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPercentFor(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name               string
		floor, live, roots uint64
		base, want         int
	}{
		{"live heap and roots past the runtime's minimum: goal at the floor", 64 * mib, 8 * mib, 0, 100, 700},
		{"stacks and globals count with the live heap", 64 * mib, 4 * mib, 4 * mib, 100, 750},
		{"below the runtime's minimum heap, GOGC scales that", 64 * mib, 1 * mib, 1 * mib, 100, 1600},
		{"nothing measured yet", 64 * mib, 0, 0, 100, 1600},
		{"live heap at half the floor: base reaches it", 64 * mib, 32 * mib, 0, 100, 100},
		{"live heap past the floor: base", 64 * mib, 100 * mib, 0, 100, 100},
		{"a higher base wins", 64 * mib, 16 * mib, 0, 400, 400},
		{"a lower base is raised", 64 * mib, 16 * mib, 0, 50, 300},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, percentFor(tt.floor, tt.live, tt.roots, tt.base))
		})
	}
}

// collections counts the cycles while 256 MiB of short-lived garbage is
// made, with about 1 MiB live.
func collections() uint32 {
	keep := make([][]byte, 256)
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range 64 << 10 {
		keep[i%len(keep)] = make([]byte, 4<<10)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(keep)
	return after.NumGC - before.NumGC
}

// The tests below change the process's GOGC: none runs in parallel.

func TestSetCollectsLessOften(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	runtime.GC()
	without := collections()

	restore := Set(128 << 20)
	runtime.GC()
	with := collections()
	restore()

	t.Logf("cycles for 256 MiB of garbage: %d without a floor, %d with 128 MiB", without, with)
	assert.Greater(t, without, uint32(20), "at GOGC=100 a small heap is collected every few MiB")
	assert.InDelta(t, 2, with, 1, "with the floor, about every 128 MiB")
}

func TestSetRestoresGOGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(150))
	restore := Set(64 << 20)
	runtime.GC()
	runtime.GC() // the finalizer of the first cycle's sentinel has run
	raised := debug.SetGCPercent(-1)
	debug.SetGCPercent(raised)
	assert.Greater(t, raised, 150)

	restore()
	assert.Equal(t, 150, debug.SetGCPercent(150))
	runtime.GC()
	runtime.GC()
	assert.Equal(t, 150, debug.SetGCPercent(150), "a stopped tuner sets nothing after later cycles")
}

func TestSetLeavesGOGCOffAlone(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	restore := Set(64 << 20)
	runtime.GC()
	require.Equal(t, -1, debug.SetGCPercent(-1))
	restore()
	require.Equal(t, -1, debug.SetGCPercent(-1))
}

func TestSetReplacesTheFloorBefore(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	gogc := func() int {
		runtime.GC()
		runtime.GC() // the finalizer of the first cycle's sentinel has run
		p := debug.SetGCPercent(-1)
		debug.SetGCPercent(p)
		return p
	}
	first := Set(1 << 30)
	high := gogc()
	second := Set(8 << 20)
	percent := gogc()
	assert.Less(t, percent, high, "the second, lower floor is in effect")
	first() // no longer in effect: changes nothing
	assert.Equal(t, percent, debug.SetGCPercent(percent))
	second()
	assert.Equal(t, 100, debug.SetGCPercent(100))
}
