package edge

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// deadlineCap is the deadline a route's requests tell their service: a
// little less than the gateway's own for the route, so that the service,
// and its own calls onward, give up and answer before the gateway stops
// waiting. A service waiting on a hung dependency then answers
// DeadlineExceeded, and is not taken for hung itself.
type deadlineCap struct {
	limit time.Duration
	// The header values of limit, built once: full slices, so that an
	// append to a request's header copies rather than writes into them.
	grpc, connect []string
}

func newDeadlineCap(routeTimeout time.Duration) *deadlineCap {
	limit := max(routeTimeout-min(routeTimeout/10, time.Second), time.Millisecond)
	ms := strconv.FormatInt(limit.Milliseconds(), 10)
	return &deadlineCap{limit: limit, grpc: []string{ms + "m"}[:1:1], connect: []string{ms}[:1:1]}
}

// apply sets the timeout a request tells its service (grpc-timeout for
// gRPC and gRPC-Web, connect-timeout-ms for Connect) to the cap, unless
// the client's own is shorter.
func (c *deadlineCap) apply(h http.Header) {
	if strings.HasPrefix(h.Get("Content-Type"), "application/grpc") {
		if d, ok := parseGRPCTimeout(h.Get("Grpc-Timeout")); !ok || d > c.limit {
			h["Grpc-Timeout"] = c.grpc
		}
		return
	}
	if v := h.Get("Connect-Timeout-Ms"); v != "" {
		if ms, err := strconv.ParseInt(v, 10, 64); err == nil && ms > 0 && time.Duration(ms)*time.Millisecond <= c.limit {
			return
		}
	}
	h["Connect-Timeout-Ms"] = c.connect
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
