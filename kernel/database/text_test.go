package database_test

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/database"
	"portcullis.dev/kernel/kerneltest"
)

func TestValidTextIsWhatPostgreSQLStores(t *testing.T) {
	t.Parallel()
	_, db := kerneltest.Postgres(t)
	tests := []struct {
		name  string
		in    string
		valid bool
		clean string
	}{
		{"ascii", "Mozilla/5.0", true, "Mozilla/5.0"},
		{"empty", "", true, ""},
		{"multibyte", "Zoë 日本", true, "Zoë 日本"},
		{"nul", "a\x00b", false, "ab"},
		{"latin-1", "caf\xe9", false, "caf\uFFFD"},
		{"cut sequence", "\xe6\x97", false, "\uFFFD"},
		{"both", "\x00\xff", false, "\uFFFD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.valid, database.ValidText(tt.in))
			clean := database.CleanText(tt.in)
			assert.Equal(t, tt.clean, clean)
			assert.True(t, database.ValidText(clean))

			var got string
			err := db.QueryRowContext(t.Context(), `SELECT $1::text`, tt.in).Scan(&got)
			if tt.valid {
				require.NoError(t, err)
				assert.Equal(t, tt.in, got)
			} else {
				assert.Error(t, err, "PostgreSQL stored what ValidText refuses")
			}
			require.NoError(t, db.QueryRowContext(t.Context(), `SELECT $1::text`, clean).Scan(&got))
			assert.Equal(t, clean, got)
		})
	}
}

func TestTruncateText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly", 7, "exactly"},
		{"abcdef", 3, "abc"},
		{"Zoë", 3, "Zo"}, // ë takes bytes 2 and 3: not split
		{"日本", 5, "日"},
		{"日本", 2, ""},
		{"", 0, ""},
	}
	for _, tt := range tests {
		got := database.TruncateText(tt.in, tt.n)
		assert.Equal(t, tt.want, got, "%q to %d bytes", tt.in, tt.n)
		assert.True(t, database.ValidText(got))
	}
}

func TestValidTimeIsWhatPostgreSQLHolds(t *testing.T) {
	t.Parallel()
	_, db := kerneltest.Postgres(t)
	tests := []struct {
		name  string
		t     time.Time
		valid bool
	}{
		{"now", time.Now(), true},
		{"year 1", time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), true},
		{"earliest", time.Date(-4713, time.November, 24, 0, 0, 0, 0, time.UTC), true},
		{"latest", time.Date(294276, time.December, 31, 23, 59, 59, 999999000, time.UTC), true},
		{"before the earliest", time.Date(-4713, time.November, 23, 23, 59, 59, 0, time.UTC), false},
		{"after the latest", time.Date(294277, time.January, 1, 0, 0, 0, 0, time.UTC), false},
		{"int64 microseconds' least", time.UnixMicro(math.MinInt64), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.valid, database.ValidTime(tt.t))
			var got time.Time
			err := db.QueryRowContext(t.Context(), `SELECT $1::timestamptz`, tt.t).Scan(&got)
			if tt.valid {
				assert.NoError(t, err)
			} else {
				assert.Error(t, err, "PostgreSQL held what ValidTime refuses")
			}
		})
	}
}
