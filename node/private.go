package node

// Private swarms: a pre-shared key and an allow-list of peer IDs.
//
// The swarm key is libp2p's private-network protector (go-libp2p p2p/net/pnet,
// the "PSK v1" of the libp2p pnet specification, as kubo uses it): every raw
// connection is wrapped in an XSalsa20 stream keyed by the 32-byte key, before
// the security handshake. A peer without the key (or with another key) sends
// and reads noise: its handshake fails and it never speaks a protocol, so it
// gets no byte of any share and never enters a routing table. The key file is
// kubo's swarm.key format:
//
//	/key/swarm/psk/1.0.0/
//	/base16/
//	<64 hex digits>
//
// libp2p can protect only transports that it encrypts and multiplexes itself
// (TCP, WebSocket); QUIC, WebTransport and WebRTC bring their own encryption
// and cannot carry the pre-shared key, so a private swarm is TCP only.
//
// The allow-list is a connection gater: a connection to or from a peer ID not
// on it is closed right after the security handshake (which proves the ID),
// before any protocol runs.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	ma "github.com/multiformats/go-multiaddr"
)

const (
	// swarmKeyHeader is the first line of a swarm key file (libp2p pnet PSK v1).
	swarmKeyHeader = "/key/swarm/psk/1.0.0/"
	// maxSwarmKeyFile bounds what is read of a swarm key file, in bytes: a
	// key in base16 with its header is 94.
	maxSwarmKeyFile = 4096
	// maxAllowFile bounds an allow-list file, in bytes (about 19,000 IDs).
	maxAllowFile = 1 << 20
	// SwarmKeyFile is the name `share keygen --swarm` writes by default.
	SwarmKeyFile = "swarm.key"
)

// ErrSwarmKeyExposed: a swarm key file others than its owner may read or
// write. Like ssh with a private key, a peer refuses to use it.
var ErrSwarmKeyExposed = errors.New("swarm key file is accessible to other users")

// NewSwarmKey returns a new random key in kubo's swarm.key format (base16).
func NewSwarmKey() ([]byte, error) {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return nil, err
	}
	return []byte(swarmKeyHeader + "\n/base16/\n" + hex.EncodeToString(k[:]) + "\n"), nil
}

// WriteSwarmKey writes a new swarm key to path with mode 0600. It never
// replaces a file: an existing key may be in use by a whole swarm.
func WriteSwarmKey(path string) (pnet.PSK, error) {
	b, err := NewSwarmKey()
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("%s exists: a swarm key is not replaced (remove it first if you mean to start a new swarm)", path)
		}
		return nil, err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	return ParseSwarmKey(b)
}

// ParseSwarmKey decodes a swarm key file's content: the PSK v1 header, an
// encoding line (/base16/, /base64/ or /bin/) and 32 bytes of key in that
// encoding. Text after the key must be blank (a pasted key cut short or run
// together with something else is an error, not a different key).
func ParseSwarmKey(b []byte) (pnet.PSK, error) {
	if len(b) > maxSwarmKeyFile {
		return nil, fmt.Errorf("not a swarm key: %d bytes (a key is under 100)", len(b))
	}
	if !bytes.HasPrefix(b, []byte(swarmKeyHeader)) {
		return nil, fmt.Errorf("not a swarm key: the first line must be %s", swarmKeyHeader)
	}
	psk, err := pnet.DecodeV1PSK(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("not a swarm key: %w", err)
	}
	// DecodeV1PSK reads exactly 32 bytes of key: check what follows.
	r := bufio.NewReader(bytes.NewReader(b))
	r.ReadString('\n')
	enc, _ := r.ReadString('\n')
	rest, _ := io.ReadAll(r)
	switch strings.TrimRight(enc, "\r\n") {
	case "/base16/":
		rest = bytes.TrimSpace(rest)
		if len(rest) != 64 {
			return nil, fmt.Errorf("not a swarm key: want 64 hex digits, got %d characters", len(rest))
		}
	case "/base64/":
		rest = bytes.TrimSpace(rest)
		if len(rest) != 44 {
			return nil, fmt.Errorf("not a swarm key: want 44 base64 characters, got %d", len(rest))
		}
	case "/bin/":
		if len(rest) < 32 || len(bytes.TrimSpace(rest[32:])) != 0 {
			return nil, fmt.Errorf("not a swarm key: want 32 bytes of key, got %d", len(rest))
		}
	}
	return psk, nil
}

// LoadSwarmKey reads and parses the swarm key file at path. It refuses a
// file that users other than its owner may read or write (mode & 0077),
// with ErrSwarmKeyExposed and the chmod that fixes it.
func LoadSwarmKey(path string) (pnet.PSK, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("swarm key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("swarm key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("swarm key %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o; run: chmod 600 %s", ErrSwarmKeyExposed, path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSwarmKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("swarm key: %w", err)
	}
	psk, err := ParseSwarmKey(b)
	if err != nil {
		return nil, fmt.Errorf("swarm key %s: %w", path, err)
	}
	return psk, nil
}

// SwarmKeyFingerprint names a key without revealing it: the first 8 bytes
// of its SHA-256, in hex. Two peers in the same private swarm show the same
// fingerprint.
func SwarmKeyFingerprint(psk pnet.PSK) string {
	if len(psk) == 0 {
		return ""
	}
	sum := sha256.Sum256(psk)
	return hex.EncodeToString(sum[:8])
}

// ParsePeerIDs parses peer IDs, one per line or separated by spaces or
// commas; '#' starts a comment. It is the allow-list file format.
func ParsePeerIDs(b []byte) ([]peer.ID, error) {
	var out []peer.ID
	for n, line := range strings.Split(string(b), "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		for _, f := range strings.FieldsFunc(line, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\r' }) {
			id, err := peer.Decode(f)
			if err != nil {
				return nil, fmt.Errorf("line %d: %q is not a peer ID: %w", n+1, f, err)
			}
			out = append(out, id)
		}
	}
	return out, nil
}

// ReadPeerIDs reads an allow-list file (see ParsePeerIDs).
func ReadPeerIDs(path string) ([]peer.ID, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxAllowFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxAllowFile {
		return nil, fmt.Errorf("%s: over %d bytes", path, maxAllowFile)
	}
	ids, err := ParsePeerIDs(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ids, nil
}

// allowList is a connmgr.ConnectionGater that lets only its peers connect
// (all peers, if ids is nil). It is read-only after creation, so safe for
// concurrent use.
type allowList struct {
	ids     map[peer.ID]bool // nil: everyone
	refused atomic.Int64     // connections refused, both directions
	// denyDial, if set, refuses to dial some addresses: tests use it to
	// make a peer on loopback reachable only through a relay, as behind a
	// NAT.
	denyDial func(peer.ID, ma.Multiaddr) bool
}

var _ connmgr.ConnectionGater = (*allowList)(nil)

func newAllowList(ids []peer.ID) *allowList {
	a := &allowList{ids: make(map[peer.ID]bool, len(ids))}
	for _, id := range ids {
		a.ids[id] = true
	}
	return a
}

func (a *allowList) allowed(p peer.ID) bool {
	if a.ids == nil || a.ids[p] {
		return true
	}
	a.refused.Add(1)
	return false
}

// InterceptPeerDial refuses to dial a peer not on the list.
func (a *allowList) InterceptPeerDial(p peer.ID) bool { return a.allowed(p) }

// InterceptAddrDial lets any address be dialled: the peer was checked.
func (a *allowList) InterceptAddrDial(p peer.ID, addr ma.Multiaddr) bool {
	return a.denyDial == nil || !a.denyDial(p, addr)
}

// InterceptAccept accepts every connection: who is at the other end is
// known only after the security handshake.
func (a *allowList) InterceptAccept(network.ConnMultiaddrs) bool { return true }

// InterceptSecured closes a connection, in either direction, whose
// authenticated peer is not on the list.
func (a *allowList) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return a.allowed(p)
}

// InterceptUpgraded lets a secured connection from an allowed peer run.
func (a *allowList) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

// PrivateStatus is what status shows of a private swarm.
type PrivateStatus struct {
	// SwarmKey is the key's fingerprint (SwarmKeyFingerprint); empty for a
	// public swarm.
	SwarmKey string `json:"swarm_key,omitempty"`
	// AllowPeers are the peers allowed to connect, if an allow-list is set
	// (the bootstrap peers and relays are added to it).
	AllowPeers []string `json:"allow_peers,omitempty"`
	// Refused counts connections the allow-list refused.
	Refused int64 `json:"refused,omitempty"`
	// Transports are those the peer listens and dials on: "tcp" only in a
	// private swarm (QUIC cannot carry a pre-shared key).
	Transports []string `json:"transports"`
}

// allowListFor builds the gater of opts.AllowPeers, with the peers this peer
// was told to connect to (bootstrap, relays) added: naming a peer's address
// is trusting it. Nil when there is nothing to gate.
func allowListFor(opts Options) (*allowList, error) {
	if len(opts.AllowPeers) == 0 {
		if opts.denyDial != nil {
			return &allowList{denyDial: opts.denyDial}, nil
		}
		return nil, nil
	}
	ids := append([]peer.ID(nil), opts.AllowPeers...)
	for _, list := range [][]string{opts.Bootstrap, opts.Relays} {
		infos, err := ParseBootstrap(list)
		if err != nil {
			return nil, err
		}
		for _, ai := range infos {
			ids = append(ids, ai.ID)
		}
	}
	a := newAllowList(ids)
	a.denyDial = opts.denyDial
	return a, nil
}

// privateStatus reports the swarm key, allow-list and transports.
func (n *Node) privateStatus() PrivateStatus {
	st := PrivateStatus{SwarmKey: SwarmKeyFingerprint(n.opts.SwarmKey), Transports: []string{"tcp"}}
	if len(n.opts.SwarmKey) == 0 {
		st.Transports = append(st.Transports, "quic-v1")
	}
	if n.gater != nil && n.gater.ids != nil {
		for id := range n.gater.ids {
			st.AllowPeers = append(st.AllowPeers, id.String())
		}
		slices.Sort(st.AllowPeers)
		st.Refused = n.gater.refused.Load()
	}
	return st
}

// listenAddrs returns the addresses to listen on: opts.Listen, or
// DefaultListen. With a swarm key, the default's QUIC address is left out,
// and an explicit non-TCP address is an error.
func listenAddrs(opts Options) ([]string, error) {
	if len(opts.SwarmKey) == 0 {
		if len(opts.Listen) == 0 {
			return DefaultListen, nil
		}
		return opts.Listen, nil
	}
	if len(opts.Listen) == 0 {
		var out []string
		for _, a := range DefaultListen {
			if !strings.Contains(a, "/udp/") {
				out = append(out, a)
			}
		}
		return out, nil
	}
	for _, a := range opts.Listen {
		m, err := ma.NewMultiaddr(a)
		if err != nil {
			return nil, fmt.Errorf("listen address %q: %w", a, err)
		}
		if _, err := m.ValueForProtocol(ma.P_TCP); err != nil {
			return nil, fmt.Errorf("listen address %s: a private swarm (swarm key) is TCP only: libp2p cannot protect QUIC, WebTransport or WebRTC with a pre-shared key", a)
		}
	}
	return opts.Listen, nil
}

// checkSwarmKey accepts no key (a public swarm) or a 32-byte one, the
// only length pnet takes.
func checkSwarmKey(psk pnet.PSK) error {
	if len(psk) != 0 && len(psk) != 32 {
		return fmt.Errorf("node: swarm key of %d bytes, want 32", len(psk))
	}
	return nil
}
