package rpc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"strings"

	"portcullis.dev/kernel/logging"
)

// The W3C Trace Context headers (https://www.w3.org/TR/trace-context/).
const (
	TraceparentHeader = "Traceparent"
	TracestateHeader  = "Tracestate"
)

// ParseTraceparent parses a traceparent of version 00, and the first four
// fields of a later version as the specification requires, and returns
// its trace ID and flags.
func ParseTraceparent(v string) (traceID, flags string, ok bool) {
	if len(v) < 55 || (len(v) > 55 && (v[:2] == "00" || v[55] != '-')) {
		return "", "", false
	}
	if v[2] != '-' || v[35] != '-' || v[52] != '-' || v[:2] == "ff" {
		return "", "", false
	}
	version, traceID, parent, flags := v[:2], v[3:35], v[36:52], v[53:55]
	if !lowerHex(version) || !lowerHex(traceID) || !lowerHex(parent) || !lowerHex(flags) ||
		allZero(traceID) || allZero(parent) {
		return "", "", false
	}
	return traceID, flags, true
}

// Traceparent returns the traceparent a hop sends on: traceID and flags,
// with a parent ID of its own.
func Traceparent(traceID, flags string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "00-" + traceID + "-" + hex.EncodeToString(b[:]) + "-" + flags
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func allZero(s string) bool { return strings.Trim(s, "0") == "" }

// trace is the trace a call belongs to, carried in its context to the
// calls it makes.
type trace struct{ id, flags, state string }

type traceKey struct{}

// withTrace returns ctx carrying the trace of h's traceparent, if it has a
// valid one, with its trace ID on every log line.
func withTrace(ctx context.Context, h http.Header) context.Context {
	id, flags, ok := ParseTraceparent(h.Get(TraceparentHeader))
	if !ok {
		return ctx
	}
	ctx = context.WithValue(ctx, traceKey{}, trace{id: id, flags: flags, state: h.Get(TracestateHeader)})
	return logging.WithAttrs(ctx, slog.String(logging.TraceIDKey, id))
}

// setTrace sets the traceparent (and tracestate) of a call made within
// ctx: its trace goes on, this service the new parent.
func setTrace(ctx context.Context, h http.Header) {
	t, ok := ctx.Value(traceKey{}).(trace)
	if !ok {
		return
	}
	h.Set(TraceparentHeader, Traceparent(t.id, t.flags))
	if t.state != "" {
		h.Set(TracestateHeader, t.state)
	}
}
