package logging_test

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/logging"
)

// writes records each write its writer takes, as a pipe or file would.
type writes struct {
	mu  sync.Mutex
	all []string
}

func (w *writes) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all = append(w.all, string(p))
	return len(p), nil
}

func (w *writes) snapshot() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.all...)
}

// msgs returns the messages of the JSON lines of one write, in order.
func msgs(t *testing.T, write string) []string {
	t.Helper()
	var buf bytes.Buffer
	buf.WriteString(write)
	var out []string
	for _, l := range lines(t, &buf) {
		out = append(out, l["msg"].(string))
	}
	return out
}

func TestFlushIntervalGathersLines(t *testing.T) {
	t.Parallel()
	var w writes
	logger := logging.New(logging.Config{Format: logging.FormatJSON, FlushInterval: time.Hour}, logging.WithOutput(&w))
	db := logger.WithGroup("db").With("pool", "main") // derived loggers share the buffer

	logger.Info("one")
	db.Info("two")
	logger.Debug("not logged")
	assert.Empty(t, w.snapshot(), "info lines were written before the interval")

	db.Warn("three")
	got := w.snapshot()
	require.Len(t, got, 1, "a warning is written at once, with the lines before it, in one write")
	assert.Equal(t, []string{"one", "two", "three"}, msgs(t, got[0]))

	logger.Info("four")
	logger.Error("five")
	logger.Info("six")
	require.NoError(t, logging.Flush(db))
	require.NoError(t, logging.Flush(db), "a second flush has nothing to write")
	got = w.snapshot()
	require.Len(t, got, 3)
	assert.Equal(t, []string{"four", "five"}, msgs(t, got[1]))
	assert.Equal(t, []string{"six"}, msgs(t, got[2]))
}

func TestFlushIntervalBoundsTheWait(t *testing.T) {
	t.Parallel()
	var w writes
	logger := logging.New(logging.Config{Format: logging.FormatJSON, FlushInterval: 20 * time.Millisecond}, logging.WithOutput(&w))
	for range 2 {
		start := time.Now()
		logger.Info("waits")
		logger.Info("for the interval")
		n := len(w.snapshot())
		require.Eventually(t, func() bool { return len(w.snapshot()) == n+1 }, 5*time.Second, time.Millisecond)
		assert.GreaterOrEqual(t, time.Since(start), 20*time.Millisecond)
		assert.Equal(t, []string{"waits", "for the interval"}, msgs(t, w.snapshot()[n]))
	}
}

func TestFlushIntervalWritesAFullBuffer(t *testing.T) {
	t.Parallel()
	var w writes
	logger := logging.New(logging.Config{Format: logging.FormatJSON, FlushInterval: time.Hour}, logging.WithOutput(&w))
	long := strings.Repeat("x", 1000)
	for range 200 { // about 200 KB
		logger.Info("line", "pad", long)
	}
	got := w.snapshot()
	require.NotEmpty(t, got, "a full buffer waits for the interval")
	assert.Less(t, len(got), 10, "lines were not gathered")
	logger.Info("huge", "pad", strings.Repeat("y", 100_000)) // longer than the buffer: written whole
	require.NoError(t, logging.Flush(logger))
	n := 0
	for _, write := range w.snapshot() {
		n += len(msgs(t, write))
	}
	assert.Equal(t, 201, n, "a line was lost or split")
}

func TestZeroFlushIntervalWritesEachLine(t *testing.T) {
	t.Parallel()
	var w writes
	logger := logging.New(logging.Config{Format: logging.FormatJSON}, logging.WithOutput(&w))
	logger.Info("one")
	logger.Info("two")
	assert.Len(t, w.snapshot(), 2)
	require.NoError(t, logging.Flush(logger))
	require.NoError(t, logging.Flush(logging.Discard()), "Flush of another logger does nothing")
}
