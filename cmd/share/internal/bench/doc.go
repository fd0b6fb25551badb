// Package bench is the harness behind `share bench`: it measures the
// client-server and the peer-to-peer mode of share on the same work, with
// real `share serve`, `share peer` and `share get` processes of the same
// binary on loopback, every process capped to the same upload rate so that
// loopback behaves like a network of equal links, and reports each figure
// beside its theoretical lower bound (Kurose and Ross, Computer Networking,
// section 2.5). It reads only what the daemons expose (their CLI output,
// HTTP API and Prometheus metrics); nothing in transfer, server or node
// exists for it, except node.Flood: the security scenario's flooding
// member, the hidden `share flood` (security.go), is a hostile libp2p host,
// and only node touches libp2p.
//
// On an emulated network (Options.Net) every process runs on a node of a
// netem network instead, and the kernel shapes each node's link. The
// bounds' capacities are then rates of file bytes: a link's u_i or d_i is
// its line rate × netem.PayloadFraction, the TCP payload of a full Ethernet
// frame (1448 of 1514 bytes, IPv4 and TCP with timestamps), because the
// shapers count whole frames, as a line does, and no TCP transfer gets more
// file bytes from a link than that; each point keeps its bound at line rate
// too (Point.LineBound). Each point samples every node's link counters
// (Emulation: uplink use and idle time, queue drops, packets lost, the delay
// line's CPU and lateness, which Cost leaves out: it counts the processes
// under test). The kernel is the cap there; every P2P uploader (share peer,
// aria2c) also limits its own upload to Options.Pace of its uplink, as a user
// on such a line should (DefaultPace says why), and the server does not.
package bench
