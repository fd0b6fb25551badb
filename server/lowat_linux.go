package server

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// setRcvLowat sets SO_RCVLOWAT of the socket; lowering it makes the kernel
// signal readability at once if enough is queued (tcp_set_rcvlowat).
func setRcvLowat(rc syscall.RawConn, v int) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVLOWAT, v)
	}); err != nil {
		return err
	}
	return serr
}
