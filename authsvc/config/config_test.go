package config_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"portcullis.dev/authsvc/config"
)

func TestRotationInterval(t *testing.T) {
	t.Parallel()
	for interval, ok := range map[time.Duration]bool{
		0:                true, // off
		2 * time.Hour:    true,
		720 * time.Hour:  true,
		10 * time.Minute: false, // the next key would be published five minutes ahead
		time.Hour:        false,
	} {
		a := config.Auth{RefreshIdleTTL: time.Hour, RefreshAbsoluteTTL: 2 * time.Hour, RotationInterval: interval}
		if ok {
			assert.NoError(t, a.Validate(), interval)
		} else {
			assert.ErrorContains(t, a.Validate(), "auth.rotation_interval", interval)
		}
	}
}

func TestAccessTTLWithinTheVerifiersMaxLifetime(t *testing.T) {
	t.Parallel()
	var c config.Config
	c.Auth.AccessTTL = 24 * time.Hour
	assert.NoError(t, c.Validate(), "the default max_lifetime")
	c.Tokens.MaxLifetime = time.Hour
	assert.ErrorContains(t, c.Validate(), "tokens.max_lifetime")
	c.Auth.AccessTTL = 15 * time.Minute
	assert.NoError(t, c.Validate())
}
