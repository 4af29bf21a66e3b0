// Package servicetest runs a service's main against a real Consul in a
// test, the way the platform runs it, and checks the life cycle every
// Portcullis service shares: it starts, registers, turns healthy, and on
// cancellation deregisters and returns nil.
package servicetest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/kerneltest"
)

// Run is a service's run function: main minus the signal handling.
type Run func(ctx context.Context, args []string, stdout io.Writer) error

// ServiceKey returns a fresh service_auth.service_key value.
func ServiceKey() string {
	seed := make([]byte, ed25519.SeedSize)
	_, _ = rand.Read(seed)
	return base64.StdEncoding.EncodeToString(seed)
}

// SetEnv points the service at consul and at a schema of the test's own in
// the test PostgreSQL, and gives it a service key, through the environment,
// as `up` does. It uses t.Setenv, so the test cannot be parallel.
func SetEnv(t *testing.T, consul *kerneltest.Consul) {
	dsn, _ := kerneltest.Postgres(t)
	t.Setenv("PORTCULLIS_DATABASE_DSN", dsn)
	t.Setenv("PORTCULLIS_DATABASE_SCHEMA", kerneltest.SchemaName(t))
	t.Setenv("PORTCULLIS_REGISTRY_ADDR", consul.Addr())
	t.Setenv("PORTCULLIS_REGISTRY_CHECK_INTERVAL", "1s")
	t.Setenv("PORTCULLIS_SERVER_DEREGISTER_DELAY", "10ms")
	t.Setenv("PORTCULLIS_SERVICE_AUTH_SERVICE_KEY", ServiceKey())
	t.Setenv("PORTCULLIS_LOGGING_FORMAT", "json")
}

// CheckLifecycle starts run as service name against a fresh Consul, waits
// until Consul reports it passing, cancels it, and checks that it returned
// nil and left Consul.
func CheckLifecycle(t *testing.T, name string, run Run) {
	t.Helper()
	consul := kerneltest.StartConsul(t)
	SetEnv(t, consul)
	client, err := api.NewClient(&api.Config{Address: consul.Addr()})
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, io.Discard) }()

	passing := func() int {
		entries, _, err := client.Health().Service(name, "", true, nil)
		if err != nil {
			return -1
		}
		return len(entries)
	}
	require.Eventually(t, func() bool {
		select {
		case err := <-done:
			require.NoError(t, err, "%s stopped before turning healthy", name)
			return false
		default:
		}
		return passing() == 1
	}, 15*time.Second, 50*time.Millisecond, "%s never turned healthy in Consul", name)

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not stop", name)
	}
	entries, _, err := client.Catalog().Service(name, "", nil)
	require.NoError(t, err)
	assert.Empty(t, entries, "%s is still registered after stopping", name)
}

// CheckPrintConfig runs the service with --print-config and checks that it
// prints its configuration without the service key.
func CheckPrintConfig(t *testing.T, run Run) {
	t.Helper()
	key := ServiceKey()
	t.Setenv("PORTCULLIS_SERVICE_AUTH_SERVICE_KEY", key)
	var out bytes.Buffer
	require.NoError(t, run(t.Context(), []string{"--print-config"}, &out))
	assert.Contains(t, out.String(), "service_key: '[REDACTED]'")
	assert.NotContains(t, out.String(), key)
}

// CheckMissingKey checks that the service refuses to start without a
// service key, naming the key.
func CheckMissingKey(t *testing.T, run Run) {
	t.Helper()
	t.Setenv("PORTCULLIS_SERVICE_AUTH_SERVICE_KEY", "")
	err := run(t.Context(), nil, io.Discard)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "service_auth.service_key")
}
