//go:build unix && !linux

package h2proxy

import "syscall"

func sysRead(fd uintptr, p []byte) (int, syscall.Errno)  { return rw(syscall.Read, fd, p) }
func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) { return rw(syscall.Write, fd, p) }

// rw is call of p on fd, tried again when a signal interrupted it, with
// sysRead's results: the count, or 0 and the errno.
func rw(call func(int, []byte) (int, error), fd uintptr, p []byte) (int, syscall.Errno) {
	for {
		n, err := call(int(fd), p)
		if err != syscall.EINTR {
			if err != nil {
				return 0, errnoOf(err)
			}
			return n, 0
		}
	}
}

func errnoOf(err error) syscall.Errno {
	if errno, ok := err.(syscall.Errno); ok {
		return errno
	}
	return syscall.EIO
}
