package logging

import (
	"context"
	"log/slog"
)

// The keys of the request-scoped attributes this package sets.
const (
	// RequestIDKey holds the request's ID, as set by [WithRequestID].
	RequestIDKey = "request_id"
	// ProcedureKey holds the RPC procedure being served, such as
	// "/portcullis.identity.v1.IdentityService/GetUser".
	ProcedureKey = "procedure"
	// PrincipalKey holds a group with the kind and id of the caller, as set
	// by [WithPrincipal].
	PrincipalKey = "principal"
	// TraceIDKey holds the W3C trace ID of the request, the same on every
	// hop of it.
	TraceIDKey = "trace_id"
	// ClientIPKey holds the IP address of the client that made the
	// request, as the gateway saw it.
	ClientIPKey = "client_ip"
)

// attrsKey is the context key of the request-scoped attributes.
type attrsKey struct{}

// contextAttrs returns the attributes stored in ctx. The caller must not
// modify the slice.
func contextAttrs(ctx context.Context) []slog.Attr {
	if ctx == nil {
		return nil
	}
	attrs, _ := ctx.Value(attrsKey{}).([]slog.Attr)
	return attrs
}

// WithAttrs returns a copy of ctx carrying attrs, which every record logged
// with the returned context through a logger from [New] includes. An
// attribute replaces one with the same key that ctx already carries, so a
// value set twice is logged once.
func WithAttrs(ctx context.Context, attrs ...slog.Attr) context.Context {
	if len(attrs) == 0 {
		return ctx
	}
	old := contextAttrs(ctx)
	merged := make([]slog.Attr, 0, len(old)+len(attrs))
	for _, a := range old {
		if !hasKey(attrs, a.Key) {
			merged = append(merged, a)
		}
	}
	for i, a := range attrs {
		if !hasKey(attrs[i+1:], a.Key) {
			merged = append(merged, a)
		}
	}
	return context.WithValue(ctx, attrsKey{}, merged)
}

func hasKey(attrs []slog.Attr, key string) bool {
	for _, a := range attrs {
		if a.Key == key {
			return true
		}
	}
	return false
}

// stringAttr returns the string ctx carries under key, or "".
func stringAttr(ctx context.Context, key string) string {
	v, _ := lookup(ctx, key)
	if v.Kind() != slog.KindString {
		return ""
	}
	return v.String()
}

func lookup(ctx context.Context, key string) (slog.Value, bool) {
	for _, a := range contextAttrs(ctx) {
		if a.Key == key {
			return a.Value, true
		}
	}
	return slog.Value{}, false
}

// WithRequestID returns a copy of ctx whose log lines carry the request ID
// under [RequestIDKey].
func WithRequestID(ctx context.Context, id string) context.Context {
	return WithAttrs(ctx, slog.String(RequestIDKey, id))
}

// RequestID returns the request ID set by [WithRequestID], or "".
func RequestID(ctx context.Context) string { return stringAttr(ctx, RequestIDKey) }

// ClientIP returns the client address the context carries under
// [ClientIPKey], or "".
func ClientIP(ctx context.Context) string { return stringAttr(ctx, ClientIPKey) }

// WithProcedure returns a copy of ctx whose log lines carry the procedure
// being served under [ProcedureKey].
func WithProcedure(ctx context.Context, procedure string) context.Context {
	return WithAttrs(ctx, slog.String(ProcedureKey, procedure))
}

// Procedure returns the procedure set by [WithProcedure], or "".
func Procedure(ctx context.Context) string { return stringAttr(ctx, ProcedureKey) }

// WithPrincipal returns a copy of ctx whose log lines carry the caller
// under [PrincipalKey], as a group {"kind": kind, "id": id}. The kind says
// what the id names, such as "user" or "service"; the kernel attaches no
// meaning to either.
func WithPrincipal(ctx context.Context, kind, id string) context.Context {
	return WithAttrs(ctx, slog.Group(PrincipalKey, slog.String("kind", kind), slog.String("id", id)))
}

// Principal returns the kind and id set by [WithPrincipal], or empty
// strings.
func Principal(ctx context.Context) (kind, id string) {
	v, _ := lookup(ctx, PrincipalKey)
	if v.Kind() != slog.KindGroup {
		return "", ""
	}
	for _, a := range v.Group() {
		switch a.Key {
		case "kind":
			kind = a.Value.String()
		case "id":
			id = a.Value.String()
		}
	}
	return kind, id
}
