package edge

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestTrusted(t *testing.T) {
	for name, want := range map[string]bool{
		"X-Portcullis-Service-Token": true,
		"x-portcullis-service-token": true, // HTTP/2 field names, trailers included
		"X-PORTCULLIS-ANYTHING":      true,
		"X-Real-Ip":                  true,
		"x-real-ip":                  true,
		"X-Portcullis":               false,
		"Authorization":              false,
		"X-Request-Id":               false,
	} {
		assert.Equal(t, want, trusted(name), name)
	}
}
