package h2proxy

import (
	"syscall"
	"unsafe"
)

// peerOpen reports whether the peer of a TCP connection has not closed it,
// as far as the kernel knows: a FIN it received puts the connection out of
// ESTABLISHED before the reading goroutine gets to the end of the stream.
// Only the first byte of struct tcp_info, the state, is read.
func peerOpen(raw syscall.RawConn) bool {
	if raw == nil {
		return true
	}
	open := true
	_ = raw.Control(func(fd uintptr) {
		var info [8]byte
		size := uint32(len(info))
		_, _, errno := syscall.RawSyscall6(syscall.SYS_GETSOCKOPT, fd, syscall.IPPROTO_TCP, syscall.TCP_INFO,
			uintptr(unsafe.Pointer(&info[0])), uintptr(unsafe.Pointer(&size)), 0)
		open = errno != 0 || size < 1 || info[0] == tcpEstablished
	})
	return open
}

// tcpEstablished is TCP_ESTABLISHED of include/net/tcp_states.h.
const tcpEstablished = 1
