package edge

import (
	"net/http"
	"slices"
	"time"

	"portcullis.dev/gateway/internal/envelope"
)

// recorder remembers the status of a response for the access log and the
// metrics. It passes Flush through, and Unwrap lets http.ResponseController
// reach the connection's own deadlines and flushing.
//
// With writeTimeout set, each write the client does not take within it
// ends the connection, as h2proxy does on HTTP/2: a client that stops
// reading cannot hold it for ever, and a long server stream that the
// client reads is not cut, as net/http's WriteTimeout, which bounds the
// whole response, would cut it.
//
// It also keeps the answer's fields across a service's 1xx (103 Early
// Hints): ReverseProxy sends a 1xx with the answer's header, then clears
// it, and the final answer would go without what the gateway set on it
// (X-Request-Id, RateLimit-*, CORS).
type recorder struct {
	http.ResponseWriter
	status       int
	writeTimeout time.Duration
	// kept is the header as the first 1xx went out, until the answer's.
	kept http.Header
	// body reads the outcome of a gRPC-Web or Connect stream, which is in
	// the body: their HTTP status says 200 whatever happened.
	body envelope.Reader
}

// bound gives the next write writeTimeout.
func (r *recorder) bound() {
	if r.writeTimeout > 0 {
		_ = http.NewResponseController(r.ResponseWriter).SetWriteDeadline(time.Now().Add(r.writeTimeout))
	}
}

func (r *recorder) WriteHeader(code int) {
	switch {
	case code < http.StatusOK: // 1xx is not the answer
		if r.kept == nil {
			r.kept = r.ResponseWriter.Header().Clone()
		}
	case r.status == 0:
		r.status = code
		r.body.Reset(r.ResponseWriter.Header().Get("Content-Type"))
		if r.kept != nil {
			// What the 1xx carried comes back too: Early Hints' Link,
			// which final answers repeat anyway. Vary is the one field the
			// gateway and the service both set (keepOwnHeaders keeps the
			// service's): its values add up.
			h := r.ResponseWriter.Header()
			for k, v := range r.kept {
				switch _, ok := h[k]; {
				case k == "Vary":
					for _, vary := range v {
						if !slices.Contains(h[k], vary) {
							h[k] = append(h[k], vary)
						}
					}
				case !ok && !hopByHop(k):
					h[k] = v
				}
			}
			r.kept = nil
		}
	}
	r.bound()
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	r.bound()
	n, err := r.ResponseWriter.Write(p)
	if r.body.Active() {
		r.body.Write(p[:n])
	}
	return n, err
}

func (r *recorder) Flush() {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	r.bound()
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// code is the outcome for logs and metrics: the gRPC status of a gRPC or
// gRPC-Web response (in its headers for a trailers-only answer, else in
// its trailers, or in its body for gRPC-Web); for a Connect stream, the
// HTTP status a unary call would have had for the error its body ends
// with; else the HTTP status.
func (r *recorder) code() string {
	h := r.ResponseWriter.Header()
	if c := envelope.GRPCLabel(h.Get("Grpc-Status")); c != "" {
		return c
	}
	if v := h[http.TrailerPrefix+"Grpc-Status"]; len(v) > 0 {
		if c := envelope.GRPCLabel(v[0]); c != "" {
			return c
		}
	}
	if c := r.body.Code(); c != "" {
		return c
	}
	return statusText(r.status)
}

func statusText(s int) string {
	switch s {
	case 0, http.StatusOK:
		return "200"
	case http.StatusNotFound:
		return "404"
	case http.StatusUnauthorized:
		return "401"
	case http.StatusTooManyRequests:
		return "429"
	case http.StatusServiceUnavailable:
		return "503"
	}
	b := [3]byte{byte('0' + s/100%10), byte('0' + s/10%10), byte('0' + s%10)}
	return string(b[:])
}

// hopByHop reports whether the field named k (canonical) belongs to one
// connection, not to the answer (RFC 9110, section 7.6.1).
func hopByHop(k string) bool {
	switch k {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "Transfer-Encoding", "Upgrade", "Te", "Trailer":
		return true
	}
	return false
}
