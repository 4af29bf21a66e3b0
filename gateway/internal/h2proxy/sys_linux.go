package h2proxy

import (
	"syscall"
	"unsafe"
)

// The proxy's sockets are non-blocking, so its reads and writes never
// wait in the kernel, and it makes them without telling the scheduler
// (RawSyscall). A call announced as a syscall lets the runtime's monitor
// hand the thread's P to another thread once it has run for 20 µs, as a
// write to loopback, which delivers the segment to the peer on the way,
// often does; the monitor then keeps waking every 20 µs, and on a
// gateway with one CPU every wake and handoff takes the CPU from the
// goroutines serving calls.
//
// sysRead and sysWrite return the count, 0 with the errno on failure.

func sysRead(fd uintptr, p []byte) (int, syscall.Errno)  { return rawRW(syscall.SYS_READ, fd, p) }
func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) { return rawRW(syscall.SYS_WRITE, fd, p) }

// rawRW is read(2) or write(2), trap, of p on fd, tried again when a
// signal interrupted it.
func rawRW(trap, fd uintptr, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	for {
		n, _, errno := syscall.RawSyscall(trap, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch errno {
		case 0:
			return int(n), 0
		case syscall.EINTR:
		default:
			return 0, errno
		}
	}
}
