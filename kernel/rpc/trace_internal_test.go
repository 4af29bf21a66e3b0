package rpc

import (
	"bytes"
	"net/http"
	"net/http/httptest"
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
