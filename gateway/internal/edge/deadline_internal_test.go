package edge

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestDeadlineCap(t *testing.T) {
	tests := []struct {
		name                string
		contentType, header string
		value               string
		want                string
	}{
		{"connect without a timeout", "application/json", "Connect-Timeout-Ms", "", "14000"},
		{"connect, the client's longer", "application/proto", "Connect-Timeout-Ms", "60000", "14000"},
		{"connect, the client's shorter", "application/json", "Connect-Timeout-Ms", "500", "500"},
		{"connect, malformed", "application/json", "Connect-Timeout-Ms", "soon", "14000"},
		{"grpc without a timeout", "application/grpc", "Grpc-Timeout", "", "14000m"},
		{"grpc, the client's longer", "application/grpc+proto", "Grpc-Timeout", "1M", "14000m"},
		{"grpc, the client's shorter", "application/grpc", "Grpc-Timeout", "2S", "2S"},
		{"grpc-web, the client's shorter", "application/grpc-web+proto", "Grpc-Timeout", "100m", "100m"},
		{"grpc, malformed", "application/grpc", "Grpc-Timeout", "2X", "14000m"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{"Content-Type": {tt.contentType}}
			if tt.value != "" {
				h.Set(tt.header, tt.value)
			}
			newDeadlineCap(15 * time.Second).apply(h)
			assert.Equal(t, tt.want, h.Get(tt.header))
		})
	}
	h := http.Header{"Content-Type": {"application/json"}}
	newDeadlineCap(500 * time.Millisecond).apply(h)
	assert.Equal(t, "450", h.Get("Connect-Timeout-Ms"), "a tenth of a short route's timeout is left over")
}
