package netem

import (
	"container/heap"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
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
// Each port is an AF_PACKET socket bound to the hub end, read through the
// runtime's poller; frames go to the port of their destination MAC (the
// nodes' addresses are known, nothing is learned) or, for broadcast,
// multicast and unknown destinations, to every other port. Each port keeps
// its waiting frames in a heap ordered by release time and sends them from
// one goroutine.
type delaySwitch struct {
	mu    sync.RWMutex
	ports map[int]*port // by node index
	byMAC map[[6]byte]*port
	seq   atomic.Uint64 // orders frames released at the same instant

	wg     sync.WaitGroup
	closed chan struct{}
}

// port is one node's attachment to the switch.
type port struct {
	sw   *delaySwitch
	node int
	f    *os.File // the AF_PACKET socket

	mu     sync.Mutex
	link   Link
	queue  frameHeap
	wake   chan struct{} // an earlier frame arrived, or close
	drops  int
	closed bool
}

// frame is one Ethernet frame waiting for its release time.
type frame struct {
	at   time.Time
	seq  uint64
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

// maxWaiting bounds the frames one port holds (at 1 Gbit/s, 80 ms of
// delay is ~6,600 full frames); beyond it frames are dropped.
const maxWaiting = 1 << 16

func newDelaySwitch() *delaySwitch {
	return &delaySwitch{ports: map[int]*port{}, byMAC: map[[6]byte]*port{}, closed: make(chan struct{})}
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
		// it): a virtio-net header before each frame carries where it
		// goes, both ways, so the frame is sent on as it came.
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
			return err
		}
		// Room for bursts while the reader is descheduled.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex})
	}
	if err := setup(); err != nil {
		unix.Close(fd)
		return fmt.Errorf("packet socket: %w", err)
	}
	p := &port{sw: s, node: index, f: os.NewFile(uintptr(fd), fmt.Sprintf("packet:%d", ifindex)), link: link, wake: make(chan struct{}, 1)}
	s.mu.Lock()
	s.ports[index] = p
	s.byMAC[[6]byte(mac)] = p
	s.mu.Unlock()
	s.wg.Go(p.read)
	s.wg.Go(p.send)
	return nil
}

// setLink changes the delay, jitter and loss of node index's port.
func (s *delaySwitch) setLink(index int, l Link) {
	s.mu.RLock()
	p := s.ports[index]
	s.mu.RUnlock()
	if p != nil {
		p.mu.Lock()
		p.link = l
		p.mu.Unlock()
	}
}

// close stops every port and waits for their goroutines.
func (s *delaySwitch) close() {
	s.mu.Lock()
	select {
	case <-s.closed:
		s.mu.Unlock()
		return
	default:
	}
	close(s.closed)
	ports := s.ports
	s.mu.Unlock()
	for _, p := range ports {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		p.f.Close() // ends read; send sees closed
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
	s.wg.Wait()
}

// read receives the frames the node sends and queues them on the
// destination ports.
func (p *port) read() {
	rc, err := p.f.SyscallConn()
	if err != nil {
		return
	}
	buf := make([]byte, 1<<16)
	for {
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), buf, 0)
			return rerr != unix.EAGAIN
		})
		if err != nil || errors.Is(rerr, unix.EBADF) {
			return // closed
		}
		if rerr != nil || n < vnetHdrLen+14 {
			continue // ENETDOWN when the link went down or up, EINTR: go on
		}
		p.sw.forward(p, buf[:n])
	}
}

// vnetHdrLen is the size of struct virtio_net_hdr, before each frame.
const vnetHdrLen = 10

// forward queues a copy of data (a virtio-net header and a frame) on every
// port it goes to.
func (s *delaySwitch) forward(from *port, data []byte) {
	now := time.Now()
	from.mu.Lock()
	src := from.link
	from.mu.Unlock()
	s.mu.RLock()
	var dst []*port
	eth := data[vnetHdrLen:]
	if eth[0]&1 == 0 { // unicast
		if p := s.byMAC[[6]byte(eth[:6])]; p != nil {
			dst = []*port{p}
		}
	}
	if dst == nil { // broadcast, multicast, unknown: flood
		for _, p := range s.ports {
			if p != from {
				dst = append(dst, p)
			}
		}
	}
	s.mu.RUnlock()
	for _, p := range dst {
		p.mu.Lock()
		l := p.link
		if lost(src.Loss) || lost(l.Loss) || len(p.queue) >= maxWaiting {
			p.drops++
			p.mu.Unlock()
			continue
		}
		d := src.Delay + l.Delay
		if j := src.Jitter + l.Jitter; j > 0 {
			d += time.Duration((rand.Float64()*2 - 1) * float64(j))
			d = max(d, 0)
		}
		n := s.seq.Add(1)
		heap.Push(&p.queue, frame{at: now.Add(d), seq: n, data: append([]byte(nil), data...)})
		first := p.queue[0].seq == n
		p.mu.Unlock()
		if first {
			select {
			case p.wake <- struct{}{}:
			default:
			}
		}
	}
}

func lost(p float64) bool { return p > 0 && rand.Float64() < p }

// send writes each waiting frame out of the port at its release time.
func (p *port) send() {
	rc, err := p.f.SyscallConn()
	if err != nil {
		return
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var due [][]byte
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		due = due[:0]
		now := time.Now()
		for len(p.queue) > 0 && !p.queue[0].at.After(now) {
			due = append(due, heap.Pop(&p.queue).(frame).data)
		}
		wait := time.Hour
		if len(p.queue) > 0 {
			wait = p.queue[0].at.Sub(now)
		}
		p.mu.Unlock()
		for _, b := range due {
			var werr error
			err := rc.Write(func(fd uintptr) bool {
				werr = unix.Send(int(fd), b, 0)
				return werr != unix.EAGAIN
			})
			if err != nil {
				return // closed
			}
			if werr != nil { // ENOBUFS: the queue below is full; the frame is lost, as at a router
				p.mu.Lock()
				p.drops++
				p.mu.Unlock()
			}
		}
		if len(due) > 0 {
			continue
		}
		timer.Reset(wait) // Go 1.23 timers: no stale tick after Reset
		select {
		case <-timer.C:
		case <-p.wake:
		}
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
