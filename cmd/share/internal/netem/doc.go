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
// an unshaped link.
//
// # Shaping
//
// A node's Link is applied as egress shaping on both ends of its veth pair
// (the kernel shapes only what a device sends): on the node's eth0 for what
// it uploads (Link.Up) and on the hub's end for what it downloads
// (Link.Down). Each end gets an HTB qdisc whose one class has the rate as
// its rate and ceiling (the layout Mininet's TCLink uses). The rate counts
// whole Ethernet frames (HTB charges skb->len, headers included): TCP over
// IPv4 with timestamps carries at most 1448 bytes of payload per 1514-byte
// frame, so TCP goodput is at most 95.6 % of the rate (HTB charges a GSO
// segment the headers of each packet in it). Segmentation offload stays on:
// turning it off costs 16 times the CPU per byte on this project's VMs
// (iperf3 over a veth pair: 164 Mbit/s with one packet per segment, 2.6
// Gbit/s with GSO), and TCP sizes its segments to about 1 ms at its pacing
// rate, so at residential rates a segment is one or two packets anyway; at
// LAN rates a segment of up to 44 packets is lost, delayed and queued as
// one. Each end queues Link.Queue worth of packets at its rate (default 100
// ms, at least 64 packets); a full queue drops, as a router's would.
//
// Delay, Jitter and Loss need Options.Latency. A packet from node A to
// node B is delayed by A's Delay plus B's Delay, so the round trip between
// A and B is 2 × (A.Delay + B.Delay): two nodes of Delay 7.5 ms have a 30 ms
// RTT; loss applies likewise on both links. Where the kernel has the netem
// qdisc, a netem qdisc below each HTB class adds them (DelayNetem). Where it
// has none (kernels built without CONFIG_NET_SCH_NETEM, as the 6.18
// Firecracker kernel this project's machines run), the hub has no bridge:
// a switch in the calling process joins the hub ends (AF_PACKET sockets,
// frames forwarded by destination MAC) and holds each frame until its
// release time before sending it on (DelayUserspace): one engine thread
// at nice -10 waits on all ports and on a timerfd, so the load under test
// does not delay the delay line. The rates stay the kernel's in both cases;
// the switch costs CPU in the calling process (one receive and one send per
// frame) and adds its wake-up latency (0.3-0.5 ms per round trip measured
// on a loaded 2-core machine) to the delay; it forwarded 789 Mbit/s of one
// TCP stream between two 1 Gbit/s links where the bridge gave 951.
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
