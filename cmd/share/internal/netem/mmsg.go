package netem

import (
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsgs is a batch of messages for recvmmsg(2) or sendmmsg(2) on a packet
// socket: each with one buffer and a link-layer address (the interface).
type mmsgs struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	addrs []unix.RawSockaddrLinklayer
	bufs  [][]byte // receiving: a buffer per message
}

// newMmsgs makes a batch; bufSize > 0 gives each message a buffer of that
// size to receive into.
func newMmsgs(bufSize int) mmsgs {
	m := mmsgs{hdrs: make([]unix.Mmsghdr, batch), iovs: make([]unix.Iovec, batch), addrs: make([]unix.RawSockaddrLinklayer, batch)}
	for i := range batch {
		h := &m.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&m.addrs[i]))
		h.Namelen = unix.SizeofSockaddrLinklayer
		h.Iov = &m.iovs[i]
		h.Iovlen = 1
		if bufSize > 0 {
			b := make([]byte, bufSize)
			m.bufs = append(m.bufs, b)
			m.iovs[i].Base = &b[0]
			m.iovs[i].SetLen(bufSize)
		}
	}
	return m
}

// recv reads up to a batch of frames from fd without blocking, and returns
// how many.
func (m *mmsgs) recv(fd int) (int, error) {
	for i := range m.hdrs {
		m.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrLinklayer
	}
	// Raw: the call does not block, and the runtime's bookkeeping around a
	// system call would cost more than the call.
	n, _, errno := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&m.hdrs[0])), uintptr(len(m.hdrs)), unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// received returns message i of the last recv: its bytes (a truncated frame
// cut to the buffer) and the interface it came in on.
func (m *mmsgs) received(i int) (data []byte, ifindex int32) {
	n := min(int(m.hdrs[i].Len), len(m.bufs[i]))
	return m.bufs[i][:n], m.addrs[i].Ifindex
}

// set makes message i send data out of interface ifindex.
func (m *mmsgs) set(i int, data []byte, ifindex int32) {
	m.addrs[i] = unix.RawSockaddrLinklayer{Family: unix.AF_PACKET, Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}
	m.iovs[i].Base = &data[0]
	m.iovs[i].SetLen(len(data))
}

// clear drops the references to the first n messages' data.
func (m *mmsgs) clear(n int) {
	for i := range n {
		m.iovs[i] = unix.Iovec{}
	}
}

// send sends messages [from, to) on fd without blocking and returns how many
// went; an error is that of message from (none went).
func (m *mmsgs) send(fd, from, to int) (int, error) {
	n, _, errno := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&m.hdrs[from])), uintptr(to-from), unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	if n == 0 {
		return 0, unix.EAGAIN
	}
	return int(n), nil
}

// epollWait waits for events on epfd for up to timeout (< 0: forever) with
// the resolution of a nanosecond (epoll_pwait2(2), Linux 5.11), or of a
// millisecond, rounded up, where the kernel is older.
func epollWait(epfd int, events []unix.EpollEvent, timeout time.Duration) (int, error) {
	var ts *unix.Timespec
	if timeout >= 0 {
		t := unix.NsecToTimespec(int64(timeout))
		ts = &t
	}
	n, _, errno := unix.Syscall6(unix.SYS_EPOLL_PWAIT2, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), uintptr(unsafe.Pointer(ts)), 0, 0)
	if errno == unix.ENOSYS {
		ms := -1
		if timeout >= 0 {
			ms = int((timeout + time.Millisecond - 1) / time.Millisecond)
		}
		return unix.EpollWait(epfd, events, ms)
	}
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
