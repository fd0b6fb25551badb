package netem

import (
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
)

// Counters is what one direction of a node's link has carried since the
// node was added.
type Counters struct {
	// Bytes went through the direction's shaper: whole Ethernet frames
	// with their headers, a GSO frame counted as the wire packets in it
	// (HTB's counter). An unshaped direction counts what its veth end
	// sent (a GSO frame's headers once).
	Bytes uint64
	// Packets is the wire packets the delay line took from the node
	// (Up) or sent to it (Down), before Lost; 0 without the delay line.
	Packets int64
	// Backlog is the bytes waiting in the direction's queue now; Drops the
	// packets its full queue dropped.
	Backlog uint32
	Drops   uint32
	// Lost is the packets the delay line lost to the link's Loss in this
	// direction (zero with the kernel's netem, whose drops are not told
	// apart).
	Lost int64
}

// LinkCounters are the two directions of a node's link.
type LinkCounters struct {
	Up, Down Counters
}

// Counters reads the node's link counters: cheap (two netlink requests),
// so a caller may sample them several times a second.
func (d *Node) Counters() (LinkCounters, error) {
	if d.eth0 == nil {
		return LinkCounters{}, fmt.Errorf("netem: %s has no link of its own", d.name)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var c LinkCounters
	var err error
	if c.Up, err = dirCounters(d.handle, d.eth0); err != nil {
		return c, fmt.Errorf("netem: node %s: %w", d.name, err)
	}
	if c.Down, err = dirCounters(d.net.hub.handle, d.hubEnd); err != nil {
		return c, fmt.Errorf("netem: node %s: %w", d.name, err)
	}
	if sw := d.net.sw; sw != nil {
		if p := sw.port(d.index); p != nil {
			c.Up.Lost, c.Down.Lost = p.upLost.Load(), p.downLost.Load()
			c.Up.Packets, c.Down.Packets = p.upPackets.Load(), p.downPackets.Load()
		}
	}
	return c, nil
}

// dirCounters reads the egress counters of the interface l in h's
// namespace: its HTB class's, or the interface's own without one.
func dirCounters(h *netlink.Handle, l netlink.Link) (Counters, error) {
	classes, err := h.ClassList(l, netlink.HANDLE_NONE)
	if err != nil {
		return Counters{}, err
	}
	for _, cl := range classes {
		a := cl.Attrs()
		if a.Handle != htbClass || a.Statistics == nil || a.Statistics.Basic == nil || a.Statistics.Queue == nil {
			continue
		}
		return Counters{
			Bytes:   a.Statistics.Basic.Bytes,
			Backlog: a.Statistics.Queue.Backlog,
			Drops:   a.Statistics.Queue.Drops,
		}, nil
	}
	l, err = h.LinkByIndex(l.Attrs().Index)
	if err != nil {
		return Counters{}, err
	}
	var c Counters
	if st := l.Attrs().Statistics; st != nil {
		c.Bytes = st.TxBytes
	}
	return c, nil
}

// DelayLineStats is what the userspace delay line (DelayUserspace) has done
// since the network was made.
type DelayLineStats struct {
	// CPU is the time its engine thread ran, including the kernel's work
	// done in that thread (receiving, and sending on into the hub ends'
	// queues). It is not part of any node's processes: a caller measuring
	// the cost of what runs on the network counts it apart.
	CPU time.Duration
	// Scheduling is the engine thread's: "SCHED_FIFO" (real-time, so the
	// load under test does not delay it) or, where that is refused,
	// "nice -10".
	Scheduling string
	// Frames were sent on (a frame cut at a loss counts as its packets);
	// Cut counts the GSO frames cut into their packets because a loss hit
	// some but not all of them.
	Frames, Cut int64
	// How long after their release time frames left: in all, at most, and
	// counted by bucket, Late[i] the frames at most LateBounds[i] late
	// (and more than the bound before), the last bucket the rest.
	TotalLate, MaxLate time.Duration
	Late               [len(LateBounds) + 1]int64
	// Overflow counts frames dropped because the line held its maximum;
	// Dropped those its receiving socket dropped, its buffer full (the
	// engine fell behind).
	Overflow, Dropped int64
}

// MeanLate is TotalLate over Frames.
func (st DelayLineStats) MeanLate() time.Duration {
	if st.Frames == 0 {
		return 0
	}
	return st.TotalLate / time.Duration(st.Frames)
}

// Sub returns the counts of st since an earlier reading old (MaxLate stays
// st's: it is the maximum since the network was made).
func (st DelayLineStats) Sub(old DelayLineStats) DelayLineStats {
	st.CPU -= old.CPU
	st.Frames -= old.Frames
	st.Cut -= old.Cut
	st.TotalLate -= old.TotalLate
	for i := range st.Late {
		st.Late[i] -= old.Late[i]
	}
	st.Overflow -= old.Overflow
	st.Dropped -= old.Dropped
	return st
}

// LateOver returns the fraction of frames more than d late, d one of
// LateBounds (else the next bound above it).
func (st DelayLineStats) LateOver(d time.Duration) float64 {
	if st.Frames == 0 {
		return 0
	}
	var n int64
	for i, c := range st.Late {
		if i == len(LateBounds) || LateBounds[i] > d {
			n += c
		}
	}
	return float64(n) / float64(st.Frames)
}

// DelayLineStats returns the delay line's counters; ok is false if the
// network has no userspace delay line.
func (n *Network) DelayLineStats() (st DelayLineStats, ok bool) {
	if n.sw == nil {
		return st, false
	}
	return n.sw.stats(), true
}
