package platform

import (
	"os"
	"path/filepath"
	"strings"
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

// A secret passed in through the environment is used but never written to
// secrets.env, neither on the first run nor on a later one that generates
// something else; a value already kept stays kept.
func TestSecretsFromTheEnvironmentAreNotStored(t *testing.T) {
	for _, tc := range []struct {
		name string
		// kept is secrets.env before the run; "" means no file.
		kept string
	}{
		{name: "first run"},
		{name: "a kept admin password", kept: adminPasswordVar + "=kept-before\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "secrets.env")
			if tc.kept != "" {
				require.NoError(t, os.WriteFile(path, []byte(tc.kept), 0o600))
			}
			t.Setenv(adminPasswordVar, "from-the-environment")
			t.Setenv("PORTCULLIS_KEYS_KEK", "kek-from-the-environment")

			got, fresh, err := secrets(dir)
			require.NoError(t, err)
			assert.Equal(t, "from-the-environment", got[adminPasswordVar])
			assert.Equal(t, "kek-from-the-environment", got["PORTCULLIS_KEYS_KEK"])
			assert.False(t, fresh[adminPasswordVar])
			assert.True(t, fresh["PORTCULLIS_SERVICE_AUTH_SERVICE_KEY"])

			stored, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.NotContains(t, string(stored), "from-the-environment")
			assert.Contains(t, string(stored), "PORTCULLIS_SERVICE_AUTH_SERVICE_KEY="+got["PORTCULLIS_SERVICE_AUTH_SERVICE_KEY"])
			if tc.kept != "" {
				assert.Contains(t, string(stored), tc.kept, "a kept value was dropped")
			} else {
				assert.NotContains(t, string(stored), adminPasswordVar)
			}
		})
	}
}

func TestChildEnvironmentHoldsNoPlatformSecret(t *testing.T) {
	t.Setenv(adminPasswordVar, "admin-secret")
	t.Setenv(rolePasswordVar("authsvc"), "role-secret")
	t.Setenv("PORTCULLIS_DATABASE_URL", "postgres://postgres:superuser-secret@127.0.0.1/portcullis")
	t.Setenv("PORTCULLIS_LOGGING_LEVEL", "debug")
	env := strings.Join(childEnviron(), "\n")
	for _, secret := range []string{"admin-secret", "role-secret", "superuser-secret"} {
		assert.NotContains(t, env, secret)
	}
	assert.Contains(t, env, "PORTCULLIS_LOGGING_LEVEL=debug", "other settings reach the services")
}
