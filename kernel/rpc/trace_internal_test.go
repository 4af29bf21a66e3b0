package rpc

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"portcullis.dev/kernel/logging"
)

// TestTraceGoesOnToTheCallsARequestMakes: a request's trace ID is on its
// log lines and goes on, with this service as the new parent, to the
// calls the request makes; a request without a valid traceparent starts
// none.
func TestTraceGoesOnToTheCallsARequestMakes(t *testing.T) {
	const in = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	var logs bytes.Buffer
	logger := logging.New(logging.Config{Format: logging.FormatJSON}, logging.WithOutput(&logs))
	var onward http.Header
	h := withRequestID(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		onward = http.Header{}
		(&clientInterceptor{f: &ClientFactory{}}).decorate(r.Context(), connect.Spec{}, onward)
		logger.InfoContext(r.Context(), "handled")
	}))

	req := httptest.NewRequest(http.MethodPost, "/x", nil)
	req.Header.Set(TraceparentHeader, in)
	req.Header.Set(TracestateHeader, "vendor=1")
	h.ServeHTTP(httptest.NewRecorder(), req)
	id, flags, ok := ParseTraceparent(onward.Get(TraceparentHeader))
	require.True(t, ok, "no traceparent on the call onward: %v", onward)
	assert.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", id)
	assert.Equal(t, "01", flags)
	assert.NotEqual(t, in, onward.Get(TraceparentHeader), "this service is the new parent")
	assert.Equal(t, "vendor=1", onward.Get(TracestateHeader))
	assert.NotEmpty(t, onward.Get(RequestIDHeader))
	assert.Contains(t, logs.String(), `"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"`, "the log line has no trace ID")

	req = httptest.NewRequest(http.MethodPost, "/x", nil)
	req.Header.Set(TraceparentHeader, "garbage")
	h.ServeHTTP(httptest.NewRecorder(), req)
	assert.Empty(t, onward.Get(TraceparentHeader))
}

// TestClientIPGoesOnToTheCallsARequestMakes: the client address the gateway
// names is on the request's log lines, in its context and on the calls it
// makes; a value that is no IP address is not believed.
func TestClientIPGoesOnToTheCallsARequestMakes(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"IPv4", "203.0.113.7", "203.0.113.7"},
		{"IPv6", "2001:db8::1", "2001:db8::1"},
		{"not an address", "203.0.113.7, 10.0.0.1", ""},
		{"log injection", "1.2.3.4\" forged=\"x", ""},
		{"an IPv6 zone, which may hold any text", "::1%any text\" forged=\"x", ""},
		{"none", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			logger := logging.New(logging.Config{Format: logging.FormatJSON}, logging.WithOutput(&logs))
			var seen string
			onward := http.Header{}
			h := withRequestID(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
				seen = ClientIP(r.Context())
				(&clientInterceptor{f: &ClientFactory{}}).decorate(r.Context(), connect.Spec{}, onward)
				logger.InfoContext(r.Context(), "handled")
			}))
			req := httptest.NewRequest(http.MethodPost, "/x", nil)
			req.Header.Set(ClientIPHeader, tt.in)
			h.ServeHTTP(httptest.NewRecorder(), req)
			assert.Equal(t, tt.want, seen)
			assert.Equal(t, tt.want, onward.Get(ClientIPHeader))
			if tt.want != "" {
				assert.Contains(t, logs.String(), `"client_ip":"`+tt.want+`"`)
			} else {
				assert.NotContains(t, logs.String(), "client_ip")
			}
		})
	}
}

// TestClientUserAgentGoesOnToTheCallsARequestMakes: the User-Agent of a
// client that came through the gateway (which names the client's address)
// is the request's, and goes on to the calls it makes; a direct caller's
// is not taken for a client's.
func TestClientUserAgentGoesOnToTheCallsARequestMakes(t *testing.T) {
	tests := []struct {
		name    string
		headers map[string]string
		want    string
	}{
		{"through the gateway", map[string]string{ClientIPHeader: "203.0.113.7", "User-Agent": "curl/8.5"}, "curl/8.5"},
		{"from a service, on a client's behalf", map[string]string{ClientIPHeader: "203.0.113.7", "User-Agent": "connect-go/1.21", UserAgentHeader: "curl/8.5"}, "curl/8.5"},
		{"a direct call", map[string]string{"User-Agent": "grpcurl/1.9"}, ""},
		{"bytes PostgreSQL cannot store", map[string]string{ClientIPHeader: "203.0.113.7", "User-Agent": "bad\xff\x00agent"}, "bad\uFFFDagent"},
		{"longer than an audit event takes", map[string]string{ClientIPHeader: "203.0.113.7", "User-Agent": strings.Repeat("a", 600)}, strings.Repeat("a", 512)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var seen string
			onward := http.Header{}
			h := withRequestID(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
				seen = ClientUserAgent(r.Context())
				(&clientInterceptor{f: &ClientFactory{}}).decorate(r.Context(), connect.Spec{}, onward)
			}))
			req := httptest.NewRequest(http.MethodPost, "/x", nil)
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			h.ServeHTTP(httptest.NewRecorder(), req)
			assert.Equal(t, tt.want, seen)
			assert.Equal(t, tt.want, onward.Get(UserAgentHeader))
		})
	}
}
