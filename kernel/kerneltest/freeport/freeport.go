// Package freeport picks loopback ports for processes a test or the local
// launcher starts: Consul agents, gateways, services. It does not import
// testing, so the launcher can use it too.
package freeport

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// first is the lowest port picked: above the ports well-known services
// commonly use on a developer's machine.
const first = 20000

// Pick returns n distinct loopback ports that were free a moment ago for
// both TCP and UDP (Consul's Serf ports use both), picked at random below
// the kernel's ephemeral range.
//
// A port the kernel hands out for ":0" is free again once it is closed,
// and the kernel may hand it out once more, to another test's listener or
// to an outgoing connection, before the process meant to take it starts:
// gateways and Consul agents lost their ports so. Below the range only
// another such pick competes, and the pick is random.
func Pick(n int) ([]int, error) {
	lo, hi := pickRange()
	var (
		ports   []int
		closers []io.Closer
	)
	defer func() {
		for _, c := range closers {
			_ = c.Close()
		}
	}()
	for attempt := 0; len(ports) < n && attempt < 100*n; attempt++ {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(lo+rand.IntN(hi-lo)))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue // taken, or already held for this pick
		}
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			_ = ln.Close()
			continue
		}
		closers = append(closers, ln, pc)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	if len(ports) < n {
		return nil, fmt.Errorf("find %d free ports below the ephemeral range: only %d", n, len(ports))
	}
	return ports, nil
}

// Addr returns a loopback host:port picked as by [Pick].
func Addr() (string, error) {
	ports, err := Pick(1)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])), nil
}

// pickRange returns the ports [lo, hi) to pick from: from first up to the
// kernel's ephemeral range (Linux's ip_local_port_range, by default from
// 32768), or, on a machine whose range starts lower, above it.
func pickRange() (lo, hi int) {
	low, high := 32768, 60999 // Linux's default range
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			l, errL := strconv.Atoi(f[0])
			h, errH := strconv.Atoi(f[1])
			if errL == nil && errH == nil && l <= h {
				low, high = l, h
			}
		}
	}
	switch {
	case low-first >= 1000:
		return first, low
	case 65535-high >= 1000:
		return high + 1, 65536
	}
	return first, max(low, first+1) // no room outside the range: pick as before
}
