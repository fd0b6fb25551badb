package netem

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// delaySwitch is the delay line used where the kernel has no sch_netem: an
// Ethernet switch in this process that joins the hub ends of the nodes'
// veths (instead of a bridge) and holds each frame for the sum of the
// sender's and the receiver's Delay (± Jitter) before sending it out of the
// receiver's port, losing packets with the links' Loss. Rates stay with the
// kernel: HTB on the node's eth0 shapes what it sends before the switch
// sees it, HTB on the hub end shapes what the switch sends to the node.
//
// Loss is per wire packet, as on a real line, not per frame: a GSO frame
// (segmentation offload stays on, see the package doc) carries several
// packets, and the switch counts them. Each direction of each link has its
// own loss process, a Bernoulli trial per packet (drawn as geometric gaps
// between losses, so a frame without a loss costs no random numbers); the
// sender's upload loses first, the receiver's download loses among what is
// left. A GSO frame with some but not all of its packets lost is cut into
// its packets (segment), and only the survivors go on: TCP sees the single
// losses a line causes, not bursts of up to 44 packets.
//
// Two AF_PACKET sockets in the hub's namespace do the I/O for every port:
// one, bound to no interface, receives what arrives on any hub end (the
// address of each frame names its interface, hence its port), the other
// sends each frame out of the hub end of its port (its address names the
// interface). Frames go to the port of their destination MAC (the nodes'
// addresses are known, nothing is learned) or, for broadcast, multicast and
// unknown destinations, to every other port. Both sockets move frames in
// batches (recvmmsg(2), sendmmsg(2)): a system call costs several
// microseconds on a virtual machine, and one per frame bounded what the line
// could carry. A frame's release time counts from when the engine read it:
// the kernel's receive timestamp is no arrival time here (a TCP packet keeps
// its sender's departure time across namespaces, before its wait in the
// sender's queue).
//
// One engine does all of it: a goroutine locked to its own OS thread,
// scheduled SCHED_FIFO (or at nice -10 where real-time scheduling is
// refused), waiting in epoll_pwait2(2) on the receiving socket with a
// timeout at the next release time, so that the processes under test, or
// other load on the machine, do not delay the delay line itself.
type delaySwitch struct {
	mu      sync.RWMutex
	byIndex map[int32]*port // by the hub end's ifindex
	byMAC   map[[6]byte]*port
	ports   []*port

	rx, tx     int // packet sockets in the hub's namespace
	epfd, wake int // epoll, eventfd (close)
	closing    atomic.Bool
	closed     bool // the sockets are closed; under mu
	done       chan struct{}

	tid      atomic.Int64 // the engine's thread
	sched    string       // its scheduling, set before tid
	frames   atomic.Int64 // frames forwarded (sent on)
	lateSum  atomic.Int64 // ns after their release time, summed over the frames sent
	lateMax  atomic.Int64 // ns
	lateHist [len(LateBounds) + 1]atomic.Int64
	overflow atomic.Int64 // frames dropped: maxWaiting reached
	cut      atomic.Int64 // GSO frames cut into packets at a loss
	rxDrops  atomic.Int64 // frames the receiving socket's full buffer dropped

	// Engine state: only the engine goroutine touches it.
	queue  frameHeap
	seq    uint64
	free   [len(bufClasses)][][]byte
	lost   []bool   // per packet of the frame being forwarded: lost on the way
	upLost []bool   // lost on the sender's upload
	segs   [][]byte // the packets cut from it
	in     mmsgs    // recvmmsg's
	out    mmsgs    // sendmmsg's
	outTo  []frame  // the frames in out
}

// port is one node's attachment to the switch.
type port struct {
	node    int
	ifindex int32 // the hub end's
	link    atomic.Pointer[Link]

	upLoss, downLoss lossProcess // engine only

	upPackets, downPackets atomic.Int64 // packets the switch took from the node / sent to it
	upLost, downLost       atomic.Int64 // packets lost to Loss on the node's upload / download
	refused                atomic.Int64 // frames to the node refused by the queue below (a full send buffer)
}

// lossProcess loses packets independently with probability p each: gap is
// the number of packets that pass before the next one lost.
type lossProcess struct {
	p   float64
	gap int64
}

// lose marks in lost, among the packets not yet lost, those this process
// loses at probability p, and returns how many it marked.
func (g *lossProcess) lose(p float64, lost []bool) int {
	if p <= 0 {
		return 0
	}
	if g.p != p {
		g.p, g.gap = p, lossGap(p)
	}
	n := 0
	for j := range lost {
		if lost[j] {
			continue
		}
		if g.gap > 0 {
			g.gap--
			continue
		}
		lost[j] = true
		n++
		g.gap = lossGap(p)
	}
	return n
}

// lossGap draws the packets before the next loss: a geometric variable of
// parameter p (the count of successes before the first failure of
// Bernoulli trials).
func lossGap(p float64) int64 {
	if p >= 1 {
		return 0
	}
	g := math.Floor(math.Log(1-rand.Float64()) / math.Log1p(-p))
	return int64(min(g, math.MaxInt32))
}

// frame is one Ethernet frame (with its virtio-net header) waiting for its
// release time.
type frame struct {
	at   time.Time
	seq  uint64
	dst  *port
	data []byte
}

// frameHeap is a min-heap of frames by release time, then arrival order
// (typed, so that pushing and popping allocate nothing).
type frameHeap []frame

func (h frameHeap) less(i, j int) bool {
	if h[i].at.Equal(h[j].at) {
		return h[i].seq < h[j].seq
	}
	return h[i].at.Before(h[j].at)
}

func (h *frameHeap) push(f frame) {
	*h = append(*h, f)
	q := *h
	for i := len(q) - 1; i > 0; {
		p := (i - 1) / 2
		if !q.less(i, p) {
			break
		}
		q[i], q[p] = q[p], q[i]
		i = p
	}
}

func (h *frameHeap) pop() frame {
	q := *h
	f := q[0]
	last := len(q) - 1
	q[0] = q[last]
	q[last] = frame{}
	q = q[:last]
	for i := 0; ; {
		m, l, r := i, 2*i+1, 2*i+2
		if l < len(q) && q.less(l, m) {
			m = l
		}
		if r < len(q) && q.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		q[i], q[m] = q[m], q[i]
		i = m
	}
	*h = q
	return f
}

// bufClasses are the sizes of the switch's reusable frame buffers: a
// 1500-byte frame, and GSO frames of a few, a dozen or up to 64 KiB of
// packets (and their virtio-net header).
var bufClasses = [...]int{2 << 10, 8 << 10, 32 << 10, 72 << 10}

// LateBounds are the upper bounds of DelayLineStats.Late's buckets.
var LateBounds = [...]time.Duration{100 * time.Microsecond, 500 * time.Microsecond, time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond, 50 * time.Millisecond}

const (
	// maxWaiting bounds the frames the switch holds (at 1 Gbit/s, 80 ms
	// of delay is ~6,600 full frames per direction); beyond it frames are
	// dropped.
	maxWaiting = 1 << 18
	// vnetHdrLen is the size of struct virtio_net_hdr, before each frame.
	vnetHdrLen = 10
	// batch is the most frames one recvmmsg or sendmmsg moves.
	batch = 64
	// maxFrame is the largest frame read: a 64 KiB GSO frame, its headers
	// and the virtio-net header.
	maxFrame = 72 << 10
	// enginePriority is the engine thread's real-time priority
	// (SCHED_FIFO, 1-99), and engineNice its nice value where real-time
	// scheduling is refused.
	enginePriority = 20
	engineNice     = -10
)

func newDelaySwitch(hub *Node) (*delaySwitch, error) {
	s := &delaySwitch{byIndex: map[int32]*port{}, byMAC: map[[6]byte]*port{}, done: make(chan struct{}), rx: -1, tx: -1, epfd: -1, wake: -1}
	err := hub.Do(func() error {
		var err error
		if s.rx, err = packetSocket(); err != nil {
			return err
		}
		s.tx, err = packetSocket()
		return err
	})
	if err != nil {
		s.closeFDs()
		return nil, fmt.Errorf("netem: packet socket: %w", err)
	}
	setup := func() error {
		// Frames of local TCP carry a partial checksum (the veth "offloads"
		// it) and may be GSO frames: a virtio-net header before each frame
		// says so, both ways, so the frame is sent on as it came.
		for _, fd := range []int{s.rx, s.tx} {
			if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
				return err
			}
		}
		if err := unix.SetsockoptInt(s.rx, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
			return err
		}
		// Room for bursts from every port while the engine is busy, and for
		// the queues below (HTB's): a frame is charged to the sending
		// socket until it leaves its queue, and a full send buffer would
		// drop before the queue does.
		if err := unix.SetsockoptInt(s.rx, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(s.tx, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 256<<20); err != nil {
			return err
		}
		// Bound to no interface: it receives from every hub end.
		return unix.Bind(s.rx, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL)})
	}
	if err := setup(); err != nil {
		s.closeFDs()
		return nil, fmt.Errorf("netem: packet socket: %w", err)
	}
	if s.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		s.closeFDs()
		return nil, fmt.Errorf("netem: epoll: %w", err)
	}
	if s.wake, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		s.closeFDs()
		return nil, fmt.Errorf("netem: eventfd: %w", err)
	}
	for _, fd := range []int{s.rx, s.wake} {
		if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			s.closeFDs()
			return nil, fmt.Errorf("netem: epoll: %w", err)
		}
	}
	s.in = newMmsgs(maxFrame)
	s.out = newMmsgs(0)
	reserveP(1)
	go s.engine()
	return s, nil
}

// reserved counts the Ps (runtime.GOMAXPROCS) the engines of open switches
// have added.
var reserved struct {
	sync.Mutex
	n int
}

// reserveP adds d to GOMAXPROCS for the engines: an engine needs a P each
// time it returns from epoll_pwait2, and with every P busy with other
// goroutines of the process it would wait up to the runtime's 10 ms
// preemption tick for one. With one P more than the goroutines that use the
// CPUs, one is free when the engine wakes; the kernel then runs the engine
// first (SCHED_FIFO).
func reserveP(d int) {
	reserved.Lock()
	defer reserved.Unlock()
	reserved.n += d
	runtime.GOMAXPROCS(max(runtime.GOMAXPROCS(0)+d, 1))
}

// packetSocket opens a raw packet socket for every protocol.
func packetSocket() (int, error) {
	return unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
}

func (s *delaySwitch) closeFDs() {
	for _, fd := range []int{s.rx, s.tx, s.epfd, s.wake} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// attach makes a port for node index, whose veth's hub end is ifindex and
// whose eth0 has address mac.
func (s *delaySwitch) attach(index, ifindex int, mac net.HardwareAddr, link Link) {
	p := &port{node: index, ifindex: int32(ifindex)}
	p.link.Store(&link)
	s.mu.Lock()
	s.byIndex[int32(ifindex)] = p
	s.byMAC[[6]byte(mac)] = p
	s.ports = append(s.ports, p)
	s.mu.Unlock()
}

// port returns node index's port, or nil.
func (s *delaySwitch) port(index int) *port {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, p := range s.ports {
		if p.node == index {
			return p
		}
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

// close stops the engine and closes its sockets; idempotent.
func (s *delaySwitch) close() {
	if s.closing.Swap(true) {
		return
	}
	unix.Write(s.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	<-s.done
	s.mu.Lock()
	s.closed = true
	s.closeFDs()
	s.mu.Unlock()
	reserveP(-1)
}

// engine forwards frames until close: it reads what arrived, queues the
// frames, and sends those whose time has come.
func (s *delaySwitch) engine() {
	defer close(s.done)
	// The thread's scheduling is changed for good: keep the goroutine on
	// it, and let the thread end with it (no unlock).
	runtime.LockOSThread()
	s.sched = "SCHED_FIFO"
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: enginePriority}
	if unix.SchedSetAttr(0, &attr, 0) != nil { // this thread only
		s.sched = "nice -10"
		unix.Setpriority(unix.PRIO_PROCESS, 0, engineNice) // this thread only (Linux); best effort
	}
	s.tid.Store(int64(unix.Gettid()))
	events := make([]unix.EpollEvent, 4)
	for {
		timeout := time.Duration(-1)
		if len(s.queue) > 0 {
			timeout = max(time.Until(s.queue[0].at), 0)
		}
		n, err := epollWait(s.epfd, events, timeout)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		for _, ev := range events[:max(n, 0)] {
			if int(ev.Fd) == s.wake {
				return
			}
		}
		s.receive()
		s.sendDue()
	}
}

// receive reads what the receiving socket holds (at most 16 batches, so
// that sending is not held up) and forwards it.
func (s *delaySwitch) receive() {
	for range 16 {
		n, err := s.in.recv(s.rx)
		if err != nil {
			return // EAGAIN: drained
		}
		now := time.Now()
		s.mu.RLock()
		for i := range n {
			data, ifindex := s.in.received(i)
			p := s.byIndex[ifindex]
			if p == nil || len(data) < vnetHdrLen+ethHdrLen {
				continue // a port not yet attached, or a runt
			}
			s.forward(p, data, now)
		}
		s.mu.RUnlock()
		if n < batch {
			return
		}
	}
}

// forward queues what survives the links' loss of data (a virtio-net header
// and a frame, arrived at now) for every port it goes to. s.mu is read-locked.
func (s *delaySwitch) forward(from *port, data []byte, now time.Time) {
	src := from.link.Load()
	eth := data[vnetHdrLen:]
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
	k := packetsIn(data)
	from.upPackets.Add(int64(k))
	s.upLost = slices.Grow(s.upLost[:0], k)[:k]
	s.lost = slices.Grow(s.lost[:0], k)[:k]
	clear(s.upLost)
	up := from.upLoss.lose(src.Loss, s.upLost)
	from.upLost.Add(int64(up))
	for _, p := range dst {
		l := p.link.Load()
		copy(s.lost, s.upLost)
		p.downPackets.Add(int64(k - up))
		down := p.downLoss.lose(l.Loss, s.lost)
		p.downLost.Add(int64(down))
		if up+down == k {
			continue
		}
		d := src.Delay + l.Delay
		if j := src.Jitter + l.Jitter; j > 0 {
			d += time.Duration((rand.Float64()*2 - 1) * float64(j))
			d = max(d, 0)
		}
		at := now.Add(d)
		if up+down == 0 {
			s.enqueue(at, p, append(s.buffer(len(data)), data...))
			continue
		}
		s.segs = segment(s.segs[:0], data, func(j int) bool { return !s.lost[j] }, s.buffer)
		s.cut.Add(1)
		for _, b := range s.segs {
			s.enqueue(at, p, b)
		}
		clear(s.segs)
	}
}

// enqueue holds b for p until at.
func (s *delaySwitch) enqueue(at time.Time, p *port, b []byte) {
	if len(s.queue) >= maxWaiting {
		s.overflow.Add(1)
		s.release(b)
		return
	}
	s.seq++
	s.queue.push(frame{at: at, seq: s.seq, dst: p, data: b})
}

// buffer returns an empty buffer for a frame of n bytes, reused if one of
// its size class is free.
func (s *delaySwitch) buffer(n int) []byte {
	for c, size := range bufClasses {
		if n > size {
			continue
		}
		if free := s.free[c]; len(free) > 0 {
			b := free[len(free)-1]
			s.free[c] = free[:len(free)-1]
			return b[:0]
		}
		return make([]byte, 0, size)
	}
	return make([]byte, 0, n)
}

// release keeps b for reuse.
func (s *delaySwitch) release(b []byte) {
	for c, size := range bufClasses {
		if cap(b) == size {
			if len(s.free[c]) < 4096>>c {
				s.free[c] = append(s.free[c], b)
			}
			return
		}
	}
}

// sendDue sends every frame whose release time has come, in batches.
func (s *delaySwitch) sendDue() {
	for len(s.queue) > 0 {
		now := time.Now()
		s.outTo = s.outTo[:0]
		for len(s.queue) > 0 && len(s.outTo) < batch && !s.queue[0].at.After(now) {
			s.outTo = append(s.outTo, s.queue.pop())
		}
		if len(s.outTo) == 0 {
			return
		}
		for i, f := range s.outTo {
			s.out.set(i, f.data, f.dst.ifindex)
		}
		for i := 0; i < len(s.outTo); {
			n, err := s.out.send(s.tx, i, len(s.outTo))
			if err != nil {
				// A full queue below (ENOBUFS) or send buffer (EAGAIN)
				// loses the frame, as a router's would.
				s.outTo[i].dst.refused.Add(1)
				n = 1
			}
			i += n
		}
		for _, f := range s.outTo {
			late := now.Sub(f.at)
			s.frames.Add(1)
			s.lateSum.Add(int64(late))
			b := 0
			for b < len(LateBounds) && late > LateBounds[b] {
				b++
			}
			s.lateHist[b].Add(1)
			if int64(late) > s.lateMax.Load() {
				s.lateMax.Store(int64(late))
			}
			s.release(f.data)
		}
		s.out.clear(len(s.outTo))
		clear(s.outTo)
	}
}

// stats returns the switch's counters and its engine thread's CPU time.
func (s *delaySwitch) stats() DelayLineStats {
	st := DelayLineStats{
		Frames:    s.frames.Load(),
		TotalLate: time.Duration(s.lateSum.Load()),
		MaxLate:   time.Duration(s.lateMax.Load()),
		Overflow:  s.overflow.Load(),
		Cut:       s.cut.Load(),
	}
	for i := range s.lateHist {
		st.Late[i] = s.lateHist[i].Load()
	}
	if tid := s.tid.Load(); tid != 0 { // sched was set before tid
		st.CPU = threadCPU(int(tid))
		st.Scheduling = s.sched
	}
	s.mu.RLock()
	if !s.closed {
		// Reading resets the kernel's counters.
		if ps, err := unix.GetsockoptTpacketStats(s.rx, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
			s.rxDrops.Add(int64(ps.Drops))
		}
	}
	s.mu.RUnlock()
	st.Dropped = s.rxDrops.Load()
	return st
}

// threadCPU returns the CPU time a thread of this process has used
// (the first field of /proc/self/task/TID/schedstat, in ns), or 0.
func threadCPU(tid int) time.Duration {
	if tid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/schedstat", tid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	ns, _ := strconv.ParseInt(f[0], 10, 64)
	return time.Duration(ns)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// lateBucket returns the bucket of LateBounds a lateness falls in.
func lateBucket(d time.Duration) int {
	b := 0
	for b < len(LateBounds) && d > LateBounds[b] {
		b++
	}
	return b
}
