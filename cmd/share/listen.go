package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// parseListen turns what a user may type for a daemon's TCP address (serve
// --listen, peer --api) into HOST:PORT: a bare PORT means host defHost (""
// for all interfaces); a URL or a missing port is an error that shows what
// to write.
func parseListen(flag, s, defHost string) (string, error) {
	s = strings.TrimSpace(s)
	example := defHost + ":7070"
	if isPort(s) || s == "0" {
		return net.JoinHostPort(defHost, s), nil
	}
	if strings.Contains(s, "://") {
		return "", fmt.Errorf("%s %q: want an address, not a URL: HOST:PORT or :PORT, e.g. %s %s", flag, s, flag, example)
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("%s %q: want HOST:PORT, :PORT or PORT, e.g. %s %s", flag, s, flag, example)
	}
	if !isPort(port) && port != "0" {
		return "", fmt.Errorf("%s %q: %q is not a port number (0-65535), e.g. %s %s", flag, s, port, flag, example)
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		if _, err := net.LookupHost(host); err != nil {
			return "", fmt.Errorf("%s %q: no address of this machine is called %q; use an IP address, e.g. %s %s", flag, s, host, flag, example)
		}
	}
	return s, nil
}

// listenError explains why a daemon could not listen on addr, naming the
// flag to change.
func listenError(flag, addr string, err error) error {
	host, port, _ := net.SplitHostPort(addr)
	other := "7080"
	if p, e := strconv.Atoi(port); e == nil && p > 0 && p < 65535 {
		other = strconv.Itoa(p + 10)
	}
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		who := "another program (another share serve or share peer?)"
		lookup := host
		if lookup == "" || net.ParseIP(lookup) != nil && net.ParseIP(lookup).IsUnspecified() {
			lookup = "127.0.0.1"
		}
		if d, ok := lookupDaemon(&url.URL{Scheme: "http", Host: net.JoinHostPort(lookup, port)}); ok {
			who = "the share daemon of data directory " + d.Data
		}
		return fmt.Errorf("%s %s: the address is in use by %s; stop it, or choose another port: %s %s",
			flag, addr, who, flag, net.JoinHostPort(host, other))
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("%s %s: permission denied: ports below 1024 need root (or CAP_NET_BIND_SERVICE); choose a port above 1023, e.g. %s %s",
			flag, addr, flag, net.JoinHostPort(host, "7070"))
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("%s %s: no network interface of this machine has the address %s; use one it has, or :%s for all of them",
			flag, addr, host, port)
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		err = se.Err
	}
	return fmt.Errorf("%s %s: %w", flag, addr, err)
}

// checkPeerListen validates peer --listen multiaddrs before anything starts
// and makes sure each TCP and UDP port is free: libp2p's TCP transport binds
// with SO_REUSEPORT, so two peers could otherwise share one port and split
// its connections between them without a word, and libp2p starts if any one
// of its addresses works.
func checkPeerListen(addrs []string) error {
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return peerListenUsage(s, err)
		}
		isTCP, isQUIC := hasProto(a, ma.P_TCP), hasProto(a, ma.P_QUIC_V1)
		if !isTCP && !isQUIC {
			return usageError{fmt.Errorf("--listen %s: share peers listen on TCP (/ip4/ADDR/tcp/PORT) and QUIC (/ip4/ADDR/udp/PORT/quic-v1) only", s)}
		}
		na, err := manet.ToNetAddr(a.Decapsulate(ma.StringCast("/quic-v1")))
		if err != nil {
			return peerListenUsage(s, err)
		}
		var port int
		var probe func() error
		switch na := na.(type) {
		case *net.TCPAddr:
			port = na.Port
			probe = func() error {
				ln, err := net.ListenTCP("tcp", na)
				if err == nil {
					ln.Close()
				}
				return err
			}
		case *net.UDPAddr:
			port = na.Port
			probe = func() error {
				pc, err := net.ListenUDP("udp", na)
				if err == nil {
					pc.Close()
				}
				return err
			}
		default:
			continue
		}
		if port == 0 {
			continue
		}
		if err := probe(); err != nil {
			other := strconv.Itoa(port + 10)
			if errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("--listen %s: the port is in use by another program (another share peer?); stop it, or give this peer other ports: --listen /ip4/0.0.0.0/tcp/%s --listen /ip4/0.0.0.0/udp/%s/quic-v1",
					s, other, other)
			}
			return fmt.Errorf("--listen %s: %w", s, err)
		}
	}
	return nil
}

// peerListenUsage explains a --listen value that is not a multiaddr,
// showing the multiaddrs for the port it seems to mean.
func peerListenUsage(s string, err error) error {
	port := "7071"
	if isPort(s) {
		port = s
	} else if _, p, e := net.SplitHostPort(s); e == nil && isPort(p) {
		port = p
	}
	return usageError{fmt.Errorf("--listen %q: not a libp2p multiaddr (%v); a peer listens on multiaddrs, one per --listen: for TCP and QUIC on port %s of every interface, --listen /ip4/0.0.0.0/tcp/%s --listen /ip4/0.0.0.0/udp/%s/quic-v1",
		s, err, port, port, port)}
}

func hasProto(a ma.Multiaddr, code int) bool {
	_, err := a.ValueForProtocol(code)
	return err == nil
}
