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
