package edge_test

import (
	"encoding/binary"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// pacer ticks a constant-rate load. The Go runtime rounds a sleep shorter
// than a millisecond up to one whenever it has nothing else to run
// (epoll_wait takes milliseconds), so a pacer built on time.Sleep starts
// calls 200 µs apart in bursts of five every millisecond and measures its
// own bursts as much as the path under test. A timerfd is an I/O event to
// the runtime's poller, which wakes for it to the microsecond, with no
// thread held and no spinning.
type pacer struct {
	f   *os.File
	buf [8]byte
}

func newPacer(interval time.Duration) (*pacer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("timerfd: %w", err)
	}
	// A non-blocking descriptor handed to os.NewFile is read through the
	// runtime's poller.
	p := &pacer{f: os.NewFile(uintptr(fd), "timerfd")}
	ts := unix.NsecToTimespec(interval.Nanoseconds())
	if err := unix.TimerfdSettime(fd, 0, &unix.ItimerSpec{Interval: ts, Value: ts}, nil); err != nil {
		_ = p.f.Close()
		return nil, fmt.Errorf("timerfd settime: %w", err)
	}
	return p, nil
}

// wait blocks until the next tick and returns how many ticks have passed
// since the last call: more than one when the caller fell behind.
func (p *pacer) wait() (int, error) {
	if _, err := p.f.Read(p.buf[:]); err != nil {
		return 0, fmt.Errorf("read timerfd: %w", err)
	}
	return int(binary.NativeEndian.Uint64(p.buf[:])), nil
}

func (p *pacer) close() { _ = p.f.Close() }
