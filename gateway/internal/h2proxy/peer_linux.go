package h2proxy

import (
	"syscall"
	"unsafe"
)

// peerOpen reports whether the peer of the TCP connection has not closed
// it, as far as the kernel knows: a FIN it received puts the connection out
// of ESTABLISHED before the reading goroutine gets to the end of the
// stream. Only the first byte of struct tcp_info, the state, is read.
func (o *out) peerOpen() bool {
	if o.raw == nil {
		return true
	}
	// Its own lock, not o.mu, which every write on the connection takes:
	// the answer comes back in o.peerGone.
	o.probeMu.Lock()
	defer o.probeMu.Unlock()
	o.peerGone = false
	_ = o.raw.Control(o.probe)
	return !o.peerGone
}

// probeState is peerOpen's question to the kernel.
func (o *out) probeState(fd uintptr) {
	var info [8]byte
	size := uint32(len(info))
	_, _, errno := syscall.RawSyscall6(syscall.SYS_GETSOCKOPT, fd, syscall.IPPROTO_TCP, syscall.TCP_INFO,
		uintptr(unsafe.Pointer(&info[0])), uintptr(unsafe.Pointer(&size)), 0)
	o.peerGone = errno == 0 && size >= 1 && info[0] != tcpEstablished
}

// tcpEstablished is TCP_ESTABLISHED of include/net/tcp_states.h.
const tcpEstablished = 1
