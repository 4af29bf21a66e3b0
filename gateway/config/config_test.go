package config_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/gateway/config"
	kconfig "portcullis.dev/kernel/config"
)

func TestRateLimitBounds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		wantErr bool
	}{
		{"off", map[string]string{"PORTCULLIS_RATELIMIT_IP_RATE": "0"}, false},
		{"one a day", map[string]string{"PORTCULLIS_RATELIMIT_USER_RATE": "0.0000116"}, false},
		{"a million a second", map[string]string{"PORTCULLIS_RATELIMIT_IP_RATE": "1000000"}, false},
		// Its interval would overflow a time.Duration.
		{"under one a day", map[string]string{"PORTCULLIS_RATELIMIT_CREDENTIAL_RATE": "0.0000000001"}, true},
		// Under a microsecond between tokens, which Redis keeps as zero.
		{"over a million a second", map[string]string{"PORTCULLIS_RATELIMIT_IP_RATE": "2000000"}, true},
		{"negative", map[string]string{"PORTCULLIS_RATELIMIT_IP_RATE": "-1"}, true},
		{"burst of zero", map[string]string{"PORTCULLIS_RATELIMIT_IP_BURST": "0"}, true},
		{"burst over a million", map[string]string{"PORTCULLIS_RATELIMIT_USER_BURST": "1000001"}, true},
		// Each within its bounds; together the bucket would take 317 years
		// to fill, which overflows its window in nanoseconds.
		{"a window beyond a year", map[string]string{
			"PORTCULLIS_RATELIMIT_CREDENTIAL_RATE": "0.0001", "PORTCULLIS_RATELIMIT_CREDENTIAL_BURST": "1000000",
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Load(nil, kconfig.WithLookupEnv(func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }))
			if !tt.wantErr {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), "ratelimit.")
		})
	}
}
