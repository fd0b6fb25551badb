// Package netem emulates a network of hosts on one Linux machine, with links
// shaped by the kernel: each node is a network namespace joined by a veth
// pair to one bridge in a hub namespace, and each direction of its link has
// its own rate, delay, jitter and loss. It needs root (CAP_NET_ADMIN and
// CAP_SYS_ADMIN); New returns ErrNotRoot otherwise, and tests skip on it.
//
// # Topology
//
//	hub namespace:   br0 (a bridge; or the delay-line switch, below)
//	                  ├── n1 ═══ veth ═══ eth0  node 1's namespace (10.77.0.1)
//	                  ├── n2 ═══ veth ═══ eth0  node 2's namespace (10.77.0.2)
//	                  └── ...
//
// Every object lives inside a namespace the package created: the root
// namespace of the machine is never touched, so nothing here can collide with
// the machine's own interfaces, and deleting a namespace deletes its veth end
// and bridge with it. Addresses come from Options.Subnet (default
// 10.77.0.0/16), node k getting the k-th host address in order of AddNode;
// the subnet is private to the run (no route leads out of it), so two runs
// may use the same one. IPv6 is off in every namespace. A process that must
// reach every node (a tracker, a rendezvous) runs on a node of its own with
// an unshaped link. Every node has a permanent neighbour entry (address and
// MAC) for every other, so nodes do not ARP for each other: the kernel's one
// neighbour table for all namespaces holds only gc_thresh3 (1024) learned
// entries, fewer than a cluster of 64 nodes needs (see Network.neighbours).
//
// # Shaping
//
// A node's Link is applied as egress shaping on both ends of its veth pair
// (the kernel shapes only what a device sends): on the node's eth0 for what
// it uploads (Link.Up) and on the hub's end for what it downloads
// (Link.Down). Each end gets an HTB qdisc whose one class has the rate as
// its rate and ceiling (the layout Mininet's TCLink uses), with a burst of
// 10 ms at the rate (a dequeue timer that fires late on a loaded machine
// then loses no rate). The rate counts whole Ethernet frames (HTB charges
// each packet of a GSO segment its headers): TCP over IPv4 with timestamps
// carries at most 1448 bytes of payload per 1514-byte frame, so TCP
// goodput is at most PayloadFraction (95.6 %) of the rate.
//
// Below HTB, each end queues Link.Queue worth of bytes at its rate (default
// 100 ms, at least 72 KiB), a bfifo: a modem or a home router holds that
// much or more, enough for TCP to keep the link busy after a loss on paths
// of up to 100 ms RTT (a queue smaller than the bandwidth-delay product
// leaves the link idle while the window regrows). A full queue drops, as a
// router's does. The queue counts bytes, not packets: a GSO segment takes
// the room of the packets in it. A sending host's own queue is its uplink's
// (as if the host were the modem), so TCP small queues (TSQ) hold a flow's
// data in its socket instead of in the queue, and a lone flow does not fill
// its uplink's queue; flows from elsewhere fill a download's queue as they
// would a real line's.
//
// Segmentation offload stays on: turning it off costs 16 times the CPU per
// byte on this project's VMs (iperf3 over a veth pair: 164 Mbit/s with one
// packet per segment, 2.6 Gbit/s with GSO). TCP sizes its segments to about
// 1 ms at its pacing rate, at least two packets (tcp_min_tso_segs), so at
// residential rates a segment is one to three packets; at LAN rates up to
// 44. Segments are delayed and queued as one, but lost packet by packet
// (below).
//
// Delay, Jitter and Loss need Options.Latency. A packet from node A to
// node B is delayed by A's Delay plus B's Delay, so the round trip between
// A and B is 2 × (A.Delay + B.Delay): two nodes of Delay 7.5 ms have a 30 ms
// RTT; loss applies likewise on both links, to each packet independently
// (Bernoulli, as on a line with random bit errors; not in bursts). Where the
// kernel has the netem qdisc, a netem qdisc below each HTB class adds them
// (DelayNetem). Where it has none (kernels built without
// CONFIG_NET_SCH_NETEM, as the 6.18 Firecracker kernel this project's
// machines run), the hub has no bridge: a switch in the calling process
// joins the hub ends (DelayUserspace). It reads every frame with one
// AF_PACKET socket, holds it until its release time and sends it out of its
// destination's hub end with another, in batches (recvmmsg, sendmmsg); a
// GSO segment that a loss hits in part is cut into its packets, and only the
// survivors go on. One engine thread, SCHED_FIFO (nice -10 where real-time
// scheduling is refused), waits on the socket with a timeout at the next
// release time, so the load under test does not delay the delay line; the
// process gets one more P (GOMAXPROCS) per switch, so the engine never
// waits for the Go scheduler. The rates stay the kernel's in both cases.
//
// The delay line has costs a bridge has not, and reports them
// (Network.DelayLineStats): the CPU of its engine thread, which includes
// the kernel's delivery of each frame it sends into the receiving namespace
// (the receiver's TCP runs in that thread's softirq), 50-130 µs a frame on
// a loaded 2-core VM where a system call alone costs ~10 µs; and how late
// after their release time frames leave (on a 2-core VM at load 20-30:
// 0.2-0.9 ms on average, 2-5 % of frames more than 1 ms late). A frame's
// delay counts from when the engine read it. It forwarded 186 Mbit/s of one
// TCP stream between two 200 Mbit/s links at 97 % of the payload rate.
// Node.Counters reads what each direction of a link carried, queued,
// dropped and lost, cheaply enough to sample several times a second.
//
// # Running processes in a node
//
// Node.Command returns an ordinary *exec.Cmd running `ip netns exec NS
// name args...`: ip(8) enters the namespace and then execs the program, so
// the process's PID, exit status, rusage and signals are the program's own,
// and Run, Output, Start, Wait and CommandContext's kill work as usual. This
// is chosen over switching namespaces around exec.Cmd.Start on a locked OS
// thread because the result is a plain exec.Cmd that composes with every
// caller's code (no wrapper type, no window in which a runtime thread is in
// another namespace while the child is being forked) and ip(8) is part of
// iproute2, which every machine with namespaces has. Sockets of the calling
// process itself are different: Node.DialContext, Node.Listen and Node.Do
// enter the node's namespace on a locked OS thread (setns(2) is per thread)
// only while the socket is created; a socket stays in the namespace it was
// created in, so the connection works from any goroutine afterwards. A
// harness reaches a daemon's loopback-only API that way without any of its
// traffic crossing a shaped link.
//
// # Lifetime and cleanup
//
// Names are "PREFIX-PID-START-RUN-NODE": PREFIX is Options.Prefix (default
// "netem"), PID and START (the process's start time in clock ticks since
// boot, base 36) identify the owner process even across PID reuse, RUN is
// random so one process may hold several networks. Close kills every process
// still inside the network's namespaces, then deletes them (and with them
// the veths and the bridge); it is idempotent. A caller that may be
// interrupted closes the network when its context ends (Ctrl-C) and on
// every error path. A run that was killed (kill -9) leaves its namespaces
// behind: Cleanup, called at the next start, deletes the namespaces of the
// prefix whose owner process is dead, killing processes left inside them,
// and reports what it removed. It never touches a namespace whose owner is
// alive, so concurrent runs of other users on the same machine are safe.
//
// Rates are in bytes per second; durations are time.Duration; Loss is a
// fraction (0.001 is 0.1 %).
package netem
