package backoff

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestWait(t *testing.T) {
	const initial, maxWait = 100 * time.Millisecond, time.Second
	tests := []struct {
		failures int
		ceiling  time.Duration
	}{
		{1, 100 * time.Millisecond},
		{2, 200 * time.Millisecond},
		{3, 400 * time.Millisecond},
		{4, 800 * time.Millisecond},
		{5, time.Second},
		{1000, time.Second},
	}
	for _, tt := range tests {
		for range 100 {
			d := Wait(tt.failures, initial, maxWait)
			assert.GreaterOrEqual(t, d, tt.ceiling/2, "after %d failures", tt.failures)
			assert.LessOrEqual(t, d, tt.ceiling, "after %d failures", tt.failures)
		}
	}
}
