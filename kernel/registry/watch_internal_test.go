package registry

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestNextIndex(t *testing.T) {
	tests := []struct {
		name            string
		prev, got, want uint64
	}{
		{"first answer", 0, 42, 42},
		{"moved on", 42, 57, 57},
		{"unchanged: the wait timed out", 42, 42, 42},
		{"went backwards: start over", 42, 7, 0},
		{"went backwards to 0: start over", 42, 0, 0},
		{"0 after starting over would not block", 0, 0, 1},
		{"1 is the least index to wait on", 0, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, nextIndex(tt.prev, tt.got))
		})
	}
}

func TestJitter(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 100 {
		d := jitter(time.Minute, 0.1)
		assert.GreaterOrEqual(t, d, 54*time.Second)
		assert.LessOrEqual(t, d, 66*time.Second)
		seen[d] = true
	}
	assert.Greater(t, len(seen), 1, "the wait varies")
}

func TestNewRouteTable(t *testing.T) {
	tests := []struct {
		name          string
		services      map[string][]string
		wantRoutes    map[string]string
		wantConflicts map[string][]string
	}{
		{"none", map[string][]string{}, map[string]string{}, nil},
		{
			"one service each",
			map[string][]string{"identity": {"a.v1.A", "a.v1.B"}, "authz": {"z.v1.Z"}},
			map[string]string{"a.v1.A": "identity", "a.v1.B": "identity", "z.v1.Z": "authz"},
			nil,
		},
		{
			"tags repeated across instances",
			map[string][]string{"identity": {"a.v1.A", "a.v1.A"}},
			map[string]string{"a.v1.A": "identity"},
			nil,
		},
		{
			"claimed twice: the first by name wins",
			map[string][]string{"identity-next": {"a.v1.A"}, "identity": {"a.v1.A"}, "other": {"a.v1.A"}},
			map[string]string{"a.v1.A": "identity"},
			map[string][]string{"a.v1.A": {"identity", "identity-next", "other"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := newRouteTable(tt.services)
			assert.Equal(t, tt.wantRoutes, got.routes)
			assert.Equal(t, tt.wantConflicts, got.conflicts)
		})
	}
}
