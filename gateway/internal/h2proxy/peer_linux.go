package h2proxy

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// peerOpen reports whether the peer of a TCP connection has not closed it,
// as far as the kernel knows: a FIN it received puts the connection out of
// ESTABLISHED before the reading goroutine gets to the end of the stream.
func peerOpen(raw syscall.RawConn) bool {
	if raw == nil {
		return true
	}
	open := true
	_ = raw.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		open = err != nil || info.State == unix.BPF_TCP_ESTABLISHED
	})
	return open
}
