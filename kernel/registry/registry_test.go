package registry_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/registry"
)

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     registry.Config
		opts    []registry.Option
		wantErr string
	}{
		{name: "zero config", cfg: registry.Config{}},
		{name: "all set", cfg: registry.Config{Addr: "https://consul:8501", Token: "t", Datacenter: "eu1", DeregisterCriticalAfter: 5 * time.Minute, CheckInterval: time.Second}},
		{name: "unix socket", cfg: registry.Config{Addr: "unix:///run/consul.sock"}},
		{name: "deregister too soon", cfg: registry.Config{DeregisterCriticalAfter: 30 * time.Second}, wantErr: "deregister_critical_after: must be 0 (the default, 1m0s) or at least 1m0s, got 30s"},
		{name: "negative deregister", cfg: registry.Config{DeregisterCriticalAfter: -time.Minute}, wantErr: "deregister_critical_after"},
		{name: "check too often", cfg: registry.Config{CheckInterval: 200 * time.Millisecond}, wantErr: "check_interval: must be 0 (the default, 2s) or at least 1s, got 200ms"},
		{name: "unknown scheme", cfg: registry.Config{Addr: "ftp://consul"}, wantErr: "consul client for ftp://consul"},
		{name: "relative check path", opts: []registry.Option{registry.WithCheckPath("readyz")}, wantErr: `check path "readyz": must start with /`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg, err := registry.New(tt.cfg, tt.opts...)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.NotNil(t, reg.Client())
		})
	}
}

func TestRegisterRejectsInvalidInstances(t *testing.T) {
	t.Parallel()
	reg, err := registry.New(registry.Config{Addr: "127.0.0.1:1"}) // never reached
	require.NoError(t, err)
	valid := registry.Instance{Service: "identity", Address: "127.0.0.1", Port: 8080}
	tests := []struct {
		name    string
		change  func(*registry.Instance)
		wantErr string
	}{
		{"no service", func(i *registry.Instance) { i.Service = "" }, "no service name"},
		{"no address", func(i *registry.Instance) { i.Address = "" }, "no address"},
		{"port zero", func(i *registry.Instance) { i.Port = 0 }, "port 0 is not in 1-65535"},
		{"port too high", func(i *registry.Instance) { i.Port = 70000 }, "port 70000"},
		{"slash in ID", func(i *registry.Instance) { i.ID = "a/b" }, `ID "a/b"`},
		{"reserved meta", func(i *registry.Instance) { i.Meta = map[string]string{"version": "x"} }, `sets "version"`},
		{"comma in connect service", func(i *registry.Instance) { i.ConnectServices = []string{"a,b"} }, "contains a comma"},
		{"empty connect service", func(i *registry.Instance) { i.ConnectServices = []string{""} }, "is empty"},
		{"connect services too long", func(i *registry.Instance) {
			i.ConnectServices = []string{strings.Repeat("x", 300), strings.Repeat("y", 300)}
		}, "at most 512"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inst := valid
			tt.change(&inst)
			_, err := reg.Register(t.Context(), inst)
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}

func TestRegisterAndDeregister(t *testing.T) {
	t.Parallel()
	reg, _ := newRegistry(t, registry.WithCheckPath("/ready"))
	ctx := t.Context()
	inst := registry.Instance{
		Service:         "identity",
		Address:         "127.0.0.1",
		Port:            9123,
		Version:         "v0.3.0",
		ConnectServices: []string{"portcullis.identity.v1.IdentityService", "portcullis.identity.v1.InternalService"},
		Meta:            map[string]string{"zone": "a"},
	}
	id, err := reg.Register(ctx, inst)
	require.NoError(t, err)
	assert.Equal(t, "identity-127.0.0.1-9123", id)

	services, _, err := reg.Client().Catalog().Service("identity", "", (&api.QueryOptions{}).WithContext(ctx))
	require.NoError(t, err)
	require.Len(t, services, 1)
	s := services[0]
	assert.Equal(t, id, s.ServiceID)
	assert.Equal(t, "127.0.0.1", s.ServiceAddress)
	assert.Equal(t, 9123, s.ServicePort)
	assert.Equal(t, inst.ConnectServices, s.ServiceTags)
	assert.Equal(t, map[string]string{
		"version":          "v0.3.0",
		"connect_services": "portcullis.identity.v1.IdentityService,portcullis.identity.v1.InternalService",
		"zone":             "a",
	}, s.ServiceMeta)

	// The api package's check types leave out the interval and timeout.
	type check struct{ ServiceID, Type, Status, Interval, Timeout, Output string }
	var checks map[string]check
	_, err = reg.Client().Raw().Query("/v1/agent/checks", &checks, (&api.QueryOptions{}).WithContext(ctx))
	require.NoError(t, err)
	require.Len(t, checks, 1)
	for _, c := range checks {
		assert.Equal(t, check{ServiceID: id, Type: "http", Status: api.HealthCritical, Interval: "1s", Timeout: "1s"},
			check{c.ServiceID, c.Type, c.Status, c.Interval, c.Timeout, ""})
	}
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		_, err := reg.Client().Raw().Query("/v1/agent/checks", &checks, (&api.QueryOptions{}).WithContext(ctx))
		require.NoError(c, err)
		for _, check := range checks {
			assert.Contains(c, check.Output, "http://127.0.0.1:9123/ready", "the check probes the check path")
		}
	}, 3*time.Second, 50*time.Millisecond)

	// Registering the same ID again replaces the registration.
	inst.ID, inst.Version = id, "v0.3.1"
	_, err = reg.Register(ctx, inst)
	require.NoError(t, err)
	services, _, err = reg.Client().Catalog().Service("identity", "", (&api.QueryOptions{}).WithContext(ctx))
	require.NoError(t, err)
	require.Len(t, services, 1)
	assert.Equal(t, "v0.3.1", services[0].ServiceMeta["version"])

	require.NoError(t, reg.Deregister(ctx, id))
	services, _, err = reg.Client().Catalog().Service("identity", "", (&api.QueryOptions{}).WithContext(ctx))
	require.NoError(t, err)
	assert.Empty(t, services)
	assert.NoError(t, reg.Deregister(ctx, id), "deregistering an unknown ID succeeds")
}

func TestRegisterUnreachableConsul(t *testing.T) {
	t.Parallel()
	reg, err := registry.New(registry.Config{Addr: "127.0.0.1:1"})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err = reg.Register(ctx, registry.Instance{Service: "identity", Address: "127.0.0.1", Port: 8080})
	require.ErrorContains(t, err, `register "identity-127.0.0.1-8080" in Consul at 127.0.0.1:1`)
	err = reg.Deregister(ctx, "identity-127.0.0.1-8080")
	require.ErrorContains(t, err, `deregister "identity-127.0.0.1-8080" from Consul at 127.0.0.1:1`)
}
