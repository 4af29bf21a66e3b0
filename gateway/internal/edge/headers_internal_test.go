package edge

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"portcullis.dev/gateway/internal/ratelimit"
	"portcullis.dev/kernel/rpc"
)

func TestTrusted(t *testing.T) {
	for name, want := range map[string]bool{
		"X-Portcullis-Service-Token": true,
		"x-portcullis-service-token": true, // HTTP/2 field names, trailers included
		"X-PORTCULLIS-ANYTHING":      true,
		"X-Real-Ip":                  true,
		"x-real-ip":                  true,
		"X-Portcullis":               false,
		"Authorization":              false,
		"X-Request-Id":               false,
	} {
		assert.Equal(t, want, trusted(name), name)
	}
}

func TestClientAddrBehindTrustedProxies(t *testing.T) {
	trustedProxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	tests := []struct {
		name, forwardedFor, client string
	}{
		{"no chain", "", "10.0.0.1"},
		{"an address", "203.0.113.7", "203.0.113.7"},
		{"through a trusted hop", "203.0.113.7, 10.0.0.2", "203.0.113.7"},
		{"a forged hop before the client's", "198.51.100.1, 203.0.113.7", "203.0.113.7"},
		{"with a port (Azure)", "203.0.113.7:53122", "203.0.113.7"},
		{"IPv6 with a port", "[2001:db8::1]:443", "2001:db8::1"},
		{"IPv6 in brackets", "[2001:db8::1]", "2001:db8::1"},
		{"IPv4-mapped", "::ffff:203.0.113.7", "203.0.113.7"},
		{"unparseable ends the walk at the last trusted hop", "unknown", "10.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: "10.0.0.1:443", Header: http.Header{"X-Forwarded-For": {tt.forwardedFor}}}
			client, forwarded := clientAddr(r, trustedProxies)
			assert.Equal(t, netip.MustParseAddr(tt.client), client)
			h := http.Header{}
			setForwarded(h, &state{client: client, forwarded: forwarded}, "gateway.example.com", false)
			assert.Equal(t, tt.client, h.Get(rpc.ClientIPHeader), "the services are told the client")
		})
	}
}

// TestRequestIDOnlyFromTrustedProxies: a client does not choose the ID its
// request is logged and audited under; a load balancer in front that sets
// it may, when gateway.proxy_request_ids names it (from).
func TestRequestIDOnlyFromTrustedProxies(t *testing.T) {
	trustedProxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	tests := []struct {
		name, peer, id string
		trusted        []netip.Prefix
		kept           bool
	}{
		{"from a client", "203.0.113.7:5000", "req-123", trustedProxies, false},
		{"from a client, no proxies configured", "10.0.0.1:5000", "req-123", nil, false},
		{"from a trusted proxy", "10.0.0.1:5000", "req-123", trustedProxies, true},
		{"insane, from a trusted proxy", "10.0.0.1:5000", "evil\"id", trustedProxies, false},
		{"none, from a trusted proxy", "10.0.0.1:5000", "", trustedProxies, false},
		{"two, from a trusted proxy that added its own", "10.0.0.1:5000", "client-id,proxy-id", trustedProxies, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: tt.peer, Header: http.Header{}}
			for id := range strings.SplitSeq(tt.id, ",") {
				if id != "" {
					r.Header.Add(rpc.RequestIDHeader, id)
				}
			}
			id, kept := requestID(r, tt.trusted)
			assert.Equal(t, tt.kept, kept)
			if tt.kept {
				assert.Equal(t, tt.id, id)
			} else {
				assert.Len(t, id, 32)
			}
		})
	}
}

// FuzzClientHeaders: the fields the gateway reads from any client, the
// trace context and X-Forwarded-For, never crash it, a trace that comes in
// valid keeps its ID, and the client's address comes from the chain or is
// the peer's.
func FuzzClientHeaders(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "203.0.113.7, 10.0.0.2")
	f.Add("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", "2001:db8::1,::ffff:10.1.2.3")
	f.Add("00-00000000000000000000000000000000-00f067aa0ba902b7-01", "")
	f.Add("garbage", ",,, ,")
	f.Add("", "203.0.113.7:53122, [2001:db8::1]:443, [2001:db8::2]")
	trustedProxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	f.Fuzz(func(t *testing.T, parent, forwardedFor string) {
		h := http.Header{}
		h.Set(rpc.TraceparentHeader, parent)
		traceID, _, valid := rpc.ParseTraceparent(parent)
		got := propagateTrace(h)
		again, _, ok := rpc.ParseTraceparent(h.Get(rpc.TraceparentHeader))
		if !ok || again != got || (valid && got != traceID) {
			t.Fatalf("traceparent %q became %q (trace %q)", parent, h.Get(rpc.TraceparentHeader), got)
		}

		r := &http.Request{RemoteAddr: "10.0.0.1:443", Header: http.Header{"X-Forwarded-For": {forwardedFor}}}
		client, chain := clientAddr(r, trustedProxies)
		if !strings.HasSuffix(chain, "10.0.0.1") {
			t.Fatalf("X-Forwarded-For %q does not end with the peer", chain)
		}
		inChain := false
		for part := range strings.SplitSeq(forwardedFor, ",") {
			a, ok := forwardedAddr(part)
			inChain = inChain || (ok && a == client)
		}
		if client != netip.MustParseAddr("10.0.0.1") && !inChain {
			t.Fatalf("client %v is neither the peer nor in %q", client, forwardedFor)
		}
	})
}

func TestPolicyWindow(t *testing.T) {
	for _, tt := range []struct {
		limit ratelimit.Limit
		want  int
	}{
		{ratelimit.Limit{Rate: 10, Burst: 20}, 2},
		{ratelimit.Limit{Rate: 0.2, Burst: 10}, 50},
		{ratelimit.Limit{Rate: 100, Burst: 20}, 1}, // 0.2s: a window of 0 would say none
		{ratelimit.Limit{Rate: 2, Burst: 3}, 2},    // 1.5s, up
	} {
		assert.Equal(t, tt.want, policyWindow(tt.limit), "%+v", tt.limit)
	}
}
