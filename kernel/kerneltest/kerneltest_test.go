package kerneltest_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"portcullis.dev/kernel/kerneltest"
)

func TestDatabaseURL(t *testing.T) {
	tests := []struct {
		name, env, want string
	}{
		{"default", "", kerneltest.DefaultDatabaseURL},
		{"from env", "postgres://u@db:5432/x", "postgres://u@db:5432/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("PORTCULLIS_TEST_DATABASE_URL", tt.env)
			assert.Equal(t, tt.want, kerneltest.DatabaseURL())
		})
	}
}

func TestInCI(t *testing.T) {
	for env, want := range map[string]bool{"true": true, "1": true, "": false, "false": false, "nonsense": false} {
		t.Setenv("CI", env)
		assert.Equal(t, want, kerneltest.InCI(), "CI=%q", env)
	}
}
