package edge

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"portcullis.dev/kernel/rpc"
)

// Headers that a client must not be able to set, because the services (or
// anything behind the gateway) would believe them. The X-Forwarded-* family
// and Forwarded are removed by httputil.ReverseProxy's Rewrite mode and set
// again by the gateway.
const trustedPrefix = "X-Portcullis-" // rpc.ServiceTokenHeader and any future one

// stripTrusted removes every header the services trust from the gateway or
// from each other.
func stripTrusted(h http.Header) {
	for k := range h {
		if trusted(k) {
			delete(h, k)
		}
	}
}

// trusted reports whether a field, by its name in any case, is one the
// services trust from the gateway or from each other.
func trusted(name string) bool {
	return len(name) >= len(trustedPrefix) && strings.EqualFold(name[:len(trustedPrefix)], trustedPrefix) ||
		strings.EqualFold(name, "X-Real-Ip")
}

// randomHex returns n random bytes in hex (n ≤ 16).
func randomHex(n int) string {
	var b [16]byte
	_, _ = rand.Read(b[:n])
	var out [32]byte
	hex.Encode(out[:], b[:n])
	return string(out[:2*n])
}

// propagateTrace makes the request carry a W3C traceparent
// (https://www.w3.org/TR/trace-context/) whose parent is the gateway: a
// valid incoming one keeps its trace ID and flags and gets a new parent ID;
// otherwise a new trace starts and any tracestate, which belonged to the
// invalid parent, is dropped. It returns the trace ID.
func propagateTrace(h http.Header) string {
	traceID, flags, ok := rpc.ParseTraceparent(h.Get(rpc.TraceparentHeader))
	if !ok {
		traceID, flags = randomHex(16), "00"
		h.Del(rpc.TracestateHeader)
	}
	h.Set(rpc.TraceparentHeader, rpc.Traceparent(traceID, flags))
	return traceID
}

// requestID returns the request's ID, and whether it is the one the request
// came with: that is kept only from a peer in from (proxies that set it
// themselves: gateway.proxy_request_ids), only when sane, and only when
// there is one. Anyone else's is replaced, as Envoy does at the edge: the
// services log it and the audit log records it, and a client choosing it
// could slip its events in among another request's (an administrator's,
// say) when an auditor asks for that request's events. The client gets
// the ID back in the response.
func requestID(r *http.Request, from []netip.Prefix) (string, bool) {
	if len(from) > 0 {
		if ids := r.Header.Values(rpc.RequestIDHeader); len(ids) == 1 && rpc.ValidRequestID(ids[0]) && isTrusted(remoteIP(r.RemoteAddr), from) {
			return ids[0], true
		}
	}
	return randomHex(16), false
}

// clientAddr returns the client's IP address and the X-Forwarded-For value
// to send upstream. The TCP peer is the client unless it is a trusted proxy;
// then X-Forwarded-For is read from the right, and the first address that
// is not a trusted proxy is the client. A client cannot make itself look
// like someone else by sending X-Forwarded-For directly.
func clientAddr(r *http.Request, trusted []netip.Prefix) (netip.Addr, string) {
	peer := remoteIP(r.RemoteAddr)
	if !isTrusted(peer, trusted) {
		return peer, peer.String()
	}
	chain := strings.Join(r.Header.Values("X-Forwarded-For"), ",")
	client := peer
	parts := strings.Split(chain, ",")
	for i := len(parts) - 1; i >= 0; i-- {
		a, ok := forwardedAddr(parts[i])
		if !ok {
			break
		}
		client = a
		if !isTrusted(client, trusted) {
			break
		}
	}
	if strings.TrimSpace(chain) == "" {
		return client, peer.String()
	}
	return client, chain + ", " + peer.String()
}

// forwardedAddr parses one entry of X-Forwarded-For: an address, or one
// with a port as some load balancers write it (Azure Application Gateway's
// 203.0.113.7:53122, [2001:db8::1]:443). Refused, the entry would end the
// walk at the balancer, and every client behind it would share one bucket.
func forwardedAddr(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	a := remoteIP(s) // an address, with its port or without
	if !a.IsValid() {
		a = remoteIP(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")) // [2001:db8::1]
	}
	return a, a.IsValid()
}

func remoteIP(remote string) netip.Addr {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// limitKey is the rate-limit key of a client address: an IPv6 client gets
// its /64, the smallest block one subscriber usually holds, or rotating
// through its addresses would evade the limit.
func limitKey(a netip.Addr) string {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// clientString is the client's address for the access log: the one behind
// trusted proxies once the request got that far, else the peer's.
func clientString(client netip.Addr, remote string) string {
	if !client.IsValid() {
		client = remoteIP(remote)
	}
	if !client.IsValid() {
		return remote
	}
	return client.String()
}
