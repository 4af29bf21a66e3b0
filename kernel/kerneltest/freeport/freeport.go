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
	span := max(ephemeralLow()-first, 1)
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
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(first+rand.IntN(span)))
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

// ephemeralLow is the first port of the kernel's ephemeral range: Linux's
// ip_local_port_range, or its default elsewhere.
func ephemeralLow() int {
	const linuxDefault = 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return linuxDefault
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return linuxDefault
	}
	low, err := strconv.Atoi(fields[0])
	if err != nil || low <= first {
		return linuxDefault
	}
	return low
}
