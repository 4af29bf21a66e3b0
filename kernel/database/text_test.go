package database_test

import (
	"testing"

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
