package registry_test

import (
	"log/slog"
	"maps"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/registry"
)

func TestCatalogWatcherRoutes(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	reg, _ := newRegistry(t, registry.WithLogger(logs.logger()))
	w := reg.WatchCatalog()
	t.Cleanup(w.Close)
	require.NoError(t, w.Wait(t.Context()))
	assert.Empty(t, w.Routes(), "Consul's own service serves no Connect service")

	waitForRoutes := func(want map[string]string) {
		t.Helper()
		deadline := time.After(3 * time.Second)
		for !maps.Equal(w.Routes(), want) {
			select {
			case <-w.Updates():
			case <-deadline:
				t.Fatalf("routes are %v, want %v", w.Routes(), want)
			}
		}
	}
	// Health does not matter: nothing answers these instances' checks.
	register(t, reg, registry.Instance{Service: "identity", Address: "127.0.0.1", Port: 1,
		ConnectServices: []string{"portcullis.identity.v1.IdentityService", "portcullis.identity.v1.InternalService"}})
	register(t, reg, registry.Instance{Service: "identity", Address: "127.0.0.2", Port: 1,
		ConnectServices: []string{"portcullis.identity.v1.IdentityService", "portcullis.identity.v1.InternalService"}})
	authzID := register(t, reg, registry.Instance{Service: "authz", Address: "127.0.0.1", Port: 2,
		ConnectServices: []string{"portcullis.authz.v1.AuthzService"}})
	// A service registered by something else: its tags are not routes.
	require.NoError(t, reg.Client().Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "redis", Port: 6379, Tags: []string{"primary"}}))
	waitForRoutes(map[string]string{
		"portcullis.identity.v1.IdentityService": "identity",
		"portcullis.identity.v1.InternalService": "identity",
		"portcullis.authz.v1.AuthzService":       "authz",
	})

	// A second service claiming a Connect service does not take its route.
	register(t, reg, registry.Instance{Service: "identity-next", Address: "127.0.0.1", Port: 3,
		ConnectServices: []string{"portcullis.identity.v1.IdentityService"}})
	require.Eventually(t, func() bool {
		return logs.count(slog.LevelWarn, "several Consul services serve one Connect service") > 0
	},
		3*time.Second, 10*time.Millisecond)
	assert.Equal(t, "identity", w.Routes()["portcullis.identity.v1.IdentityService"])

	require.NoError(t, reg.Deregister(t.Context(), authzID))
	waitForRoutes(map[string]string{
		"portcullis.identity.v1.IdentityService": "identity",
		"portcullis.identity.v1.InternalService": "identity",
	})
}
