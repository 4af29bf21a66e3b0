package platform

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSecretsAreKeptInTheStateDir(t *testing.T) {
	dir := t.TempDir()
	first, fresh, err := secrets(dir)
	require.NoError(t, err)
	require.Len(t, first, len(generatedSecrets))
	assert.Len(t, fresh, len(generatedSecrets))
	again, fresh, err := secrets(dir)
	require.NoError(t, err)
	assert.Equal(t, first, again, "a second run got new secrets")
	assert.Empty(t, fresh)
	info, err := os.Stat(filepath.Join(dir, "secrets.env"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())

	other, _, err := secrets("")
	require.NoError(t, err)
	assert.NotEqual(t, first, other)

	t.Setenv("PORTCULLIS_KEYS_KEK", "from-env")
	withEnv, _, err := secrets(dir)
	require.NoError(t, err)
	assert.Equal(t, "from-env", withEnv["PORTCULLIS_KEYS_KEK"])
}
