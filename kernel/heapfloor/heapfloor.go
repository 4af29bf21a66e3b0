// Package heapfloor keeps the garbage collector from running more often
// than a heap of a set size calls for.
//
// Go starts a collection when the heap has grown by GOGC percent (100 by
// default) over what the last one left live, and not before 4 MiB. A
// Portcullis process keeps only a few MiB live, so under load it collects
// every few milliseconds, and the calls in flight during a cycle wait for
// it: in the gateway's benchmark, a process with 2 MiB live serving 4,000
// calls a second collected 66 times a second, and its p99 latency was
// 3.5 ms against 1.2 ms with a 32 MiB floor. A floor raises GOGC while the
// live heap is small, so that the next collection starts when the heap
// reaches the floor; once the live heap is large enough, GOGC is what it
// was. It is what a memory ballast used to do, without the ballast.
//
// GOGC=off and a GOMEMLIMIT keep their meaning: with GOGC off the floor
// does nothing, and the runtime collects early to stay under a memory
// limit whatever the floor.
package heapfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// Set keeps the heap goal at floor bytes or more, for as long as the
// process runs or until the returned function is first called, which
// restores the GOGC in effect before. A floor of zero or less sets nothing.
//
// It adjusts GOGC after every collection, from the heap the collection
// left live; at most one floor is in effect in a process, and a second
// Set replaces the first.
func Set(floor int64) (restore func()) {
	if floor <= 0 {
		return func() {}
	}
	current.Lock()
	defer current.Unlock()
	if current.t != nil {
		current.t.stop()
		current.t = nil
	}
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	if base < 0 {
		return func() {}
	}
	t := &tuner{floor: uint64(floor), base: base, percent: base}
	current.t = t
	t.tune()
	t.arm()
	return func() {
		current.Lock()
		defer current.Unlock()
		if current.t == t {
			t.stop()
			current.t = nil
		}
	}
}

// current is the process's one tuner: GOGC is the process's.
var current struct {
	sync.Mutex
	t *tuner
}

type tuner struct {
	floor uint64
	base  int // the GOGC set before; the least percent the tuner sets

	mu      sync.Mutex
	percent int
	stopped bool
}

// sentinel is garbage the moment it is made: its finalizer runs after the
// next collection, and makes the next sentinel.
type sentinel struct{ t *tuner }

func (t *tuner) arm() {
	runtime.SetFinalizer(&sentinel{t: t}, func(s *sentinel) {
		if s.t.tune() {
			s.t.arm()
		}
	})
}

// tune sets GOGC for the heap the last collection left live, and reports
// whether the tuner still runs.
func (t *tuner) tune() bool {
	// What the heap goal is made of (see percentFor).
	samples := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"}}
	metrics.Read(samples)
	live, roots := bytesOf(samples[0]), bytesOf(samples[1])+bytesOf(samples[2])
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	// Within a twentieth of the GOGC set: small changes of the live heap
	// need not set it after every collection.
	if p := percentFor(t.floor, live, roots, t.base); 20*abs(p-t.percent) > t.percent {
		t.percent = p
		debug.SetGCPercent(p)
	}
	return true
}

func (t *tuner) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stopped = true
	debug.SetGCPercent(t.base)
}

// The runtime never sets a heap goal below minHeap*GOGC/100: while less
// than this is live, GOGC scales that minimum instead.
const minHeap = 4 << 20

// percentFor is the GOGC whose heap goal, the larger of
// live + (live+roots)*GOGC/100 and minHeap*GOGC/100, is the floor, or base
// when base's goal is larger. Roots are the stacks and globals the
// collector scans.
func percentFor(floor, live, roots uint64, base int) int {
	if live >= floor {
		return base
	}
	p := floor * 100 / minHeap
	if live+roots > 0 {
		p = min(p, (floor-live)*100/(live+roots))
	}
	return max(base, int(p))
}

// bytesOf is a sample's value, zero if this runtime does not know it.
func bytesOf(s metrics.Sample) uint64 {
	if s.Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s.Value.Uint64()
}

func abs(n int) int { return max(n, -n) }
