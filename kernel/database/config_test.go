package database_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/config"
	"portcullis.dev/kernel/database"
)

// The database section loads through kernel/config like any service's.
func TestConfigLoadsFromYAMLAndEnv(t *testing.T) {
	t.Parallel()
	type serviceConfig struct {
		Database database.Config `koanf:"database"`
	}
	defaults := []byte(`
database:
  dsn: postgres://identity:pw@127.0.0.1:5432/portcullis?sslmode=disable
  schema: identity
  max_open_conns: 10
  max_idle_conns: 5
  conn_max_lifetime: 30m
  conn_max_idle_time: 5m
  connect_timeout: 30s
  ping_timeout: 2s
`)
	env := map[string]string{"PORTCULLIS_DATABASE_MAX_OPEN_CONNS": "20", "PORTCULLIS_DATABASE_SCHEMA": "Bad-Name"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }

	for _, bad := range []string{"Bad-Name", "public", strings.Repeat("s", database.MaxSchemaLen+1)} {
		env["PORTCULLIS_DATABASE_SCHEMA"] = bad
		_, err := config.Load[serviceConfig](defaults, config.WithArgs(nil), config.WithLookupEnv(lookup))
		require.Error(t, err, bad)
		assert.Contains(t, err.Error(), "database.schema", bad)
	}
	// The longest is whole as a notification channel (outbox.Enqueue).
	env["PORTCULLIS_DATABASE_SCHEMA"] = strings.Repeat("s", database.MaxSchemaLen)
	_, err := config.Load[serviceConfig](defaults, config.WithArgs(nil), config.WithLookupEnv(lookup))
	require.NoError(t, err)

	delete(env, "PORTCULLIS_DATABASE_SCHEMA")
	cfg, err := config.Load[serviceConfig](defaults, config.WithArgs(nil), config.WithLookupEnv(lookup))
	require.NoError(t, err)
	assert.Equal(t, 20, cfg.Database.MaxOpenConns)
	assert.Equal(t, "identity", cfg.Database.Schema)

	// Fewer connections than the default idle ones: the idle ones follow.
	env["PORTCULLIS_DATABASE_MAX_OPEN_CONNS"] = "3"
	cfg, err = config.Load[serviceConfig](defaults, config.WithArgs(nil), config.WithLookupEnv(lookup))
	require.NoError(t, err, "max_open_conns under the default max_idle_conns")
	assert.Equal(t, 3, cfg.Database.MaxOpenConns)
	assert.NotContains(t, cfg.Database.DSN.String(), "pw@")
}
