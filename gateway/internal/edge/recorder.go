package edge

import (
	"net/http"
)

// recorder remembers the status of a response for the access log and the
// metrics. It passes Flush through, and Unwrap lets http.ResponseController
// reach the connection's own deadlines and flushing.
type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && code >= http.StatusOK { // 1xx is not the answer
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(p)
}

func (r *recorder) Flush() {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// code is the outcome for logs and metrics: the gRPC status of a gRPC or
// gRPC-Web response (in its headers for a trailers-only answer, else in
// its trailers), or the HTTP status.
func (r *recorder) code() string {
	h := r.ResponseWriter.Header()
	if v := h.Get("Grpc-Status"); v != "" {
		return "grpc-" + v
	}
	if v := h[http.TrailerPrefix+"Grpc-Status"]; len(v) > 0 {
		return "grpc-" + v[0]
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
