package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sharefiles/share/transfer"
)

// Node is a share peer: a libp2p host with a DHT, serving the shares of its
// store to other peers and fetching shares from them. Create it with New and
// stop it with Close; it is safe for concurrent use.
type Node struct {
	opts  Options
	log   *slog.Logger
	host  host.Host
	dht   *dht.IpfsDHT
	store *transfer.Store
	m     *metrics

	ctx    context.Context // the node's lifetime; Close cancels it
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the node starts
	mdns   io.Closer      // nil unless Options.MDNS
	nat    *nat           // NAT traversal state; see nat.go
	gater  *allowList     // nil unless Options.AllowPeers; see private.go
	guard  *streamGuard   // counts and logs refused streams; see limits.go

	provideQ  chan transfer.ID // announcements to make; see discovery.go
	slotBytes int64            // see uploadSlotBytes
	uploads   *uploads         // upload capacity and the peers waiting for it; see choke.go

	// Each lock guards its own state, so that the per-chunk paths (serving a
	// request, storing a chunk) do not contend on one lock: mu the downloads
	// and closing, sharesMu the per-share state (whose counters are atomic),
	// inboundMu the requests being served.
	mu        sync.RWMutex
	downloads map[transfer.ID]*swarmDownload // swarm downloads running
	closed    bool

	sharesMu sync.RWMutex
	shares   map[transfer.ID]*shareState

	inboundMu sync.Mutex
	inbound   map[peer.ID]int // chunk-protocol requests being served, per peer
}

// shareState is what the node keeps of one share besides its store state:
// what status shows, and how it is seeded.
type shareState struct {
	up, down  atomic.Int64 // chunk bytes sent and received
	fromSeed  atomic.Int64 // chunks received from a seed (a peer holding every chunk)
	fromPeers atomic.Int64 // chunks received from other downloaders

	mu        sync.Mutex // guards the fields below
	providers map[peer.ID]bool
	recent    map[peer.ID]time.Time // peers that asked for it lately: see pex.go
	provided  time.Time             // last successful announcement
	lastErr   string                // of the last swarm download
	seeding   *seeding              // once served complete; see seeding.go
}

// share returns the state of share id, creating it.
func (n *Node) share(id transfer.ID) *shareState {
	n.sharesMu.RLock()
	st, ok := n.shares[id]
	n.sharesMu.RUnlock()
	if ok {
		return st
	}
	n.sharesMu.Lock()
	defer n.sharesMu.Unlock()
	if st, ok = n.shares[id]; !ok {
		st = &shareState{providers: map[peer.ID]bool{}, recent: map[peer.ID]time.Time{}}
		n.shares[id] = st
	}
	return st
}

// quicDelay is how long a dial waits for TCP before it also tries QUIC.
//
// Why TCP first: both transports are enabled (QUIC gets through where TCP
// does not), but one raw 256 MiB stream on loopback (BenchmarkRawStream)
// moved 757-878 MB/s over TCP+TLS+yamux at 1.9-2.2 CPU-s/GiB against
// 317-387 MB/s at 4.9-6.1 CPU-s/GiB over QUIC, on this project's 2-core AMD
// EPYC machines; on 2-vCPU Xeons at 2.5 GHz without SHA extensions, one raw
// 1 GiB stream moved ~750 MB/s over TCP+TLS+yamux (1.1 CPU-s/GiB per end)
// against ~265 MB/s over QUIC (3.5 CPU-s/GiB per end). libp2p's default
// ranker prefers QUIC, so we dial TCP at once and QUIC only after this
// delay. Security: TLS before Noise. They tie on the EPYC (869-899 MB/s for
// Noise), but on those Xeons TLS was 1.5x faster (~750 against ~500 MB/s).
const quicDelay = 250 * time.Millisecond

// tcpFirst is the dial ranker described at quicDelay; relayed addresses
// come last (relayDelay).
func tcpFirst(addrs []ma.Multiaddr) []network.AddrDelay {
	out := make([]network.AddrDelay, 0, len(addrs))
	for _, a := range addrs {
		d := quicDelay
		if _, err := a.ValueForProtocol(ma.P_TCP); err == nil {
			d = 0
		}
		if isRelayAddr(a) {
			d = relayDelay
		}
		out = append(out, network.AddrDelay{Addr: a, Delay: d})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Delay < out[j].Delay })
	return out
}

// New starts a peer: its host, DHT and background work. It returns once the
// host listens; joining the network through Bootstrap goes on in the
// background. Close it when done.
func New(ctx context.Context, opts Options) (*Node, error) {
	if opts.Store == nil {
		return nil, errors.New("node: no store")
	}
	key := opts.Identity
	if key == nil {
		if opts.DataDir == "" {
			return nil, errors.New("node: no data directory for the identity key")
		}
		var err error
		if key, err = LoadIdentity(opts.DataDir); err != nil {
			return nil, err
		}
	}
	if err := checkSwarmKey(opts.SwarmKey); err != nil {
		return nil, err
	}
	listen, err := listenAddrs(opts)
	if err != nil {
		return nil, err
	}
	opts.Listen = listen
	opts.ReprovideInterval = cmp.Or(opts.ReprovideInterval, DefaultReprovideInterval)
	opts.ProvideTimeout = cmp.Or(opts.ProvideTimeout, DefaultProvideTimeout)
	opts.LookupInterval = cmp.Or(opts.LookupInterval, DefaultLookupInterval)
	opts.FetchTimeout = cmp.Or(opts.FetchTimeout, DefaultFetchTimeout)
	opts.MaxStreamsPerPeer = cmp.Or(opts.MaxStreamsPerPeer, DefaultMaxStreamsPerPeer)
	opts.ConnLow = cmp.Or(opts.ConnLow, DefaultConnLow)
	opts.ConnHigh = cmp.Or(opts.ConnHigh, DefaultConnHigh)
	opts.PerSource = cmp.Or(opts.PerSource, DefaultPerSource)
	opts.MaxInFlight = cmp.Or(opts.MaxInFlight, DefaultMaxInFlight)
	opts.UserAgent = cmp.Or(opts.UserAgent, "share")
	boot, err := ParseBootstrap(opts.Bootstrap)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}

	gater, err := allowListFor(opts)
	if err != nil {
		return nil, err
	}
	relays, err := relayCandidates(opts)
	if err != nil {
		return nil, err
	}
	nt := newNAT()
	guard := newStreamGuard(log)
	h, err := newHost(key, opts, gater, guard, natOptions(opts, nt, relays))
	if err != nil {
		return nil, err
	}
	// ModeAutoServer: a DHT server, unless AutoNAT finds the peer behind a
	// NAT, where others could not reach it: then a client. The routing
	// table is refreshed by joinLoop (discovery.go), not at start by the
	// DHT itself: see there.
	d, err := dht.New(h, dht.Mode(dht.ModeAutoServer), dht.ProtocolPrefix(DHTPrefix), dht.BootstrapPeers(boot...), dht.DisableAutoRefresh())
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("node: DHT: %w", err)
	}
	nctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n := &Node{
		opts: opts, log: log, host: h, dht: d, store: opts.Store, nat: nt, gater: gater, guard: guard,
		ctx: nctx, cancel: cancel,
		provideQ:  make(chan transfer.ID, provideQueueLen),
		slotBytes: uploadSlotBytes(opts.UploadLimit),
		downloads: map[transfer.ID]*swarmDownload{},
		shares:    map[transfer.ID]*shareState{},
		inbound:   map[peer.ID]int{},
	}
	n.uploads = newUploads(n.slotBytes, opts.UploadLimit == nil, n.offerDigest)
	n.uploads.trace = opts.Trace
	if opts.Trace != nil {
		opts.Trace.Info("peer", "id", h.ID())
	}
	reg := opts.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if n.m, err = newMetrics(reg, n); err != nil {
		n.Close()
		return nil, err
	}
	if err := n.startNAT(); err != nil {
		n.Close()
		return nil, err
	}
	h.SetStreamHandler(ProtocolID, n.handleStream)
	h.SetStreamHandler(PEXProtocolID, n.handlePEX)
	h.Network().Notify(&network.NotifyBundle{DisconnectedF: func(_ network.Network, c network.Conn) { n.peerGone(c.RemotePeer()) }})
	// A chunk found damaged on disk is fetched again from the swarm.
	n.store.OnDamaged(func(sh *transfer.Share, _ int) { n.ensureDownload(sh, nil) })
	n.wg.Go(n.offerLoop)
	n.startDiscovery(boot)
	// Resume downloads a previous run left partial, and announce everything.
	for _, sh := range n.store.List() {
		n.announce(sh.ID())
		if !sh.Complete() {
			n.ensureDownload(sh, nil)
		}
	}
	log.Info("peer started", "id", h.ID(), "addrs", h.Addrs(), "bootstrap", len(boot), "shares", len(n.store.List()))
	return n, nil
}

// newHost makes the libp2p host: TCP and QUIC (TCP only with a swarm
// key), TLS and Noise, our resource and connection managers, the allow-list
// gater if any, and the options of NAT traversal; its refused streams are
// counted by guard, and its streams' negotiation is bounded (limits.go).
func newHost(key crypto.PrivKey, opts Options, gater *allowList, guard *streamGuard, extra []libp2p.Option) (host.Host, error) {
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(resourceLimits(opts.MaxStreamsPerPeer, opts.tuneLimits)))
	if err != nil {
		return nil, fmt.Errorf("node: resource manager: %w", err)
	}
	cm, err := connmgr.NewConnManager(opts.ConnLow, opts.ConnHigh, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		return nil, fmt.Errorf("node: connection manager: %w", err)
	}
	o := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.ListenAddrStrings(opts.Listen...),
		libp2p.NoTransports,
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(libp2ptls.ID, newBatchedTLS), // tlsbatch.go
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, chunkMuxer), // muxer.go
		libp2p.ResourceManager(guardedRM{rm, guard}),
		libp2p.ConnectionManager(cm),
		libp2p.SwarmOpts(swarm.WithDialRanker(tcpFirst)),
		libp2p.UserAgent(opts.UserAgent),
		libp2p.DisableMetrics(), // ours are in metrics.go; libp2p's would register globally
	}
	if len(opts.SwarmKey) > 0 {
		o = append(o, libp2p.PrivateNetwork(opts.SwarmKey)) // QUIC cannot carry it
	} else {
		o = append(o, libp2p.Transport(libp2pquic.NewTransport))
	}
	if gater != nil {
		o = append(o, libp2p.ConnectionGater(gater))
	}
	h, err := libp2p.New(append(o, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("node: libp2p host: %w", err)
	}
	if err := limitNegotiation(h, guard); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// ID returns the peer's ID.
func (n *Node) ID() peer.ID { return n.host.ID() }

// Addrs returns the peer's full multiaddrs (with /p2p/ID), which others can
// pass to --bootstrap.
func (n *Node) Addrs() []ma.Multiaddr {
	addrs, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: n.host.ID(), Addrs: n.host.Addrs()})
	if err != nil {
		return nil
	}
	return addrs
}

// Host returns the libp2p host, for tests and benchmarks.
func (n *Node) Host() host.Host { return n.host }

// Close stops the peer: downloads stop (their chunks stay stored), streams
// are reset, the host shuts down. It is idempotent.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	n.cancel()
	if n.mdns != nil {
		n.mdns.Close()
	}
	n.wg.Wait()
	err := errors.Join(n.closeNAT(), n.dht.Close(), n.host.Close())
	n.log.Info("peer stopped", "id", n.host.ID())
	return err
}

// The methods below make a Node the backend of the peer's local HTTP API.

// List returns the shares held, complete or partial.
func (n *Node) List() []*transfer.Share { return n.store.List() }

// Get returns a share held, or transfer.ErrNotFound.
func (n *Node) Get(id transfer.ID) (*transfer.Share, error) { return n.store.Get(id) }

// Create makes a partial share for a client's chunked upload, and announces it.
func (n *Node) Create(m *transfer.Manifest) (*transfer.Share, bool, error) {
	sh, created, err := n.store.Create(m)
	if err == nil {
		n.announce(sh.ID())
	}
	return sh, created, err
}

// Import stores an uploaded file, and announces it.
func (n *Node) Import(ctx context.Context, name string, r io.Reader, opts transfer.ImportOptions) (*transfer.Share, error) {
	sh, err := n.store.Import(ctx, name, r, opts)
	if err == nil {
		n.announce(sh.ID())
	}
	return sh, err
}

// Remove stops a download of the share if one runs, deletes the share and
// stops announcing it (its provider records expire; until then requests for
// it get "not found").
func (n *Node) Remove(id transfer.ID) error {
	n.mu.RLock()
	if sw, ok := n.downloads[id]; ok {
		sw.cancel()
	}
	n.mu.RUnlock()
	n.sharesMu.Lock()
	delete(n.shares, id)
	n.sharesMu.Unlock()
	err := n.store.Remove(id)
	n.uploads.changed() // polls for it learn it is gone
	return err
}

// LocalCopy tells a client on this machine where the store keeps a share
// (the local API's GET /v1/shares/{id}/local), so that it links or copies
// the files itself instead of receiving them again.
func (n *Node) LocalCopy(id transfer.ID) (transfer.LocalCopy, error) {
	sh, err := n.store.Get(id)
	if err != nil {
		return transfer.LocalCopy{}, err
	}
	return sh.LocalCopy()
}

// Verify scrubs shares of the store (transfer.Store.Verify); a chunk found
// damaged is fetched again from the swarm.
func (n *Node) Verify(ctx context.Context, ids []transfer.ID, lim *transfer.Limiter) ([]transfer.VerifyResult, error) {
	return n.store.Verify(ctx, ids, lim)
}

// DamagedChunks returns how many stored chunks were found damaged on disk
// (transfer.Store.DamagedChunks).
func (n *Node) DamagedChunks() int64 { return n.store.DamagedChunks() }

// WaitHave lets the API's long poll wait for the swarm download's chunks.
func (n *Node) WaitHave(ctx context.Context, id transfer.ID, chunks int, known uint32) (transfer.Bitfield, error) {
	return n.store.WaitHave(ctx, id, chunks, known)
}

var _ transfer.HaveWaiter = (*Node)(nil)
