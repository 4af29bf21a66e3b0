package authn_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/authn"
	"portcullis.dev/kernel/config"
)

// serviceConfig is how a service declares its authn section: both configs
// squashed into one.
type serviceConfig struct {
	Authn struct {
		authn.Config
		authn.ServiceConfig
	} `koanf:"authn"`
}

const defaultYAML = `
authn:
  jwks_url: http://authsvc/.well-known/jwks.json
  issuer: https://auth.portcullis.dev
  audience: portcullis
  algorithms: [EdDSA, ES256]
  leeway: 30s
  refresh_interval: 5s
  cache_ttl: 5m
  token_cache_size: 10000
  service_key:
  service_previous_keys: []
  service_token_ttl: 60s
  service_leeway: 30s
`

func TestConfigLoads(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"PORTCULLIS_AUTHN_SERVICE_KEY":           "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
		"PORTCULLIS_AUTHN_LEEWAY":                "10s",
		"PORTCULLIS_AUTHN_SERVICE_PREVIOUS_KEYS": "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=,AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=",
	}
	cfg, err := config.Load[serviceConfig]([]byte(defaultYAML), config.WithArgs(nil),
		config.WithLookupEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }))
	require.NoError(t, err)
	assert.Equal(t, "http://authsvc/.well-known/jwks.json", cfg.Authn.JWKSURL)
	assert.Equal(t, []string{"EdDSA", "ES256"}, cfg.Authn.Algorithms)
	assert.Equal(t, 10*time.Second, cfg.Authn.Leeway)
	assert.Equal(t, 5*time.Minute, cfg.Authn.CacheTTL)
	assert.Equal(t, config.Secret(env["PORTCULLIS_AUTHN_SERVICE_KEY"]), cfg.Authn.ServiceKey)
	assert.Len(t, cfg.Authn.ServicePreviousKeys, 2)

	var printed strings.Builder
	require.NoError(t, config.Print(&printed, cfg))
	assert.NotContains(t, printed.String(), "AAAAAAAA", "the service key is never printed")
	assert.NotContains(t, printed.String(), "AQEBAQEB")

	_, err = authn.NewVerifier(cfg.Authn.Config)
	require.NoError(t, err)
	_, err = authn.NewServiceVerifier("auditsvc", cfg.Authn.ServiceConfig)
	require.NoError(t, err)
}

func TestConfigRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{
			name: "HS256 and no service key",
			env:  map[string]string{"PORTCULLIS_AUTHN_ALGORITHMS": "EdDSA,HS256"},
			want: []string{"authn.algorithms[1]", "authn.service_key"},
		},
		{
			name: "bad service key, never shown",
			env: map[string]string{
				"PORTCULLIS_AUTHN_SERVICE_KEY": "hunter2hunter2",
				"PORTCULLIS_AUTHN_JWKS_URL":    "authsvc/jwks.json",
			},
			want: []string{"authn.service_key", "authn.jwks_url"},
		},
		{
			name: "leeway too long",
			env: map[string]string{
				"PORTCULLIS_AUTHN_SERVICE_KEY": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
				"PORTCULLIS_AUTHN_LEEWAY":      "1h",
			},
			want: []string{"authn.leeway"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Load[serviceConfig]([]byte(defaultYAML), config.WithArgs(nil),
				config.WithLookupEnv(func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }))
			require.Error(t, err)
			t.Log(err)
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.NotContains(t, err.Error(), "hunter2")
		})
	}
}
