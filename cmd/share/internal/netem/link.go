package netem

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Link is what a node's access link does to its traffic. The zero value is
// an unshaped link.
type Link struct {
	Up     int64         // bytes/s the node can send; 0: unshaped
	Down   int64         // bytes/s the node can receive; 0: unshaped
	Delay  time.Duration // added to every packet in each direction (one way); RTT between A and B = 2 × (A.Delay + B.Delay)
	Jitter time.Duration // ± random variation of Delay (netem; reorders packets, as real jitter does)
	Loss   float64       // fraction of packets dropped in each direction, 0 to 1
	Queue  time.Duration // how long a full queue takes to drain at the link's rate; 0: DefaultQueue
}

// DefaultQueue is the queue of a Link whose Queue is zero: 100 ms at the
// link's rate, as much as a home router or a DSL modem holds (often more),
// and at least the bandwidth-delay product of a path of up to 100 ms RTT,
// so that TCP keeps the link busy after a loss (a queue smaller than the
// bandwidth-delay product leaves the link idle while the window regrows).
const DefaultQueue = 100 * time.Millisecond

// Frame sizes that turn rates into queue lengths.
const (
	frameBytes = 1514 // a full Ethernet frame of a 1500-byte MTU, as HTB charges it
	minQueue   = 48   // frames: the least queue, 72 KiB (a 64 KiB GSO frame and its packets' headers fit)
)

// PayloadFraction is the share of a full Ethernet frame that is TCP
// payload, for IPv4 with the timestamp option (RFC 7323, on by default in
// Linux) over a 1500-byte MTU: MSS = 1500 - 20 (IPv4) - 20 (TCP) - 12
// (timestamps) = 1448 bytes in a frame of 1500 + 14 (Ethernet header) =
// 1514 bytes, as HTB counts it (no preamble, FCS or gap: a veth has none).
// TCP's goodput on a link of rate R is at most R × PayloadFraction.
const PayloadFraction = float64(mtu-ipv4HdrLen-tcpHdrLen-tcpTimestampsLen) / (mtu + ethHdrLen)

const (
	ipv4HdrLen       = 20
	tcpHdrLen        = 20
	tcpTimestampsLen = 12 // the option's 10 bytes, padded to 4-byte words
)

func (l Link) validate() error {
	switch {
	case l.Up < 0 || l.Down < 0:
		return errors.New("negative rate")
	case l.Delay < 0 || l.Jitter < 0 || l.Queue < 0:
		return errors.New("negative duration")
	case l.Jitter > 0 && l.Delay == 0:
		return errors.New("jitter needs a delay")
	case l.Loss < 0 || l.Loss > 1 || math.IsNaN(l.Loss):
		return fmt.Errorf("loss %v: want a fraction from 0 to 1", l.Loss)
	case l.Delay > time.Hour/100 || l.Jitter > time.Hour/100:
		return errors.New("delay or jitter above 36 s")
	}
	return nil
}

// RTT returns the round-trip time a packet exchange between nodes with links
// a and b takes, queues empty: 2 × (a.Delay + b.Delay).
func RTT(a, b Link) time.Duration { return 2 * (a.Delay + b.Delay) }

// SetLink replaces the shaping of the node's link, in both directions. A
// link with Delay, Jitter or Loss needs a network made with
// Options.Latency. The hub's link cannot be shaped.
func (d *Node) SetLink(l Link) error {
	if d.index == 0 {
		return errors.New("netem: the hub has no link")
	}
	if err := l.validate(); err != nil {
		return fmt.Errorf("netem: node %s: %w", d.name, err)
	}
	n := d.net
	if !n.latency && (l.Delay > 0 || l.Jitter > 0 || l.Loss > 0) {
		return fmt.Errorf("netem: node %s: delay, jitter and loss need a network made with Options.Latency", d.name)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	nl, err := d.handle.LinkByName(nodeIf)
	if err != nil {
		return fmt.Errorf("netem: node %s: %w", d.name, err)
	}
	hub := n.hub.handle
	hl, err := hub.LinkByName(hubIf(d.index))
	if err != nil {
		return fmt.Errorf("netem: node %s: %w", d.name, err)
	}
	if err := shape(d.handle, nl, l.Up, l, n.sw == nil); err != nil {
		return fmt.Errorf("netem: node %s: shape its upload: %w", d.name, err)
	}
	if err := shape(hub, hl, l.Down, l, n.sw == nil); err != nil {
		return fmt.Errorf("netem: node %s: shape its download: %w", d.name, err)
	}
	if n.sw != nil {
		n.sw.setLink(d.index, l)
	}
	d.link = l
	return nil
}

// Qdisc handles.
var (
	htbRoot   = netlink.MakeHandle(1, 0)
	htbClass  = netlink.MakeHandle(1, 1)
	netemLeaf = netlink.MakeHandle(10, 0)
	fifoLeaf  = netlink.MakeHandle(20, 0)
)

// queueLen returns the full frames a queue of l.Queue at rate holds, at
// least minQueue.
func queueLen(rate int64, l Link) int {
	q := l.Queue
	if q == 0 {
		q = DefaultQueue
	}
	return max(int(math.Ceil(float64(rate)*q.Seconds()/frameBytes)), minQueue)
}

// shape replaces the egress qdiscs of link: HTB at rate (if any), with
// netem below it for delay, jitter and loss when withNetem (the kernel's
// delay line), else a bfifo: a queue of Queue's worth of bytes at the rate,
// as a modem's buffer (bytes, not packets: a GSO frame of many packets
// takes the room of its packets, qdisc_pkt_len).
func shape(h *netlink.Handle, link netlink.Link, rate int64, l Link, withNetem bool) error {
	idx := link.Attrs().Index
	// Remove what is there; a veth starts with no qdisc (noqueue).
	qs, err := h.QdiscList(link)
	if err != nil {
		return err
	}
	for _, q := range qs {
		if q.Attrs().Parent == netlink.HANDLE_ROOT && q.Attrs().Handle != 0 {
			if err := h.QdiscDel(q); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("delete %s qdisc: %w", q.Type(), err)
			}
		}
	}
	needNetem := withNetem && (l.Delay > 0 || l.Loss > 0)
	if rate == 0 && !needNetem {
		return nil
	}
	if rate > 0 {
		// bfifo's limit, given no options, is txqueuelen × (MTU + link
		// header) bytes (net/sched/sch_fifo.c, __fifo_init): the library
		// has no bfifo type, so the limit is set through txqueuelen.
		if err := h.LinkSetTxQLen(link, queueLen(rate, l)); err != nil {
			return fmt.Errorf("set txqueuelen: %w", err)
		}
	}
	parent := uint32(netlink.HANDLE_ROOT)
	if rate > 0 {
		htb := netlink.NewHtb(netlink.QdiscAttrs{LinkIndex: idx, Handle: htbRoot, Parent: netlink.HANDLE_ROOT})
		htb.Defcls = 1
		if err := h.QdiscAdd(htb); err != nil {
			return fmt.Errorf("add htb: %w", err)
		}
		bits := uint64(rate) * 8
		// Burst: 10 ms at the rate, at least two frames, so that a
		// dequeue timer that fires late on a loaded machine does not lose
		// rate (tc's default of about 1 ms lost 7-9 % of 20 Mbit/s here).
		// Quantum: one frame (one class: it only has to be valid, and small
		// keeps the kernel from warning about a large quantum).
		burst := uint32(max(rate/100, 2*frameBytes))
		class := netlink.NewHtbClass(netlink.ClassAttrs{LinkIndex: idx, Parent: htbRoot, Handle: htbClass},
			netlink.HtbClassAttrs{Rate: bits, Ceil: bits, Buffer: burst, Cbuffer: burst, Quantum: frameBytes})
		if err := h.ClassAdd(class); err != nil {
			return fmt.Errorf("add htb class: %w", err)
		}
		parent = htbClass
	}
	if !needNetem {
		fifo := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: idx, Handle: fifoLeaf, Parent: htbClass}, QdiscType: "bfifo"}
		if err := h.QdiscAdd(fifo); err != nil {
			return fmt.Errorf("add bfifo: %w", err)
		}
		return nil
	}
	// netem holds the packets in its delay line and, below HTB, the backlog
	// waiting for the rate: size its limit for both.
	limit := uint32(100000) // unshaped: whatever the sender pushes
	if rate > 0 {
		inFlight := float64(rate) * (l.Delay + l.Jitter).Seconds() / frameBytes
		limit = uint32(min(math.Ceil(inFlight)+float64(queueLen(rate, l)), 1<<20))
	}
	nq := netlink.NewNetem(netlink.QdiscAttrs{LinkIndex: idx, Handle: netemLeaf, Parent: parent}, netlink.NetemQdiscAttrs{
		Latency: uint32(l.Delay.Microseconds()),
		Jitter:  uint32(l.Jitter.Microseconds()),
		Loss:    float32(l.Loss * 100),
		Limit:   limit,
	})
	if err := h.QdiscAdd(nq); err != nil {
		return fmt.Errorf("add netem: %w", err)
	}
	return nil
}

// hasNetem reports whether the kernel has the netem qdisc, by adding one to
// the loopback of the namespace h works in.
func hasNetem(h *netlink.Handle) bool {
	lo, err := h.LinkByName("lo")
	if err != nil {
		return false
	}
	q := netlink.NewNetem(netlink.QdiscAttrs{LinkIndex: lo.Attrs().Index, Handle: netemLeaf, Parent: netlink.HANDLE_ROOT},
		netlink.NetemQdiscAttrs{Latency: 1000})
	if err := h.QdiscAdd(q); err != nil {
		return false
	}
	h.QdiscDel(q)
	return true
}
