package netem

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// ErrNotRoot is returned by New when the process may not create network
// namespaces.
var ErrNotRoot = errors.New("netem: network namespaces need root (CAP_NET_ADMIN and CAP_SYS_ADMIN)")

// Defaults.
const (
	DefaultPrefix = "netem"
	bridgeName    = "br0"
	nodeIf        = "eth0" // the node's end of its veth
	mtu           = 1500
)

// DefaultSubnet is the address range of a network whose Options.Subnet is
// zero.
var DefaultSubnet = netip.MustParsePrefix("10.77.0.0/16")

// Options configures a Network. The zero value works.
type Options struct {
	// Prefix starts every namespace name, and Cleanup looks only at names
	// with it; "": DefaultPrefix. Letters, digits and '.' only.
	Prefix string
	// Subnet is the IPv4 range of the network: node k gets its k-th host
	// address. Zero: DefaultSubnet.
	Subnet netip.Prefix
	// Latency lets links have Delay, Jitter and Loss. Without it, links
	// have rates only and the hub is a kernel bridge. With it, the kernel's
	// netem qdisc adds them where the kernel has one; where it has none
	// (CONFIG_NET_SCH_NETEM unset), a delay line in this process does
	// (see DelayLine).
	Latency bool
}

// Delay lines: what adds Delay, Jitter and Loss to a network's links.
const (
	DelayNone      = "none"                 // a network without Options.Latency
	DelayNetem     = "kernel netem"         // sch_netem below HTB on each end
	DelayUserspace = "userspace delay line" // the switch in this process (the kernel has no netem)
)

// Network is a hub namespace with a bridge and the nodes attached to it.
// Its methods are safe for concurrent use.
type Network struct {
	name    string // PREFIX-PID-START-RUN
	subnet  netip.Prefix
	hub     *Node
	latency bool
	sw      *delaySwitch // the userspace delay line, or nil

	mu     sync.Mutex
	nodes  []*Node
	behind []*Node // hosts behind routers, not on the hub (nat.go)
	closed bool

	// neighMu orders the nodes' neighbour entries (see neighbours): a
	// node added while another is learns of it either way.
	neighMu  sync.Mutex
	attached []*Node // nodes with neighbour entries for each other
}

// Node is a host of the network: a namespace with one interface, eth0, on
// the hub's bridge.
type Node struct {
	name  string // as given to AddNode
	ns    string // the namespace's name (in /run/netns)
	addr  netip.Addr
	index int // 1-based; 0 for the hub
	net   *Network

	handle *netlink.Handle // a netlink socket inside the namespace
	nsfd   netns.NsHandle

	// Its veth's ends: eth0 in the node, hubIf(index) in the hub (nil
	// for the hub and hosts behind routers).
	eth0, hubEnd netlink.Link

	mu   sync.Mutex
	link Link
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.]{0,31}$`)

// New creates a network: its hub namespace and bridge. The caller must Close
// it. It returns ErrNotRoot without root.
func New(opts Options) (*Network, error) {
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	prefix := opts.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !regexp.MustCompile(`^[A-Za-z0-9.]{1,24}$`).MatchString(prefix) {
		return nil, fmt.Errorf("netem: prefix %q: want 1 to 24 letters, digits or dots", prefix)
	}
	subnet := opts.Subnet
	if !subnet.IsValid() {
		subnet = DefaultSubnet
	}
	if !subnet.Addr().Is4() || subnet.Bits() > 30 {
		return nil, fmt.Errorf("netem: subnet %v: want an IPv4 prefix of at most /30", subnet)
	}
	subnet = subnet.Masked()
	owner, err := ownerID(os.Getpid())
	if err != nil {
		return nil, err
	}
	var rb [3]byte
	rand.Read(rb[:])
	run := strconv.FormatUint(uint64(rb[0])<<16|uint64(rb[1])<<8|uint64(rb[2]), 36)
	n := &Network{name: prefix + "-" + owner + "-" + run, subnet: subnet, latency: opts.Latency}
	hub, err := n.newNamespace("hub")
	if err != nil {
		return nil, err
	}
	n.hub = hub
	if opts.Latency && !hasNetem(hub.handle) {
		if n.sw, err = newDelaySwitch(hub); err != nil {
			n.Close()
			return nil, err
		}
	}
	if err := n.setupHub(); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// Name returns the network's name, the prefix of its namespaces' names.
func (n *Network) Name() string { return n.name }

// Subnet returns the network's address range.
func (n *Network) Subnet() netip.Prefix { return n.subnet }

// DelayLine says what adds the links' Delay, Jitter and Loss: DelayNone,
// DelayNetem or DelayUserspace. Rates are always the kernel's (HTB).
func (n *Network) DelayLine() string {
	switch {
	case !n.latency:
		return DelayNone
	case n.sw != nil:
		return DelayUserspace
	}
	return DelayNetem
}

// Nodes returns the nodes in the order they were added.
func (n *Network) Nodes() []*Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.nodes)
}

func (n *Network) setupHub() error {
	h := n.hub.handle
	if err := linkUp(h, "lo"); err != nil {
		return err
	}
	if n.sw != nil {
		return nil // the switch joins the nodes
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridgeName, MTU: mtu}}
	if err := h.LinkAdd(br); err != nil {
		return fmt.Errorf("netem: add bridge: %w", err)
	}
	if err := h.LinkSetUp(br); err != nil {
		return fmt.Errorf("netem: bridge up: %w", err)
	}
	return nil
}

// AddNode creates a node: a namespace, a veth pair from its eth0 to the
// hub's bridge, the next address of the subnet on eth0 (with loopback up),
// and link's shaping on both ends. name is 1 to 32 characters of a-z, 0-9
// and '.', unique in the network.
func (n *Network) AddNode(name string, link Link) (*Node, error) {
	if !nameRE.MatchString(name) || name == "hub" {
		return nil, fmt.Errorf("netem: node name %q: want 1 to 32 of a-z, 0-9 and '.', not \"hub\"", name)
	}
	if err := link.validate(); err != nil {
		return nil, fmt.Errorf("netem: node %s: %w", name, err)
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, errors.New("netem: network closed")
	}
	if slices.ContainsFunc(n.nodes, func(d *Node) bool { return d.name == name }) {
		n.mu.Unlock()
		return nil, fmt.Errorf("netem: node %s exists", name)
	}
	index := len(n.nodes) + 1
	addr, ok := nthHost(n.subnet, index)
	if !ok {
		n.mu.Unlock()
		return nil, fmt.Errorf("netem: subnet %v is full", n.subnet)
	}
	// Reserve the slot; a failure below leaves a nil that Close skips.
	n.nodes = append(n.nodes, nil)
	n.mu.Unlock()

	d, err := n.newNamespace(name)
	if err != nil {
		return nil, err
	}
	d.index, d.addr = index, addr
	n.mu.Lock()
	n.nodes[index-1] = d
	n.mu.Unlock()
	if err := d.attach(link); err != nil {
		return nil, err
	}
	if err := d.SetLink(link); err != nil {
		return nil, err
	}
	if err := n.neighbours(d); err != nil {
		return nil, err
	}
	return d, nil
}

// neighbours gives d and every node already on the hub a permanent
// neighbour entry for each other (the address and MAC of its eth0), so that
// no node needs ARP. The kernel keeps one neighbour table for all network
// namespaces, and it holds gc_thresh3 (1024 by default) entries learned by
// ARP, but a cluster of N nodes that all talk to each other needs N^2: at
// N = 64 the table overflowed ("neighbour: arp_cache: neighbor table
// overflow!" in the kernel's log) and the nodes that resolved their
// neighbours last could open no connection at all for half a minute.
// Permanent entries are not counted against gc_thresh3 (Linux 4.19 and
// later), and a real host has a table of its own.
func (n *Network) neighbours(d *Node) error {
	n.neighMu.Lock()
	defer n.neighMu.Unlock()
	entry := func(on, of *Node) error {
		err := on.handle.NeighSet(&netlink.Neigh{
			LinkIndex:    on.eth0.Attrs().Index,
			Family:       netlink.FAMILY_V4,
			State:        netlink.NUD_PERMANENT,
			IP:           of.addr.AsSlice(),
			HardwareAddr: of.eth0.Attrs().HardwareAddr,
		})
		if err != nil {
			return fmt.Errorf("netem: node %s: neighbour entry for %s: %w", on.name, of.name, err)
		}
		return nil
	}
	for _, o := range n.attached {
		if err := entry(d, o); err != nil {
			return err
		}
		if err := entry(o, d); err != nil {
			return err
		}
	}
	n.attached = append(n.attached, d)
	return nil
}

// newNamespace creates the named namespace PREFIX-...-name with a netlink
// handle inside it.
func (n *Network) newNamespace(name string) (*Node, error) {
	d := &Node{name: name, ns: n.name + "-" + name, net: n}
	fd, err := newNamedNS(d.ns)
	if err != nil {
		return nil, fmt.Errorf("netem: create namespace %s: %w", d.ns, err)
	}
	d.nsfd = fd
	if d.handle, err = netlink.NewHandleAt(fd); err != nil {
		fd.Close()
		netns.DeleteNamed(d.ns)
		return nil, fmt.Errorf("netem: netlink in %s: %w", d.ns, err)
	}
	return d, nil
}

// newNamedNS creates a named network namespace without moving the calling
// goroutine's thread into it for longer than the call (netns.NewNamed enters
// the namespace it creates).
func newNamedNS(name string) (netns.NsHandle, error) {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return netns.None(), err
	}
	defer orig.Close()
	ns, err := netns.NewNamed(name)
	if e := netns.Set(orig); e != nil {
		// This thread is stuck in another namespace: leave it locked, so
		// the runtime ends it with this goroutine instead of reusing it.
		if ns.IsOpen() {
			ns.Close()
		}
		return netns.None(), fmt.Errorf("return to the original namespace: %w", e)
	}
	runtime.UnlockOSThread()
	return ns, err
}

// hubIf is the name of node index's veth end in the hub.
func hubIf(index int) string { return "n" + strconv.Itoa(index) }

// attach creates the node's veth pair, joins it to the bridge or the
// switch, and addresses it.
func (d *Node) attach(link Link) error {
	hub := d.net.hub.handle
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: hubIf(d.index), MTU: mtu},
		PeerName:      nodeIf,
		PeerNamespace: netlink.NsFd(d.nsfd),
	}
	if err := hub.LinkAdd(veth); err != nil {
		return fmt.Errorf("netem: node %s: add veth: %w", d.name, err)
	}
	hl, err := hub.LinkByName(hubIf(d.index))
	if err != nil {
		return fmt.Errorf("netem: node %s: %w", d.name, err)
	}
	nl, err := d.handle.LinkByName(nodeIf)
	if err != nil {
		return fmt.Errorf("netem: node %s: %w", d.name, err)
	}
	// IPv4 only: no IPv6 link-local addresses, router solicitations or
	// duplicate address detection on the emulated links.
	for _, ns := range []*Node{d, d.net.hub} {
		if err := ns.Do(func() error {
			return os.WriteFile("/proc/sys/net/ipv6/conf/all/disable_ipv6", []byte("1"), 0)
		}); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("netem: node %s: disable IPv6: %w", d.name, err)
		}
	}
	if sw := d.net.sw; sw != nil {
		sw.attach(d.index, hl.Attrs().Index, nl.Attrs().HardwareAddr, link)
	} else {
		br, err := hub.LinkByName(bridgeName)
		if err != nil {
			return fmt.Errorf("netem: node %s: %w", d.name, err)
		}
		if err := hub.LinkSetMaster(hl, br); err != nil {
			return fmt.Errorf("netem: node %s: attach to the bridge: %w", d.name, err)
		}
	}
	d.eth0, d.hubEnd = nl, hl
	if err := d.handle.AddrAdd(nl, &netlink.Addr{IPNet: ipNet(d.addr, d.net.subnet.Bits())}); err != nil {
		return fmt.Errorf("netem: node %s: address: %w", d.name, err)
	}
	for _, up := range []func() error{
		func() error { return hub.LinkSetUp(hl) },
		func() error { return d.handle.LinkSetUp(nl) },
		func() error { return linkUp(d.handle, "lo") },
	} {
		if err := up(); err != nil {
			return fmt.Errorf("netem: node %s: link up: %w", d.name, err)
		}
	}
	return nil
}

func linkUp(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return err
	}
	return h.LinkSetUp(l)
}

// Close kills every process still in the network's namespaces, then deletes
// them, with their veths and the bridge. It is idempotent and safe to call
// from any goroutine.
func (n *Network) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	nodes := append(slices.Clone(n.behind), n.nodes...)
	n.mu.Unlock()
	if n.sw != nil {
		n.sw.close()
	}
	var errs []error
	for _, d := range append(nodes, n.hub) {
		if d == nil {
			continue
		}
		if _, err := killIn(d.ns); err != nil {
			errs = append(errs, err)
		}
		d.handle.Close()
		d.nsfd.Close()
		if err := deleteNamed(d.ns); err != nil {
			errs = append(errs, fmt.Errorf("netem: delete %s: %w", d.ns, err))
		}
	}
	return errors.Join(errs...)
}

// Name returns the node's name as given to AddNode ("hub" for the hub).
func (d *Node) Name() string { return d.name }

// Namespace returns the name of the node's network namespace, as `ip netns`
// lists it.
func (d *Node) Namespace() string { return d.ns }

// Addr returns the node's address on the network.
func (d *Node) Addr() netip.Addr { return d.addr }

// Link returns the node's current link.
func (d *Node) Link() Link {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.link
}

// Command returns a command that runs name with args inside the node's
// namespace (`ip netns exec`). The process is the program itself (ip execs
// it): its PID, exit status and rusage are the program's.
func (d *Node) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", d.ns, name}, args...)...)
}

// CommandContext is Command with a context: the process is killed when ctx
// is done, as with exec.CommandContext.
func (d *Node) CommandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", d.ns, name}, args...)...)
}

// Do runs f on an OS thread that is inside the node's namespace. Sockets f
// creates belong to the namespace for their whole life; goroutines f starts
// do not run in it. f must not unlock the OS thread.
func (d *Node) Do(f func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := netns.Set(d.nsfd); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netem: enter %s: %w", d.ns, err)
	}
	ferr := f()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: the runtime ends it with the goroutine.
		return errors.Join(ferr, fmt.Errorf("netem: leave %s: %w", d.ns, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// DialContext connects to addr from inside the node's namespace, as a
// process in the node would: "127.0.0.1:PORT" is the node's own loopback.
func (d *Node) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := d.Do(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen listens on addr inside the node's namespace.
func (d *Node) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := d.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// ipNet returns addr/bits as a *net.IPNet.
func ipNet(addr netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: net.IP(addr.AsSlice()), Mask: net.CIDRMask(bits, 32)}
}

// nthHost returns the k-th host address of p (k = 1 is the first after the
// network address), keeping the last for the hub.
func nthHost(p netip.Prefix, k int) (netip.Addr, bool) {
	size := uint32(1) << (32 - p.Bits())
	if k < 1 || uint32(k) >= size-2 {
		return netip.Addr{}, false
	}
	b := p.Addr().As4()
	v := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) + uint32(k)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}
