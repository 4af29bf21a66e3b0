//go:build !linux

package edge_test

import "time"

// pacer ticks a constant-rate load with the runtime's timers, which may
// round short intervals up; see the Linux pacer.
type pacer struct {
	interval time.Duration
	start    time.Time
	ticks    int
}

func newPacer(interval time.Duration) (*pacer, error) {
	return &pacer{interval: interval, start: time.Now()}, nil
}

func (p *pacer) wait() (int, error) {
	next := p.start.Add(time.Duration(p.ticks+1) * p.interval)
	time.Sleep(time.Until(next))
	due := int(time.Since(p.start) / p.interval)
	n := due - p.ticks
	p.ticks = due
	return n, nil
}

func (p *pacer) close() {}
