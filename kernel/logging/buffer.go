package logging

import (
	"io"
	"sync"
	"time"
)

// maxBuffered is how much a lineBuffer gathers before it writes: a few
// hundred lines of JSON, in one write instead of a write each.
const maxBuffered = 64 << 10

// lineBuffer gathers what a handler writes, a line a call, and writes it to
// w in one call when maxBuffered has gathered, every after the first line
// it holds, or when told to Flush. A busy service logs a line for every
// request, and a write system call for each took a fifth of the gateway's
// CPU per request.
type lineBuffer struct {
	w     io.Writer
	every time.Duration

	mu    sync.Mutex
	buf   []byte
	timer *time.Timer // armed while buf holds lines
}

func newLineBuffer(w io.Writer, every time.Duration) *lineBuffer {
	b := &lineBuffer{w: w, every: every}
	b.timer = time.AfterFunc(time.Hour, func() { _ = b.Flush() })
	b.timer.Stop()
	return b
}

func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf)+len(p) > maxBuffered {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) >= maxBuffered {
		return b.w.Write(p)
	}
	if len(b.buf) == 0 {
		if b.buf == nil {
			b.buf = make([]byte, 0, maxBuffered)
		}
		b.timer.Reset(b.every)
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// Flush writes what the buffer holds. Should the write fail, what it held
// is dropped, as a line written at once would have been.
func (b *lineBuffer) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

func (b *lineBuffer) flushLocked() error {
	if len(b.buf) == 0 {
		return nil
	}
	b.timer.Stop()
	_, err := b.w.Write(b.buf)
	b.buf = b.buf[:0]
	return err
}
