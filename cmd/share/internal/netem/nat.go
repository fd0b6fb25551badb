package netem

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
)

// Homes behind NAT routers.
//
//	hub:  br0 ─── router's eth0 (WAN: an address of the network's subnet)
//	      router namespace: forwards and masquerades (nftables, RouterRules)
//	      router's lan0 (LAN.1) ═══ veth ═══ eth0 (LAN.2)  the home host
//
// The router does what a home router does (RouterRules): it forwards what the host sends
// to the network, rewriting the source to its own WAN address (masquerade),
// and lets in from the WAN only what conntrack knows as replies (established
// or related); anything else arriving on its WAN side is dropped, silently,
// so the host has no inbound path. Linux keeps the source port of a mapping
// when it is free and reuses the mapping for every destination
// (endpoint-independent mapping, a "full-cone"-like NAT with
// address-and-port-dependent filtering): hole punching works through it, as
// through most home routers. With HomeOptions.Symmetric it picks a random
// port for every connection ("masquerade random": endpoint-dependent
// mapping, a symmetric NAT), so the port a peer observes is useless to any
// other peer: hole punching fails, as behind many carrier-grade NATs.
//
// Peer-to-peer software ignores private addresses when it looks for a
// public one (libp2p's manet.IsPublicAddr: RFC 1918, RFC 6598 and the
// documentation ranges are private or unroutable), so a network whose
// routers are to be "on the internet" needs a subnet that counts as
// public: InternetSubnet. It is never routed on the real internet, and the
// network's namespaces have no route out anyway.

// InternetSubnet is a subnet to give a network that emulates the internet:
// 192.0.0.64/26 is part of 192.0.0.0/24, which IANA reserves for protocol
// assignments (RFC 6890: not globally reachable), yet libp2p counts it public
// (it excludes only 192.0.0.0/26).
var InternetSubnet = netip.MustParsePrefix("192.0.0.64/26")

// DefaultLAN is the home network of HomeOptions whose LAN is zero: every
// home has the same range, as real homes do.
var DefaultLAN = netip.MustParsePrefix("192.168.1.0/24")

// HomeOptions configures AddHome. The zero value is a port-preserving
// (cone) NAT in front of 192.168.1.0/24.
type HomeOptions struct {
	LAN       netip.Prefix // the home network; zero: DefaultLAN
	Symmetric bool         // a random port per connection: hole punching fails
}

// AddHome adds a home: a router node named name on the network (its link is
// link, its WAN address the next of the subnet) and a host behind it, named
// name+".lan", at the second address of the LAN with a default route through
// the router at the first. The host has no link of its own to shape: what
// it sends and receives crosses the router's. Close deletes both.
func (n *Network) AddHome(name string, link Link, opts HomeOptions) (router, host *Node, err error) {
	lan := opts.LAN
	if !lan.IsValid() {
		lan = DefaultLAN
	}
	if !lan.Addr().Is4() || lan.Bits() > 30 {
		return nil, nil, fmt.Errorf("netem: LAN %v: want an IPv4 prefix of at most /30", lan)
	}
	lan = lan.Masked()
	gw, _ := nthHost(lan, 1)
	hostAddr, _ := nthHost(lan, 2)
	router, err = n.AddNode(name, link)
	if err != nil {
		return nil, nil, err
	}
	host, err = n.newNamespace(name + ".lan")
	if err != nil {
		return nil, nil, err
	}
	host.addr = hostAddr
	n.mu.Lock()
	n.behind = append(n.behind, host)
	closed := n.closed
	n.mu.Unlock()
	if closed {
		return nil, nil, errors.New("netem: network closed")
	}
	if err := router.routeFor(host, gw, lan.Bits()); err != nil {
		return nil, nil, fmt.Errorf("netem: home %s: %w", name, err)
	}
	if err := router.nat(opts.Symmetric); err != nil {
		return nil, nil, fmt.Errorf("netem: home %s: %w", name, err)
	}
	return router, host, nil
}

// routeFor joins host to the router d by a veth pair (lan0 in d, eth0 in
// host), addresses both ends and gives host its default route through d.
func (d *Node) routeFor(host *Node, gw netip.Addr, bits int) error {
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: "lan0", MTU: mtu},
		PeerName:      nodeIf,
		PeerNamespace: netlink.NsFd(host.nsfd),
	}
	if err := d.handle.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth: %w", err)
	}
	rl, err := d.handle.LinkByName("lan0")
	if err != nil {
		return err
	}
	hl, err := host.handle.LinkByName(nodeIf)
	if err != nil {
		return err
	}
	if err := host.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/all/disable_ipv6", []byte("1"), 0)
	}); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("disable IPv6: %w", err)
	}
	if err := d.handle.AddrAdd(rl, &netlink.Addr{IPNet: ipNet(gw, bits)}); err != nil {
		return fmt.Errorf("router address: %w", err)
	}
	if err := host.handle.AddrAdd(hl, &netlink.Addr{IPNet: ipNet(host.addr, bits)}); err != nil {
		return fmt.Errorf("host address: %w", err)
	}
	for _, up := range []func() error{
		func() error { return d.handle.LinkSetUp(rl) },
		func() error { return host.handle.LinkSetUp(hl) },
		func() error { return linkUp(host.handle, "lo") },
	} {
		if err := up(); err != nil {
			return fmt.Errorf("link up: %w", err)
		}
	}
	if err := host.handle.RouteAdd(&netlink.Route{LinkIndex: hl.Attrs().Index, Gw: gw.AsSlice()}); err != nil {
		return fmt.Errorf("default route: %w", err)
	}
	return nil
}

// nat turns forwarding on in d and loads the router's rules (RouterRules).
func (d *Node) nat(symmetric bool) error {
	if err := d.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0)
	}); err != nil {
		return fmt.Errorf("forwarding: %w", err)
	}
	return RouterRules(int(d.nsfd), nodeIf, "lan0", symmetric)
}
