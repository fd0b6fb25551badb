package node

import (
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sharefiles/share/transfer"
)

const (
	// ProtocolID is the chunk protocol: one transfer.Request per stream.
	ProtocolID protocol.ID = "/share/chunk/1.0.0"
	// DHTPrefix keeps a share network's DHT apart from the public IPFS one:
	// its protocol is /share/kad/1.0.0, which IPFS nodes do not speak.
	DHTPrefix protocol.ID = "/share"

	DefaultReprovideInterval = 12 * time.Hour   // provider records live 48 h
	DefaultProvideTimeout    = 60 * time.Second // Provide blocks until every put is done
	DefaultLookupInterval    = 10 * time.Second // slowest re-lookup of providers while downloading
	DefaultFetchTimeout      = 30 * time.Second // finding a first provider and its manifest
	DefaultMaxStreamsPerPeer = 32               // chunk requests served at once to one peer
	DefaultConnLow           = 100              // connection manager: trim down to this...
	DefaultConnHigh          = 400              // ...when above this
	DefaultPerSource         = 8                // most chunk requests in flight per peer (on reused streams): fills a loopback or LAN link (BenchmarkOneToOne: 4-8 best, 16 worse)
	DefaultMaxInFlight       = 32               // chunk requests in flight per download

	identityFile = "identity.key"
)

// DefaultListen are the addresses a peer listens on: TCP and QUIC on 7071.
var DefaultListen = []string{"/ip4/0.0.0.0/tcp/7071", "/ip4/0.0.0.0/udp/7071/quic-v1"}

// Options configures a Node. Store and one of DataDir or Identity are
// required; the zero value of every other field works.
type Options struct {
	Store    *transfer.Store
	DataDir  string         // holds identity.key, the peer's key, so its ID survives restarts
	Identity crypto.PrivKey // overrides DataDir's key
	// Listen are multiaddrs to listen on; empty: DefaultListen.
	Listen []string
	// Bootstrap are full multiaddrs (ending in /p2p/ID) of peers to join
	// through. A peer without any starts a network of its own.
	Bootstrap []string
	// MDNS adds discovery of peers on the LAN by multicast DNS.
	MDNS bool
	// SwarmKey makes the peer a member of a private swarm (see private.go):
	// 32 bytes, from LoadSwarmKey; nil: a public swarm. A private swarm is
	// TCP only.
	SwarmKey pnet.PSK
	// AllowPeers, if not empty, are the only peers this peer connects to or
	// accepts, with its Bootstrap peers and Relays added.
	AllowPeers []peer.ID
	// Relays are full multiaddrs of relays to reserve a slot on when behind
	// a NAT; the Bootstrap peers that offer relaying are tried after them
	// (see nat.go).
	Relays []string
	// RelayService makes this peer relay connections for peers behind NATs
	// (circuit relay v2), within RelayLimits. Run it on a reachable peer.
	RelayService bool
	RelayLimits  RelayLimits
	// Reachability forces AutoNAT's verdict: network.ReachabilityPublic or
	// ReachabilityPrivate; the zero value (Unknown) lets AutoNAT find out.
	Reachability network.Reachability
	// UploadLimit caps chunk bytes sent to peers, DownloadLimit those received.
	UploadLimit, DownloadLimit *transfer.Limiter
	ReprovideInterval          time.Duration
	ProvideTimeout             time.Duration
	LookupInterval             time.Duration
	FetchTimeout               time.Duration
	MaxStreamsPerPeer          int
	ConnLow, ConnHigh          int
	// PerSource and MaxInFlight bound a swarm download's requests.
	PerSource, MaxInFlight int
	// MaxActive is how many peers a swarm download trades with at once (see
	// transfer.DownloadOptions.MaxActive); 0: transfer.DefaultMaxActive.
	MaxActive    int
	StallTimeout time.Duration // see transfer.DownloadOptions
	UserAgent    string
	Logger       *slog.Logger // nil: slog.Default()
	// Trace, if set, gets one Info record per scheduling event: the swarm
	// downloads' (transfer.DownloadOptions.Trace) and this peer's uploads'
	// ("serve busy", "serve send" with queued_us: the wait for the upload
	// slot, "serve sent" with bytes and size, "grant" and "grant expired":
	// room kept for a choked peer, see choke.go), each with the chunk and
	// the asking peer. Off (nil) by default; share peer --trace.
	Trace    *slog.Logger
	Registry prometheus.Registerer // nil: metrics are kept but not exported

	// denyDial, for tests: addresses this peer must not dial (see allowList).
	denyDial func(peer.ID, ma.Multiaddr) bool
	// tuneLimits, for tests: changes the resource manager's limits before
	// they are scaled (see resourceLimits).
	tuneLimits func(*rcmgr.ScalingLimitConfig)
}

// LoadIdentity returns the peer key kept in dataDir, creating it (Ed25519,
// mode 0600) on first use.
func LoadIdentity(dataDir string) (crypto.PrivKey, error) {
	path := filepath.Join(dataDir, identityFile)
	if b, err := os.ReadFile(path); err == nil {
		k, err := crypto.UnmarshalPrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return k, nil
	} else if !os.IsNotExist(err) {
		return nil, err
	}
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, err
	}
	b, err := crypto.MarshalPrivateKey(k)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	if err := transfer.WriteFileAtomic(path, b, 0o600); err != nil {
		return nil, err
	}
	return k, nil
}

// ParseBootstrap parses full multiaddrs (.../p2p/ID) into peers to dial.
func ParseBootstrap(addrs []string) ([]peer.AddrInfo, error) {
	byID := map[peer.ID]*peer.AddrInfo{}
	var order []peer.ID
	for _, s := range addrs {
		ai, err := peer.AddrInfoFromString(s)
		if err != nil {
			return nil, fmt.Errorf("bootstrap address %q: %w (want /ip4/HOST/tcp/PORT/p2p/PEERID)", s, err)
		}
		if have, ok := byID[ai.ID]; ok {
			have.Addrs = append(have.Addrs, ai.Addrs...)
			continue
		}
		byID[ai.ID] = ai
		order = append(order, ai.ID)
	}
	out := make([]peer.AddrInfo, 0, len(order))
	for _, id := range order {
		out = append(out, *byID[id])
	}
	return out, nil
}
