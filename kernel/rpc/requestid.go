package rpc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"net/netip"

	"portcullis.dev/kernel/database"
	"portcullis.dev/kernel/logging"
)

// RequestIDHeader carries a request's ID between clients, the gateway and
// services, and back in every response.
const RequestIDHeader = "X-Request-Id"

// UserAgentHeader carries the original client's User-Agent from a service
// to the services it calls on the request's behalf, whose own User-Agent
// is their client library's. Like every X-Portcullis- header, the gateway
// removes it from what clients send.
const UserAgentHeader = "X-Portcullis-User-Agent"

// maxUserAgent is how much of a User-Agent a request keeps: what an audit
// event takes.
const maxUserAgent = 512

// ClientIPHeader carries the IP address of a request's original client
// from the gateway, which decides it (behind its trusted proxies) and
// removes the header from what clients send, to the services, and from
// each service to those it calls on the request's behalf.
const ClientIPHeader = "X-Real-Ip"

// withRequestID accepts the caller's X-Request-Id when it is sane and makes
// one up otherwise, returns it in the response, and puts it in the context
// so every log line of the request carries it; the same for the trace ID
// of a valid traceparent and the original client's address, which the
// calls the request makes carry on.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(RequestIDHeader)
		if !ValidRequestID(id) {
			id = newRequestID()
			r.Header.Set(RequestIDHeader, id)
		}
		w.Header().Set(RequestIDHeader, id)
		attrs := make([]slog.Attr, 1, 2)
		attrs[0] = slog.String(logging.RequestIDKey, id)
		ua := r.Header.Get(UserAgentHeader)
		if ip, err := netip.ParseAddr(r.Header.Get(ClientIPHeader)); err == nil && ip.Zone() == "" {
			attrs = append(attrs, slog.String(logging.ClientIPKey, ip.String()))
			if ua == "" {
				// From the gateway, which passes the client's own on.
				ua = r.Header.Get("User-Agent")
			}
		}
		ctx := withTrace(logging.WithAttrs(r.Context(), attrs...), r.Header)
		if ua != "" {
			// Kept as PostgreSQL and the Audit service can store it: a
			// client's bytes are recorded, not refused.
			ctx = context.WithValue(ctx, userAgentKey{}, database.TruncateText(database.CleanText(ua), maxUserAgent))
		}
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

type userAgentKey struct{}

// ClientUserAgent returns the User-Agent of the original client of the call
// ctx belongs to, as the gateway passed it on, or "" for a call that did not
// come through the gateway.
func ClientUserAgent(ctx context.Context) string {
	ua, _ := ctx.Value(userAgentKey{}).(string)
	return ua
}

// ClientIP returns the IP address of the original client of the call ctx
// belongs to, as the gateway told it, or "" for a call that did not come
// through the gateway (the peer is then the client: see connect's
// Peer).
func ClientIP(ctx context.Context) string { return logging.ClientIP(ctx) }
