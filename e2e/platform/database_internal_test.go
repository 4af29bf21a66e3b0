package platform

import (
	"context"
	"crypto/rand"
	"database/sql"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/kerneltest"
)

// TestLostSecretsAreNamed: a database whose Auth schema holds signing keys,
// started with a run directory that keeps no secrets, is refused with what
// to do, before a new key-encryption key is made up that would not open
// them.
func TestLostSecretsAreNamed(t *testing.T) {
	base, _ := kerneltest.Postgres(t)
	u, err := url.Parse(base)
	require.NoError(t, err)
	u.Path = "/e2e_" + strings.ToLower(rand.Text()[:12])
	dbURL := u.String()
	t.Cleanup(func() { _ = DropDatabase(context.Background(), dbURL) })
	require.NoError(t, EnsureDatabase(t.Context(), dbURL))
	db, err := sql.Open("postgres", dbURL)
	require.NoError(t, err)
	defer db.Close()
	stateDir := t.TempDir()

	require.NoError(t, keysNeedTheirKEK(t.Context(), dbURL, stateDir), "a new database needs no old key")
	_, err = db.ExecContext(t.Context(), `CREATE SCHEMA auth; CREATE TABLE auth.signing_keys (id text); INSERT INTO auth.signing_keys VALUES ('k1')`)
	require.NoError(t, err)

	err = keysNeedTheirKEK(t.Context(), dbURL, stateDir)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "secrets.env")
	assert.Contains(t, err.Error(), "dropdb")

	t.Setenv("PORTCULLIS_KEYS_KEK", "passed in")
	assert.NoError(t, keysNeedTheirKEK(t.Context(), dbURL, stateDir), "a KEK passed in is the operator's call")
	t.Setenv("PORTCULLIS_KEYS_KEK", "")
	require.NoError(t, os.WriteFile(filepath.Join(stateDir, "secrets.env"), []byte("PORTCULLIS_KEYS_KEK=kept\n"), 0o600))
	assert.NoError(t, keysNeedTheirKEK(t.Context(), dbURL, stateDir), "the kept secrets go with the database")
}
