package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/sharefiles/share/transfer"
)

// Flood is a hostile member of a swarm: it measures, from outside a peer's
// process, what the limits of limits.go hold against (share bench's
// security scenario runs it as the hidden `share flood`). It is not a peer:
// it serves nothing and runs no DHT. With the swarm's key it connects to
// each target over TCP and, until ctx ends:
//
//   - StreamWorkers goroutines per target open streams that never
//     negotiate a protocol and hold each until the target resets it (its
//     per-peer inbound cap refuses them at once; those within the cap are
//     reset after negotiationTimeout);
//   - RequestWorkers goroutines per target ask for chunks of Share, each on
//     its own chunk-protocol stream, far beyond the target's MaxStreamsPerPeer
//     and upload room, ignoring "busy" (an honest peer waits with a long
//     poll): every answer is asked again at once; chunks sent are read and
//     dropped.
const (
	floodRetry       = 10 * time.Millisecond // after a stream could not be opened
	floodDialTimeout = 10 * time.Second
)

// FloodOptions configures Flood. Targets is required.
type FloodOptions struct {
	SwarmKey pnet.PSK       // the swarm's key (LoadSwarmKey); nil: a public swarm
	Identity crypto.PrivKey // nil: a new key
	// Targets are full multiaddrs (.../p2p/ID) of the peers to flood.
	Targets []string
	// StreamWorkers and RequestWorkers are per target; 0: none of that kind.
	StreamWorkers, RequestWorkers int
	// Share is what the requests ask for (its manifest first, for the
	// number of chunks); zero: RequestWorkers are not started.
	Share transfer.ID
	// Started, if not nil, is called once every target is connected, with
	// the flood's peer ID, before the flood begins.
	Started func(peer.ID)
}

// FloodStats is what a flood did, over all its targets.
type FloodStats struct {
	PeerID         string  `json:"peer_id"`
	Streams        int64   `json:"streams"`         // unnegotiated streams opened
	StreamsReset   int64   `json:"streams_reset"`   // of those, reset by the target
	StreamsFailed  int64   `json:"streams_failed"`  // streams that could not be opened
	Requests       int64   `json:"requests"`        // chunk requests sent
	Served         int64   `json:"served"`          // answered with a chunk
	Busy           int64   `json:"busy"`            // answered busy
	RequestsFailed int64   `json:"requests_failed"` // refused or broken otherwise (a stream refused by a limit)
	Bytes          int64   `json:"bytes_received"`  // chunk bytes read
	Seconds        float64 `json:"seconds"`         // from the first stream to the end
}

// floodCounters are FloodStats' counters while the flood runs.
type floodCounters struct {
	streams, reset, streamsFailed          atomic.Int64
	requests, served, busy, failed, nbytes atomic.Int64
}

// Flood floods opts.Targets until ctx ends, then returns what it did. It
// fails only if it cannot start: no target, or one it cannot connect to.
func Flood(ctx context.Context, opts FloodOptions) (FloodStats, error) {
	targets, err := ParseBootstrap(opts.Targets)
	if err != nil {
		return FloodStats{}, err
	}
	if len(targets) == 0 {
		return FloodStats{}, errors.New("flood: no target")
	}
	if err := checkSwarmKey(opts.SwarmKey); err != nil {
		return FloodStats{}, err
	}
	o := []libp2p.Option{
		libp2p.NoListenAddrs,
		libp2p.NoTransports,
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Security(noise.ID, noise.New),
		libp2p.ResourceManager(&network.NullResourceManager{}), // no limits of its own
		libp2p.UserAgent("share-flood"),
		libp2p.DisableMetrics(),
	}
	if opts.Identity != nil {
		o = append(o, libp2p.Identity(opts.Identity))
	}
	if len(opts.SwarmKey) > 0 {
		o = append(o, libp2p.PrivateNetwork(opts.SwarmKey))
	}
	h, err := libp2p.New(o...)
	if err != nil {
		return FloodStats{}, fmt.Errorf("flood: libp2p host: %w", err)
	}
	defer h.Close()
	for _, t := range targets {
		// Over TCP (yamux): QUIC caps a peer's open streams itself.
		var tcpAddrs []ma.Multiaddr
		for _, a := range t.Addrs {
			if _, err := a.ValueForProtocol(ma.P_TCP); err == nil {
				tcpAddrs = append(tcpAddrs, a)
			}
		}
		cctx, cancel := context.WithTimeout(ctx, floodDialTimeout)
		err := h.Connect(cctx, peer.AddrInfo{ID: t.ID, Addrs: tcpAddrs})
		cancel()
		if err != nil {
			return FloodStats{}, fmt.Errorf("flood: connect to %s: %w (is the swarm key the target's?)", t.ID, err)
		}
	}
	var chunks int
	if !opts.Share.IsZero() && opts.RequestWorkers > 0 {
		if chunks, err = floodChunks(ctx, h, targets[0].ID, opts.Share); err != nil {
			return FloodStats{}, err
		}
	}
	if opts.Started != nil {
		opts.Started(h.ID())
	}
	var c floodCounters
	var wg sync.WaitGroup
	start := time.Now()
	for _, t := range targets {
		for range opts.StreamWorkers {
			wg.Go(func() { floodStreams(ctx, h, t.ID, &c) })
		}
		if chunks > 0 {
			for k := range opts.RequestWorkers {
				wg.Go(func() { floodRequests(ctx, h, t.ID, opts.Share, chunks, k, &c) })
			}
		}
	}
	wg.Wait()
	return FloodStats{
		PeerID:  h.ID().String(),
		Streams: c.streams.Load(), StreamsReset: c.reset.Load(), StreamsFailed: c.streamsFailed.Load(),
		Requests: c.requests.Load(), Served: c.served.Load(), Busy: c.busy.Load(), RequestsFailed: c.failed.Load(),
		Bytes: c.nbytes.Load(), Seconds: time.Since(start).Seconds(),
	}, nil
}

// floodChunks returns the number of chunks of share id, from pid's manifest.
func floodChunks(ctx context.Context, h host.Host, pid peer.ID, id transfer.ID) (int, error) {
	src := floodSource(h, pid)
	defer src.Close()
	ctx, cancel := context.WithTimeout(ctx, floodDialTimeout)
	defer cancel()
	raw, err := src.Manifest(ctx, id)
	if err != nil {
		return 0, fmt.Errorf("flood: manifest of %s from %s: %w", id, pid, err)
	}
	m, err := transfer.VerifyManifest(id, raw)
	if err != nil {
		return 0, fmt.Errorf("flood: manifest of %s from %s: %w", id, pid, err)
	}
	return m.NumChunks(), nil
}

// floodSource asks pid over one chunk-protocol stream at a time.
func floodSource(h host.Host, pid peer.ID) *transfer.StreamSource {
	return &transfer.StreamSource{
		Name:  "flood " + pid.String(),
		Lanes: 1,
		Open: func(ctx context.Context) (transfer.Stream, error) {
			return h.NewStream(ctx, pid, ProtocolID)
		},
	}
}

// floodStreams opens streams to pid that never negotiate, one at a time,
// each held until pid resets it, until ctx ends.
func floodStreams(ctx context.Context, h host.Host, pid peer.ID, c *floodCounters) {
	for ctx.Err() == nil {
		s, err := h.Network().NewStream(ctx, pid) // raw: no multistream
		if err != nil {
			c.streamsFailed.Add(1)
			sleepCtx(ctx, floodRetry)
			continue
		}
		c.streams.Add(1)
		stop := context.AfterFunc(ctx, func() { s.Reset() })
		io.Copy(io.Discard, s) // until the target resets it
		stop()
		s.Reset()
		if ctx.Err() == nil {
			c.reset.Add(1)
		}
	}
}

// floodRequests asks pid for chunks of id, starting at chunk k, and asks
// again at once whatever the answer, until ctx ends.
func floodRequests(ctx context.Context, h host.Host, pid peer.ID, id transfer.ID, chunks, k int, c *floodCounters) {
	src := floodSource(h, pid)
	defer src.Close()
	for i := k; ctx.Err() == nil; i++ {
		c.requests.Add(1)
		rc, err := src.OpenChunk(ctx, id, i%chunks)
		switch {
		case err == nil:
			n, _ := io.Copy(io.Discard, rc)
			rc.Close()
			c.served.Add(1)
			c.nbytes.Add(n)
		case ctx.Err() != nil:
			c.requests.Add(-1) // not answered: the flood ended
		case errors.Is(err, transfer.ErrBusy):
			c.busy.Add(1)
		default:
			c.failed.Add(1)
			sleepCtx(ctx, floodRetry)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
