package rpc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"

	"portcullis.dev/kernel/logging"
)

// RequestIDHeader carries a request's ID between clients, the gateway and
// services, and back in every response.
const RequestIDHeader = "X-Request-Id"

// withRequestID accepts the caller's X-Request-Id when it is sane and makes
// one up otherwise, returns it in the response, and puts it in the context
// so every log line of the request carries it; the same for the trace ID
// of a valid traceparent, which the calls the request makes carry on.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(RequestIDHeader)
		if !ValidRequestID(id) {
			id = newRequestID()
			r.Header.Set(RequestIDHeader, id)
		}
		w.Header().Set(RequestIDHeader, id)
		ctx := withTrace(logging.WithRequestID(r.Context(), id), r.Header)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// ValidRequestID reports whether an ID from outside may be kept: at most
// 128 visible ASCII characters without quotes or backslashes, so it cannot
// forge log lines. The gateway applies the same rule.
func ValidRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c <= ' ' || c > '~' || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// RequestID returns the request ID of the call ctx belongs to, or "".
func RequestID(ctx context.Context) string { return logging.RequestID(ctx) }
