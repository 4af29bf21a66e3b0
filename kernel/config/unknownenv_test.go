package config_test

import (
	"bytes"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"

	"portcullis.dev/kernel/config"
)

func TestUnknownEnv(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		environ []string
		want    []string
	}{
		{"keys of the config", []string{"PORTCULLIS_DATABASE_MAX_OPEN_CONNS=5", "PORTCULLIS_HTTP_SERVER_LISTEN_ADDR=:1", "PORTCULLIS_SERVICE=x"}, nil},
		{"misspelled key in a section", []string{"PORTCULLIS_DATABASE_MAXOPENCONNS=5", "PORTCULLIS_HTTP_SERVER_LISTENADDR=:1"},
			[]string{"PORTCULLIS_DATABASE_MAXOPENCONNS", "PORTCULLIS_HTTP_SERVER_LISTENADDR"}},
		{"another service's section", []string{"PORTCULLIS_GATEWAY_ADDR=:8080", "PORTCULLIS_RBAC_BOOTSTRAP_ADMINS=x"}, nil},
		{"other programs' variables", []string{"PORTCULLIS_TEST_DATABASE_URL=x", "PORTCULLIS_CONFIG=/etc/x.yaml", "PATH=/bin", "DATABASE_MAXOPENCONNS=1"}, nil},
		// The prefix is the section's name and an underscore: a section
		// whose name starts another's does not take its variables.
		{"a section named like the start of another", []string{"PORTCULLIS_DATABASEX_DSN=x"}, nil},
		{"reported once, sorted", []string{"PORTCULLIS_DATABASE_Z=1", "PORTCULLIS_DATABASE_A=1", "PORTCULLIS_DATABASE_Z=2"},
			[]string{"PORTCULLIS_DATABASE_A", "PORTCULLIS_DATABASE_Z"}},
		{"an entry without a value", []string{"PORTCULLIS_DATABASE_PASWORD"}, []string{"PORTCULLIS_DATABASE_PASWORD"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tt.want, config.UnknownEnv[testConfig](tt.environ))
		})
	}
}

func TestWarnUnknownEnv(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	config.WarnUnknownEnv[testConfig](t.Context(), logger, []string{"PORTCULLIS_DATABASE_MAXOPENCONNS=5", "PORTCULLIS_DATABASE_DSN=secret"})
	assert.Contains(t, buf.String(), "level=WARN")
	assert.Contains(t, buf.String(), "variable=PORTCULLIS_DATABASE_MAXOPENCONNS")
	assert.NotContains(t, buf.String(), "DSN", "a key the config has is no warning")
	assert.NotContains(t, buf.String(), "=5", "values are not logged: they may be secrets")
}
