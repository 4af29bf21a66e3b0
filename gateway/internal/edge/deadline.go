package edge

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// capTimeout sets the timeout a request tells its service (grpc-timeout
// for gRPC and gRPC-Web, connect-timeout-ms for Connect) to at most a
// little less than routeTimeout, the gateway's own deadline for it, and
// leaves a shorter one of the client's as it is. The service, and its own
// calls onward, then give up and answer before the gateway stops waiting:
// a service waiting on a hung dependency answers DeadlineExceeded, and is
// not taken for hung itself.
func capTimeout(h http.Header, routeTimeout time.Duration) {
	limit := max(routeTimeout-min(routeTimeout/10, time.Second), time.Millisecond)
	if strings.HasPrefix(h.Get("Content-Type"), "application/grpc") {
		if d, ok := parseGRPCTimeout(h.Get("Grpc-Timeout")); !ok || d > limit {
			h.Set("Grpc-Timeout", strconv.FormatInt(limit.Milliseconds(), 10)+"m")
		}
		return
	}
	if ms, err := strconv.ParseInt(h.Get("Connect-Timeout-Ms"), 10, 64); err != nil || ms <= 0 || time.Duration(ms)*time.Millisecond > limit {
		h.Set("Connect-Timeout-Ms", strconv.FormatInt(limit.Milliseconds(), 10))
	}
}

// parseGRPCTimeout reads a grpc-timeout value: at most 8 digits and a
// unit (gRPC over HTTP/2, "Timeout").
func parseGRPCTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	return time.Duration(n) * unit, true
}
