package netem

import (
	"container/heap"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// delaySwitch is the delay line used where the kernel has no sch_netem: an
// Ethernet switch in this process that joins the hub ends of the nodes'
// veths (instead of a bridge) and holds each frame for the sum of the
// sender's and the receiver's Delay (± Jitter) before sending it out of the
// receiver's port, dropping it with the links' Loss. Rates stay with the
// kernel: HTB on the node's eth0 shapes what it sends before the switch
// sees it, HTB on the hub end shapes what the switch sends to the node.
//
// Each port is an AF_PACKET socket bound to a hub end. Frames go to the
// port of their destination MAC (the nodes' addresses are known, nothing is
// learned) or, for broadcast, multicast and unknown destinations, to every
// other port. One engine does all of it: a goroutine locked to its own OS
// thread, at a raised priority (nice -10, per thread), waiting in
// epoll_wait(2) on the ports and on a timerfd armed for the next release
// time, so that the processes under test, or other load on the machine, do
// not delay the delay line itself.
type delaySwitch struct {
	mu    sync.RWMutex
	byFD  map[int32]*port
	byMAC map[[6]byte]*port
	ports []*port

	epfd, timer, wake int // epoll, timerfd, eventfd (close)
	closing           atomic.Bool
	done              chan struct{}

	// Engine state: only the engine goroutine touches it.
	queue frameHeap
	seq   uint64
	free  [][]byte
}

// port is one node's attachment to the switch.
type port struct {
	node  int
	fd    int
	link  atomic.Pointer[Link]
	drops atomic.Int64 // lost (Loss), over maxWaiting, or refused by the queue below
}

// frame is one Ethernet frame (with its virtio-net header) waiting for its
// release time.
type frame struct {
	at   time.Time
	seq  uint64
	dst  *port
	data []byte
}

type frameHeap []frame

func (h frameHeap) Len() int { return len(h) }
func (h frameHeap) Less(i, j int) bool {
	if h[i].at.Equal(h[j].at) {
		return h[i].seq < h[j].seq
	}
	return h[i].at.Before(h[j].at)
}
func (h frameHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *frameHeap) Push(x any)   { *h = append(*h, x.(frame)) }
func (h *frameHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = frame{}
	*h = old[:len(old)-1]
	return x
}

const (
	// maxWaiting bounds the frames the switch holds (at 1 Gbit/s, 80 ms
	// of delay is ~6,600 full frames per direction); beyond it frames are
	// dropped.
	maxWaiting = 1 << 18
	// vnetHdrLen is the size of struct virtio_net_hdr, before each frame.
	vnetHdrLen = 10
	// bufSize holds a header and a 1500-byte-MTU frame; larger ones (none,
	// with GSO off) get a buffer of their own.
	bufSize = 2048
	// engineNice is the engine thread's nice value.
	engineNice = -10
)

func newDelaySwitch() (*delaySwitch, error) {
	s := &delaySwitch{byFD: map[int32]*port{}, byMAC: map[[6]byte]*port{}, done: make(chan struct{}), epfd: -1, timer: -1, wake: -1}
	var err error
	if s.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("netem: epoll: %w", err)
	}
	if s.timer, err = unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC); err != nil {
		s.closeFDs()
		return nil, fmt.Errorf("netem: timerfd: %w", err)
	}
	if s.wake, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		s.closeFDs()
		return nil, fmt.Errorf("netem: eventfd: %w", err)
	}
	for _, fd := range []int{s.timer, s.wake} {
		if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			s.closeFDs()
			return nil, fmt.Errorf("netem: epoll: %w", err)
		}
	}
	go s.engine()
	return s, nil
}

func (s *delaySwitch) closeFDs() {
	for _, fd := range []int{s.epfd, s.timer, s.wake} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// attach opens a packet socket on the hub end ifindex (inside the hub's
// namespace: in) for node index whose eth0 has address mac.
func (s *delaySwitch) attach(in *Node, index, ifindex int, mac net.HardwareAddr, link Link) error {
	var fd int
	err := in.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		return err
	})
	if err != nil {
		return fmt.Errorf("packet socket: %w", err)
	}
	setup := func() error {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
			return err
		}
		// Frames of local TCP carry a partial checksum (the veth "offloads"
		// it): a virtio-net header before each frame says where it goes,
		// both ways, so the frame is sent on as it came.
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
			return err
		}
		// Room for bursts while the engine is busy, and for the queue
		// below (HTB's): a frame is charged to the socket until it leaves
		// that queue, and a full send buffer would drop before the queue.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 32<<20); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex})
	}
	if err := setup(); err != nil {
		unix.Close(fd)
		return fmt.Errorf("packet socket: %w", err)
	}
	p := &port{node: index, fd: fd}
	p.link.Store(&link)
	s.mu.Lock()
	s.byFD[int32(fd)] = p
	s.byMAC[[6]byte(mac)] = p
	s.ports = append(s.ports, p)
	s.mu.Unlock()
	if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	return nil
}

// setLink changes the delay, jitter and loss of node index's port.
func (s *delaySwitch) setLink(index int, l Link) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, p := range s.ports {
		if p.node == index {
			p.link.Store(&l)
		}
	}
}

// close stops the engine and closes the ports; idempotent.
func (s *delaySwitch) close() {
	if s.closing.Swap(true) {
		return
	}
	unix.Write(s.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	<-s.done
	s.mu.Lock()
	for _, p := range s.ports {
		unix.Close(p.fd)
	}
	s.ports = nil
	s.mu.Unlock()
	s.closeFDs()
}

// engine forwards frames until close: it reads every readable port, queues
// the frames, and sends those whose time has come.
func (s *delaySwitch) engine() {
	defer close(s.done)
	// The thread's priority is raised for good: keep the goroutine on it,
	// and let the thread end with it (no unlock).
	runtime.LockOSThread()
	unix.Setpriority(unix.PRIO_PROCESS, 0, engineNice) // this thread only (Linux); best effort
	events := make([]unix.EpollEvent, 128)
	buf := make([]byte, 1<<17) // a 64 KiB GSO frame, its headers and the virtio-net header
	for {
		s.armTimer()
		n, err := unix.EpollWait(s.epfd, events, -1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		for _, ev := range events[:max(n, 0)] {
			switch int(ev.Fd) {
			case s.wake:
				return
			case s.timer:
				var b [8]byte
				unix.Read(s.timer, b[:])
			default:
				s.mu.RLock()
				p := s.byFD[ev.Fd]
				s.mu.RUnlock()
				if p != nil {
					s.receive(p, buf)
				}
			}
		}
		s.sendDue()
	}
}

// receive reads the frames waiting on p (at most 256, so one busy port
// does not hold up the rest).
func (s *delaySwitch) receive(p *port, buf []byte) {
	for range 256 {
		n, _, err := unix.Recvfrom(p.fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			return // EAGAIN: drained; ENETDOWN and the like: the next event says
		}
		if n >= vnetHdrLen+14 {
			s.forward(p, buf[:n])
		}
	}
}

// forward queues a copy of data (a virtio-net header and a frame) for every
// port it goes to.
func (s *delaySwitch) forward(from *port, data []byte) {
	now := time.Now()
	src := from.link.Load()
	eth := data[vnetHdrLen:]
	s.mu.RLock()
	var one [1]*port
	dst := one[:0]
	if eth[0]&1 == 0 { // unicast
		if p := s.byMAC[[6]byte(eth[:6])]; p != nil {
			dst = append(dst, p)
		}
	}
	if len(dst) == 0 { // broadcast, multicast, unknown: flood
		for _, p := range s.ports {
			if p != from {
				dst = append(dst, p)
			}
		}
	}
	s.mu.RUnlock()
	for _, p := range dst {
		l := p.link.Load()
		if lost(src.Loss) || lost(l.Loss) || len(s.queue) >= maxWaiting {
			p.drops.Add(1)
			continue
		}
		d := src.Delay + l.Delay
		if j := src.Jitter + l.Jitter; j > 0 {
			d += time.Duration((rand.Float64()*2 - 1) * float64(j))
			d = max(d, 0)
		}
		s.seq++
		heap.Push(&s.queue, frame{at: now.Add(d), seq: s.seq, dst: p, data: append(s.buffer(len(data)), data...)})
	}
}

func (s *delaySwitch) buffer(n int) []byte {
	if n <= bufSize && len(s.free) > 0 {
		b := s.free[len(s.free)-1]
		s.free = s.free[:len(s.free)-1]
		return b[:0]
	}
	return make([]byte, 0, max(n, bufSize))
}

// sendDue sends every frame whose release time has come.
func (s *delaySwitch) sendDue() {
	now := time.Now()
	for len(s.queue) > 0 && !s.queue[0].at.After(now) {
		f := heap.Pop(&s.queue).(frame)
		// A full queue below (ENOBUFS, EAGAIN) loses the frame, as a
		// router's would.
		if err := unix.Send(f.dst.fd, f.data, unix.MSG_DONTWAIT); err != nil {
			f.dst.drops.Add(1)
		}
		if cap(f.data) == bufSize && len(s.free) < 4096 {
			s.free = append(s.free, f.data)
		}
	}
}

// armTimer arms the timerfd for the next release time, or disarms it.
func (s *delaySwitch) armTimer() {
	var spec unix.ItimerSpec
	if len(s.queue) > 0 {
		d := max(time.Until(s.queue[0].at), time.Microsecond) // zero would disarm
		spec.Value = unix.NsecToTimespec(int64(d))
	}
	unix.TimerfdSettime(s.timer, 0, &spec, nil)
}

func lost(p float64) bool { return p > 0 && rand.Float64() < p }

func htons(v uint16) uint16 { return v<<8 | v>>8 }
