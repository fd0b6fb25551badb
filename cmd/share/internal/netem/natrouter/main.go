// Command natrouter is the home router of the docker-compose demo
// "between homes" (profile p2p-nat): the image has no shell and no nft(8),
// so this small static program does what a router container needs, with
// netem's rules, and then waits to be stopped.
//
//	natrouter router --lan 10.201.1.0/24 [--symmetric]
//	    forward and masquerade from the interface on the LAN to the other
//	    one (the WAN), letting in only replies (netem.RouterRules); needs
//	    CAP_NET_ADMIN and net.ipv4.ip_forward=1 (compose: sysctls)
//	natrouter gateway --via 10.201.1.254
//	    make the router the default gateway of this network namespace,
//	    which the home's peer shares (network_mode: service:...); needs
//	    CAP_NET_ADMIN
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/sharefiles/share/cmd/share/internal/netem"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "natrouter:", err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: natrouter router --lan PREFIX [--symmetric] | natrouter gateway --via ADDR")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	switch args[0] {
	case "router":
		lan := fs.String("lan", "", "the home network's prefix")
		symmetric := fs.Bool("symmetric", false, "a random port per connection (a symmetric NAT)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		p, err := netip.ParsePrefix(*lan)
		if err != nil {
			return fmt.Errorf("--lan: %w", err)
		}
		lanIf, wanIf, err := interfaces(p)
		if err != nil {
			return err
		}
		if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); err != nil || strings.TrimSpace(string(b)) != "1" {
			return errors.New("IPv4 forwarding is off: give the container the sysctl net.ipv4.ip_forward=1")
		}
		if err := netem.RouterRules(-1, wanIf, lanIf, *symmetric); err != nil {
			return err
		}
		fmt.Printf("routing %s (%s) to %s, masquerading (symmetric: %v)\n", lanIf, p, wanIf, *symmetric)
	case "gateway":
		via := fs.String("via", "", "the router's address on this network")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		gw, err := netip.ParseAddr(*via)
		if err != nil {
			return fmt.Errorf("--via: %w", err)
		}
		if err := netem.SetDefaultRoute(gw); err != nil {
			return err
		}
		fmt.Printf("default route via %s\n", gw)
	default:
		return fmt.Errorf("unknown command %q", args[0])
	}
	return nil
}

// interfaces returns the interface with an address in lan, and the other
// one that is up and not loopback (the WAN).
func interfaces(lan netip.Prefix) (lanIf, wanIf string, err error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", "", err
	}
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback != 0 || i.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, _ := i.Addrs()
		onLAN := false
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP); ok && lan.Contains(ip.Unmap()) {
					onLAN = true
				}
			}
		}
		if onLAN {
			lanIf = i.Name
		} else if len(addrs) > 0 {
			wanIf = i.Name
		}
	}
	if lanIf == "" || wanIf == "" {
		return "", "", fmt.Errorf("want one interface on %v and another: found LAN %q, WAN %q", lan, lanIf, wanIf)
	}
	return lanIf, wanIf, nil
}
