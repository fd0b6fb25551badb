package node

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sharefiles/share/transfer"
)

// How one peer is kept from using up what all peers share.
//
// Every inbound stream counts against its peer's limit and, until it has
// negotiated a protocol, against the transient scope, which all peers
// share; once negotiated, against the system scope and its protocol's. So:
//
//   - a peer's inbound streams are capped at what an honest peer needs
//     (peerStreamsInbound: its chunk-protocol streams, two per request it
//     may have served at once, and otherStreamsInbound for the DHT, peer
//     exchange, identify and the rest), and that cap does not grow with
//     our memory;
//   - the transient pool is half the system pool, and both are at least
//     minPeersToExhaust times a peer's cap (4096 and 2048 streams for the
//     smallest machine, more with memory: libp2p's autoscaling), so it
//     takes that many peer IDs at once to fill them. One IPv4 address may
//     hold at most 8 connections (the resource manager's per-/32 limit,
//     loopback excepted), hence at most 8 peer IDs: one host alone cannot;
//   - a stream that has not negotiated within negotiationTimeout is reset,
//     so that what a flood holds it holds briefly (libp2p's default is 10 s);
//   - streams refused by a limit, reset unnegotiated, or answered busy for
//     want of memory are counted (share_peer_streams_refused_total, by
//     reason) and logged at most once per peer per refusalLogEvery.
const (
	otherStreamsInbound = 64                                // a peer's inbound streams other than the chunk protocol's
	minPeersToExhaust   = 16                                // peers needed at once to fill the transient pool
	negotiationTimeout  = 5 * time.Second                   // an honest stream negotiates in one round trip
	refusalLogEvery     = time.Minute                       // per peer
	maxRefusalLogPeers  = 1024                              // peers whose last refusal log is remembered
	chunkMemoryPerPeer  = 64 << 20                          // bytes: serving MaxStreamsPerPeer × SendBufSize plus receiving DefaultLanes × MaxChunkSize, with the headroom of reservation priorities
	chunkMemoryBase     = 256 << 20                         // bytes: the chunk protocol's memory over all peers, on the smallest machine...
	chunkMemoryPerGiB   = 256 << 20                         // ...plus this per GiB libp2p may use (1/8 of RAM)
	streamMemory        = 32 << 20                          // bytes per stream: a MaxChunkSize chunk fits at high priority (80%)
	pexStreamsPerPeer   = 4                                 // peer exchange: one request at a time, with room
	pexMemoryPerPeer    = 1 << 20                           // bytes
	serveReservePrio    = network.ReservationPriorityMedium // serving: the asker can ask again or elsewhere
	fetchReservePrio    = network.ReservationPriorityHigh   // receiving a chunk we asked for
)

// Refusal reasons, the label of share_peer_streams_refused_total.
const (
	refusedLimit       = "limit"       // the resource manager refused an inbound stream or its protocol
	refusedNegotiation = "negotiation" // reset before it negotiated a protocol (timeout or failure)
	refusedMemory      = "memory"      // a chunk-protocol memory reservation refused: a request answered busy, or a response dropped
	refusedBusy        = "busy"        // the peer had MaxStreamsPerPeer chunk requests in progress
)

// peerStreamsInbound is a peer's inbound stream cap for a chunk-protocol
// cap of maxStreamsPerPeer requests served at once.
func peerStreamsInbound(maxStreamsPerPeer int) int {
	return 2*maxStreamsPerPeer + otherStreamsInbound
}

// scalingLimits are the resource manager's limits before autoscaling: see
// the comment on the constants above. libp2p's defaults (and its services'
// limits) otherwise.
func scalingLimits(maxStreamsPerPeer int) rcmgr.ScalingLimitConfig {
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)

	perPeer := peerStreamsInbound(maxStreamsPerPeer)
	limits.PeerBaseLimit.StreamsInbound = perPeer
	limits.PeerLimitIncrease.StreamsInbound = 0
	transient := max(limits.TransientBaseLimit.StreamsInbound, minPeersToExhaust*perPeer)
	limits.TransientBaseLimit.StreamsInbound = transient
	limits.TransientLimitIncrease.StreamsInbound = limits.SystemLimitIncrease.StreamsInbound / 2
	limits.TransientBaseLimit.Streams = transient + limits.TransientBaseLimit.StreamsOutbound
	limits.TransientLimitIncrease.Streams = limits.TransientLimitIncrease.StreamsInbound + limits.TransientLimitIncrease.StreamsOutbound
	system := max(limits.SystemBaseLimit.StreamsInbound, 2*transient)
	limits.SystemBaseLimit.StreamsInbound = system
	limits.SystemBaseLimit.Streams = system + limits.SystemBaseLimit.StreamsOutbound
	limits.SystemLimitIncrease.Streams = limits.SystemLimitIncrease.StreamsInbound + limits.SystemLimitIncrease.StreamsOutbound
	limits.AllowlistedTransientBaseLimit = limits.TransientBaseLimit
	limits.AllowlistedTransientLimitIncrease = limits.TransientLimitIncrease
	limits.AllowlistedSystemBaseLimit = limits.SystemBaseLimit
	limits.AllowlistedSystemLimitIncrease = limits.SystemLimitIncrease
	limits.StreamBaseLimit.Memory = streamMemory

	chunkPerPeer := 2 * maxStreamsPerPeer // requests we serve, plus the long polls and requests we make
	limits.AddProtocolPeerLimit(ProtocolID, rcmgr.BaseLimit{
		StreamsInbound:  chunkPerPeer,
		StreamsOutbound: chunkPerPeer,
		Streams:         2 * chunkPerPeer,
		Memory:          chunkMemoryPerPeer,
	}, rcmgr.BaseLimitIncrease{})
	limits.AddProtocolLimit(ProtocolID, rcmgr.BaseLimit{
		StreamsInbound:  4096,
		StreamsOutbound: 4096,
		Streams:         8192,
		Memory:          chunkMemoryBase,
	}, rcmgr.BaseLimitIncrease{Memory: chunkMemoryPerGiB})
	limits.AddProtocolPeerLimit(PEXProtocolID, rcmgr.BaseLimit{
		StreamsInbound:  pexStreamsPerPeer,
		StreamsOutbound: pexStreamsPerPeer,
		Streams:         2 * pexStreamsPerPeer,
		Memory:          pexMemoryPerPeer,
	}, rcmgr.BaseLimitIncrease{})
	return limits
}

// resourceLimits are the limits in force: scalingLimits autoscaled (1/8 of
// RAM, half the file descriptors), changed by tune if not nil (tests).
func resourceLimits(maxStreamsPerPeer int, tune func(*rcmgr.ScalingLimitConfig)) rcmgr.ConcreteLimitConfig {
	limits := scalingLimits(maxStreamsPerPeer)
	if tune != nil {
		tune(&limits)
	}
	return limits.AutoScale()
}

// streamGuard counts and logs the streams refused (see the constants
// above). It is safe for concurrent use.
type streamGuard struct {
	log     *slog.Logger
	refused *prometheus.CounterVec // by reason

	mu     sync.Mutex
	logged map[peer.ID]*refusalLog
}

type refusalLog struct {
	last   time.Time      // of the last log line
	missed map[string]int // refusals since, by reason
}

func newStreamGuard(log *slog.Logger) *streamGuard {
	return &streamGuard{
		log: log,
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "share_peer_streams_refused_total",
			Help: `Inbound streams refused or reset, by reason: "limit" (the resource manager's per-peer, transient or protocol limit), "negotiation" (no protocol negotiated in time, or negotiation failed), "memory" (a chunk-protocol memory reservation refused: a request served answered busy, or a response received dropped), "busy" (the peer had too many chunk requests in progress).`,
		}, []string{"reason"}),
		logged: map[peer.ID]*refusalLog{},
	}
}

// refuse counts a refusal of pid's stream and logs it, at most once per
// peer per refusalLogEvery (with the count of those not logged since).
func (g *streamGuard) refuse(pid peer.ID, reason string, err error) {
	g.refused.WithLabelValues(reason).Inc()
	now := time.Now()
	g.mu.Lock()
	l, ok := g.logged[pid]
	if ok && now.Sub(l.last) < refusalLogEvery {
		l.missed[reason]++
		g.mu.Unlock()
		return
	}
	if !ok && len(g.logged) >= maxRefusalLogPeers {
		for p, l := range g.logged {
			if now.Sub(l.last) >= refusalLogEvery {
				delete(g.logged, p)
			}
		}
		if len(g.logged) >= maxRefusalLogPeers {
			g.mu.Unlock()
			return // counted; too many peers refused this minute to log each
		}
	}
	var missed map[string]int
	if ok {
		missed = l.missed
	}
	g.logged[pid] = &refusalLog{last: now, missed: map[string]int{}}
	g.mu.Unlock()
	args := []any{"peer", pid, "reason", reason}
	if err != nil {
		args = append(args, "err", err)
	}
	if len(missed) > 0 {
		args = append(args, "since_last_log", missed)
	}
	g.log.Warn("refused a peer's stream (logged once a minute per peer; see share_peer_streams_refused_total)", args...)
}

// guardedRM is the resource manager with inbound refusals counted.
type guardedRM struct {
	network.ResourceManager
	g *streamGuard
}

func (rm guardedRM) OpenStream(p peer.ID, dir network.Direction) (network.StreamManagementScope, error) {
	s, err := rm.ResourceManager.OpenStream(p, dir)
	if dir != network.DirInbound {
		return s, err
	}
	if err != nil {
		rm.g.refuse(p, refusedLimit, err)
		return nil, err
	}
	return guardedScope{s, p, rm.g}, nil
}

// guardedScope is an inbound stream's scope, with a refusal by its
// protocol's limits counted.
type guardedScope struct {
	network.StreamManagementScope
	pid peer.ID
	g   *streamGuard
}

func (s guardedScope) SetProtocol(proto protocol.ID) error {
	err := s.StreamManagementScope.SetProtocol(proto)
	if err != nil {
		s.g.refuse(s.pid, refusedLimit, fmt.Errorf("protocol %s: %w", proto, err))
	}
	return err
}

// limitNegotiation resets inbound streams that have not negotiated a
// protocol within negotiationTimeout, and counts those reset unnegotiated.
// (libp2p's own timeout, 10 s, is not an option of libp2p.New.)
func limitNegotiation(h host.Host, g *streamGuard) error {
	sw, ok := h.Network().(*swarm.Swarm)
	if !ok {
		return fmt.Errorf("node: the host's network is a %T, not a swarm: cannot bound stream negotiation", h.Network())
	}
	negotiate := sw.StreamHandler()
	sw.SetStreamHandler(func(s network.Stream) {
		var timedOut atomic.Bool
		t := time.AfterFunc(negotiationTimeout, func() {
			if s.Protocol() == "" {
				timedOut.Store(true)
				s.ResetWithError(network.StreamProtocolNegotiationFailed)
			}
		})
		negotiate(s) // negotiates, then runs the protocol's handler
		t.Stop()
		if s.Protocol() == "" {
			var err error
			if timedOut.Load() {
				err = fmt.Errorf("no protocol negotiated in %v", negotiationTimeout)
			}
			g.refuse(s.Conn().RemotePeer(), refusedNegotiation, err)
		}
	})
	return nil
}

// reservingSource reserves a chunk's send buffer on the stream's scope
// before serving it, and releases it when the chunk was sent: the resource
// manager's memory limits for the chunk protocol bound what serving takes.
// A refused reservation answers the request busy.
type reservingSource struct {
	transfer.Source
	n     *Node
	pid   peer.ID
	scope network.StreamScope
}

func (s reservingSource) OpenChunk(ctx context.Context, id transfer.ID, i int) (io.ReadCloser, error) {
	if err := s.scope.ReserveMemory(transfer.SendBufSize, serveReservePrio); err != nil {
		s.n.guard.refuse(s.pid, refusedMemory, err)
		return nil, fmt.Errorf("%w: %w", transfer.ErrBusy, err)
	}
	rc, err := s.Source.OpenChunk(ctx, id, i)
	if err != nil {
		s.scope.ReleaseMemory(transfer.SendBufSize)
		return nil, err
	}
	if _, ok := rc.(interface{ Size() int64 }); !ok { // not a store's reader: nothing to hold while ServeStream asks the length
		s.scope.ReleaseMemory(transfer.SendBufSize)
		return rc, nil
	}
	return &releasingReader{ReadCloser: rc, release: func() { s.scope.ReleaseMemory(transfer.SendBufSize) }}, nil
}

// WaitHave passes the long poll on, if the source has it.
func (s reservingSource) WaitHave(ctx context.Context, id transfer.ID, chunks int, known uint32) (transfer.Bitfield, error) {
	if w, ok := s.Source.(transfer.HaveWaiter); ok {
		return w.WaitHave(ctx, id, chunks, known)
	}
	return s.Source.Have(ctx, id, chunks)
}

// releasingReader releases a reservation when closed; it keeps the chunk's
// Size (ServeStream needs it).
type releasingReader struct {
	io.ReadCloser
	release func()
	once    sync.Once
}

func (r *releasingReader) Size() int64 { return r.ReadCloser.(interface{ Size() int64 }).Size() }

func (r *releasingReader) Close() error {
	r.once.Do(r.release)
	return r.ReadCloser.Close()
}
