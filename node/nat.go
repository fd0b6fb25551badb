package node

// NAT traversal with go-libp2p's own services.
//
//   - AutoNAT (v1, /libp2p/autonat/1.0.0): every peer runs the service, which
//     dials back a peer's public observed address on request, and the client,
//     which asks connected peers to do so. A peer learns it is reachable
//     (public) or behind a NAT (private); until then it is "unknown". Only
//     public addresses are probed, so on a LAN or a private container network
//     a peer stays "unknown" and everything works as without NAT traversal.
//     (AutoNAT v2 confirms each address with several servers; a swarm of a
//     few peers would rarely reach a verdict with it.)
//   - Circuit relay v2 (/libp2p/circuit/relay/0.2.0/hop): a reachable peer
//     started with RelayService relays for others, within RelayLimits. A peer
//     that AutoNAT finds private reserves a slot on its relays (Options.Relays,
//     then its bootstrap peers that offer relaying) and advertises
//     .../p2p/RELAY/p2p-circuit addresses, so that others can reach it.
//   - DCUtR hole punching (/libp2p/dcutr): when a peer is reached through a
//     relay, the two peers exchange their observed public addresses over the
//     relayed connection and dial each other at the same moment (TCP
//     simultaneous open, from the listening port thanks to SO_REUSEPORT, or
//     QUIC), which opens both NATs' mappings. libp2p hole punches only to
//     public addresses (manet.IsPublicAddr), and needs each peer's observed
//     address from identify: both peers must be connected to a public peer.
//
// What goes over a relay: a relayed connection with limits (the default:
// 128 KiB each way and 2 minutes per connection, libp2p's
// relayv2.DefaultLimit) is "limited": libp2p opens streams on it only when
// asked. share asks only for the small requests of the chunk protocol
// (manifest and which chunks a peer has) and libp2p for the hole punch;
// chunk requests wait up to holePunchWait for a direct connection, and
// then fail with ErrRelayOnly, which names the relay, its limits and the
// hole punch's outcome. A download whose every source is relay-only stalls
// with that reason. A relay started with RelayLimits.Unlimited sets no limit:
// its relayed connections are ordinary ones, and carry chunks, at the
// relay's bandwidth cost. Chunk transfers always prefer a direct connection
// (libp2p picks an unlimited direct connection over a relayed one), and once
// a direct connection to a peer is up, limited relayed connections to it are
// closed, freeing the relay's slot.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/autorelay"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sharefiles/share/transfer"
)

// holePunchWait is how long a chunk request to a peer reachable only
// through a relay waits for a direct connection. DCUtR makes up to 3
// attempts of at most 10 s each after identify; one takes about a round
// trip when it works. (A variable for tests.)
var holePunchWait = 30 * time.Second

const (
	// directGrace is how long a limited relayed connection to a peer stays
	// open once a direct one is up: long enough for the hole punch's own
	// stream to end.
	directGrace = 2 * time.Second
	// relayBackoff is how long autorelay waits before asking a candidate that
	// refused a reservation (or does not relay) again.
	relayBackoff = time.Minute
	// relayDelay is how long a dial tries a peer's direct addresses before
	// its relayed ones (libp2p's default dial ranker waits as long).
	relayDelay = 500 * time.Millisecond
	// maxPunchErrors bounds the per-peer memory of hole punch failures.
	maxPunchErrors = 1024
)

// ErrRelayOnly: a peer is connected only through a relay with limits, and
// chunk requests need a direct connection. Retrying later may succeed (a
// new relayed connection tries the hole punch again).
var ErrRelayOnly = errors.New("peer reachable only through a limited relay")

// RelayLimits bound what a relay service (Options.RelayService) carries:
// circuit relay v2 resources. The zero value is libp2p's defaults
// (relayv2.DefaultResources): 128 KiB each way and 2 minutes per relayed
// connection, 128 reservations, 16 relayed connections per peer.
type RelayLimits struct {
	Data            int64         // bytes per relayed connection and direction; 0: 128 KiB
	Duration        time.Duration // lifetime of a relayed connection; 0: 2 min
	MaxReservations int           // peers holding a slot at once; 0: 128
	MaxCircuits     int           // relayed connections per peer at once; 0: 16
	// Unlimited relays without any data or time limit: relayed connections
	// are then not "limited", and chunk transfers go through the relay when
	// hole punching fails.
	Unlimited bool
}

func (l RelayLimits) resources() relayv2.Resources {
	rc := relayv2.DefaultResources()
	if l.Unlimited {
		rc.Limit = nil
	} else {
		if l.Data > 0 {
			rc.Limit.Data = l.Data
		}
		if l.Duration > 0 {
			rc.Limit.Duration = l.Duration
		}
	}
	if l.MaxReservations > 0 {
		rc.MaxReservations = l.MaxReservations
	}
	if l.MaxCircuits > 0 {
		rc.MaxCircuits = l.MaxCircuits
	}
	return rc
}

// String says what the limits allow, for logs and status.
func (l RelayLimits) String() string {
	rc := l.resources()
	if rc.Limit == nil {
		return fmt.Sprintf("no limit per relayed connection; %d reservations, %d relayed connections per peer", rc.MaxReservations, rc.MaxCircuits)
	}
	return fmt.Sprintf("%s each way and %v per relayed connection; %d reservations, %d relayed connections per peer",
		humanize.IBytes(uint64(rc.Limit.Data)), rc.Limit.Duration, rc.MaxReservations, rc.MaxCircuits)
}

// nat is a Node's NAT traversal state.
type nat struct {
	relay        *relayv2.Relay // nil unless Options.RelayService
	reachability atomic.Int32   // network.Reachability, from AutoNAT
	punch        *punchTracer
	bytes        *prometheus.CounterVec // chunk-protocol bytes, by direction and path
	direct       atomic.Int64           // the same bytes, both directions, for status
	relayed      atomic.Int64
	limitedConns prometheus.Counter // streams of the chunk protocol opened on limited connections
}

func newNAT() *nat {
	return &nat{
		punch: newPunchTracer(),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "share_peer_path_bytes_total",
			Help: `Chunk-protocol bytes, by direction (sent, received) and path: "direct" or "relayed" (through a circuit relay).`,
		}, []string{"direction", "path"}),
		limitedConns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "share_peer_limited_streams_total",
			Help: "Chunk-protocol streams for manifests and have lists opened over limited relayed connections.",
		}),
	}
}

func (t *nat) collectors() []prometheus.Collector {
	return []prometheus.Collector{t.bytes, t.limitedConns, t.punch.tries, t.punch.directDials}
}

// natOptions are the host options of NAT traversal: the relay transport,
// the AutoNAT service, hole punching, autorelay over the given candidates,
// and a forced reachability if opts asks for one.
func natOptions(opts Options, t *nat, candidates []peer.AddrInfo) []libp2p.Option {
	o := []libp2p.Option{
		libp2p.EnableRelay(),
		libp2p.EnableNATService(),
		libp2p.EnableHolePunching(holepunch.WithTracer(t.punch)),
	}
	switch opts.Reachability {
	case network.ReachabilityPublic:
		o = append(o, libp2p.ForceReachabilityPublic())
	case network.ReachabilityPrivate:
		o = append(o, libp2p.ForceReachabilityPrivate())
	}
	if len(candidates) > 0 {
		o = append(o, libp2p.EnableAutoRelayWithPeerSource(relaySource(candidates),
			autorelay.WithMinCandidates(1),
			autorelay.WithNumRelays(min(len(candidates), 2)),
			autorelay.WithBootDelay(0),
			autorelay.WithBackoff(relayBackoff),
			autorelay.WithMinInterval(5*time.Second),
		))
	}
	return o
}

// relayCandidates returns the peers to try for a relay reservation: the
// relays named, then the bootstrap peers (autorelay keeps those that speak
// the relay protocol and grant a reservation).
func relayCandidates(opts Options) ([]peer.AddrInfo, error) {
	relays, err := ParseBootstrap(opts.Relays)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	boot, err := ParseBootstrap(opts.Bootstrap)
	if err != nil {
		return nil, err
	}
	seen := map[peer.ID]bool{}
	var out []peer.AddrInfo
	for _, ai := range append(relays, boot...) {
		if !seen[ai.ID] {
			seen[ai.ID] = true
			out = append(out, ai)
		}
	}
	return out, nil
}

// relaySource is an autorelay.PeerSource over a fixed list.
func relaySource(list []peer.AddrInfo) autorelay.PeerSource {
	return func(ctx context.Context, num int) <-chan peer.AddrInfo {
		ch := make(chan peer.AddrInfo, min(num, len(list)))
		for _, ai := range list[:min(num, len(list))] {
			ch <- ai
		}
		close(ch)
		return ch
	}
}

// startNAT starts the relay service if asked, and follows reachability and
// relay reservations (logging each change) and new direct connections.
func (n *Node) startNAT() error {
	if n.opts.RelayService {
		ropts := []relayv2.Option{relayv2.WithResources(n.opts.RelayLimits.resources())}
		if n.opts.RelayLimits.Unlimited {
			ropts = append(ropts, relayv2.WithInfiniteLimits())
		}
		r, err := relayv2.New(n.host, ropts...)
		if err != nil {
			return fmt.Errorf("node: relay service: %w", err)
		}
		n.nat.relay = r
		n.log.Info("relay service on", "limits", n.opts.RelayLimits.String())
	}
	sub, err := n.host.EventBus().Subscribe([]any{new(event.EvtLocalReachabilityChanged), new(event.EvtAutoRelayAddrsUpdated)})
	if err != nil {
		return fmt.Errorf("node: event bus: %w", err)
	}
	n.wg.Go(func() {
		defer sub.Close()
		for {
			select {
			case e, ok := <-sub.Out():
				if !ok {
					return
				}
				switch e := e.(type) {
				case event.EvtLocalReachabilityChanged:
					n.nat.reachability.Store(int32(e.Reachability))
					msg := map[network.Reachability]string{
						network.ReachabilityPublic:  "reachable from the internet",
						network.ReachabilityPrivate: "behind a NAT: reserving a relay slot, so that peers can reach this one",
					}[e.Reachability]
					n.log.Info("reachability", "status", reachabilityName(e.Reachability), "means", cmp.Or(msg, "not known yet"))
				case event.EvtAutoRelayAddrsUpdated:
					n.log.Info("relay addresses", "addrs", e.RelayAddrs)
				}
			case <-n.ctx.Done():
				return
			}
		}
	})
	n.host.Network().Notify(&network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		if !c.Stat().Limited && !isRelayed(c) {
			n.closeLimitedSoon(c.RemotePeer())
		}
	}})
	return nil
}

// closeLimitedSoon closes the limited relayed connections to p after
// directGrace, now that a direct one is up.
func (n *Node) closeLimitedSoon(p peer.ID) {
	var limited []network.Conn
	for _, c := range n.host.Network().ConnsToPeer(p) {
		if c.Stat().Limited {
			limited = append(limited, c)
		}
	}
	if len(limited) == 0 {
		return
	}
	n.wg.Go(func() {
		select {
		case <-time.After(directGrace):
		case <-n.ctx.Done():
			return
		}
		for _, c := range limited {
			n.log.Debug("closing relayed connection: direct connection up", "peer", p, "via", c.RemoteMultiaddr())
			c.Close()
		}
	})
}

func (n *Node) closeNAT() error {
	if n.nat.relay != nil {
		return n.nat.relay.Close()
	}
	return nil
}

func reachabilityName(r network.Reachability) string {
	switch r {
	case network.ReachabilityPublic:
		return "public"
	case network.ReachabilityPrivate:
		return "private"
	}
	return "unknown"
}

// ParseReachability parses "auto" (or ""), "public" or "private".
func ParseReachability(s string) (network.Reachability, error) {
	switch s {
	case "", "auto":
		return network.ReachabilityUnknown, nil
	case "public":
		return network.ReachabilityPublic, nil
	case "private":
		return network.ReachabilityPrivate, nil
	}
	return 0, fmt.Errorf("reachability %q: want auto, public or private", s)
}

// isRelayed reports whether c goes through a circuit relay.
func isRelayed(c network.Conn) bool { return isRelayAddr(c.RemoteMultiaddr()) }

func isRelayAddr(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}

func pathOf(c network.Conn) string {
	if isRelayed(c) {
		return "relayed"
	}
	return "direct"
}

// newStream opens a chunk-protocol stream to pid, dialling it if need be,
// also when libp2p's swarm keeps pid's addresses in dial backoff. That
// backoff (5 s + 1 s × tries², up to 5 min: p2p/net/swarm/swarm_dial.go) is
// for dials that anyone may trigger, such as a DHT query's; a download
// dials a source only when its own policy says to ask it again (the
// picker's backoff and active set, transfer/picker.go), and a source that
// was down or overloaded a minute ago may serve now: a download must not
// stay without it for minutes (measured: a peer of a 64-peer swarm on two
// cores never got a chunk, every dial of it answered "dial backoff"). So a
// dial refused for backoff clears pid's backoff and is tried once more.
func (n *Node) newStream(ctx context.Context, pid peer.ID) (network.Stream, error) {
	s, err := n.host.NewStream(ctx, pid, ProtocolID)
	if err == nil || !errors.Is(err, swarm.ErrDialBackoff) || ctx.Err() != nil {
		return s, err
	}
	sw, ok := n.host.Network().(interface{ Backoff() *swarm.DialBackoff })
	if !ok {
		return s, err
	}
	sw.Backoff().Clear(pid)
	n.m.dialBackoffCleared.Inc()
	return n.host.NewStream(ctx, pid, ProtocolID)
}

// openControlStream opens a chunk-protocol stream for manifest and have
// requests: these are small, and may go through a limited relay.
func (n *Node) openControlStream(ctx context.Context, pid peer.ID) (transfer.Stream, error) {
	s, err := n.newStream(network.WithAllowLimitedConn(ctx, "share: manifest and have requests are small"), pid)
	if err != nil {
		return nil, streamError(err)
	}
	if s.Conn().Stat().Limited {
		n.nat.limitedConns.Inc()
	}
	return peerStream{n.countStream(s, "received"), n.guard}, nil
}

// openChunkStream opens a chunk-protocol stream for chunk requests: over a
// direct connection, or a relayed one without limits. If the peer is
// connected only through a limited relay, it waits up to holePunchWait for
// the hole punch, then fails with ErrRelayOnly.
func (n *Node) openChunkStream(ctx context.Context, pid peer.ID) (transfer.Stream, error) {
	s, err := n.newStream(network.WithDialPeerTimeout(ctx, holePunchWait), pid)
	if err != nil {
		if rerr := n.relayOnlyError(pid); rerr != nil && ctx.Err() == nil {
			return nil, rerr
		}
		return nil, streamError(err)
	}
	return peerStream{n.countStream(s, "received"), n.guard}, nil
}

// relayOnlyError explains why chunks cannot come from pid, if it is
// connected only through limited relays; nil otherwise.
func (n *Node) relayOnlyError(pid peer.ID) error {
	conns := n.host.Network().ConnsToPeer(pid)
	if len(conns) == 0 {
		return nil
	}
	var via []string
	for _, c := range conns {
		if !c.Stat().Limited {
			return nil
		}
		via = append(via, relayDescription(c))
	}
	why := "no hole punch was tried (it needs both peers to know their public address: are they connected to a public peer?)"
	if e := n.nat.punch.lastError(pid); e != "" {
		why = "hole punching failed: " + e
	} else if n.nat.punch.tried(pid) {
		why = "hole punching has not succeeded yet"
	}
	return fmt.Errorf("%w: %s is connected only through %s; chunks go over direct connections only, and %s (waited %v)",
		ErrRelayOnly, pid, strings.Join(via, ", "), why, holePunchWait)
}

// relayDescription names the relay of a limited connection and its limits.
func relayDescription(c network.Conn) string {
	relay := "a relay"
	if s := c.RemoteMultiaddr().String(); strings.Contains(s, "/p2p-circuit") {
		relay = "relay " + strings.TrimSuffix(s[:strings.Index(s, "/p2p-circuit")], "/")
	}
	extra := c.Stat().Extra
	d, _ := extra[client.StatLimitDuration].(time.Duration)
	b, _ := extra[client.StatLimitData].(uint64)
	if d == 0 && b == 0 {
		return relay + " (limited)"
	}
	return fmt.Sprintf("%s, which allows %s each way and %v per relayed connection", relay, humanize.IBytes(b), d)
}

// countStream counts the bytes of a chunk-protocol stream by path: reads
// as dir ("received" for the side that asks, "sent" for the side that
// serves; the other direction is requests).
func (n *Node) countStream(s network.Stream, dir string) network.Stream {
	path := pathOf(s.Conn())
	total := &n.nat.direct
	if path == "relayed" {
		total = &n.nat.relayed
	}
	return &countedStream{Stream: s, reads: dir != "sent", c: n.nat.bytes.WithLabelValues(dir, path), total: total}
}

// countedStream adds the bytes read (reads) or else written to c and total.
type countedStream struct {
	network.Stream
	reads bool
	c     prometheus.Counter
	total *atomic.Int64
}

func (s *countedStream) Read(p []byte) (int, error) {
	k, err := s.Stream.Read(p)
	if s.reads && k > 0 {
		s.c.Add(float64(k))
		s.total.Add(int64(k))
	}
	return k, err
}

func (s *countedStream) Write(p []byte) (int, error) {
	k, err := s.Stream.Write(p)
	if !s.reads && k > 0 {
		s.c.Add(float64(k))
		s.total.Add(int64(k))
	}
	return k, err
}

// punchTracer is a holepunch.EventTracer: it counts hole punch attempts
// and their outcome, and keeps each peer's last failure for error messages.
type punchTracer struct {
	tries       *prometheus.CounterVec // by result
	directDials *prometheus.CounterVec // by result
	ok, failed  atomic.Int64

	mu     sync.Mutex
	errs   map[peer.ID]string // last failure, cleared on success
	triedP map[peer.ID]bool
}

var _ holepunch.EventTracer = (*punchTracer)(nil)

func newPunchTracer() *punchTracer {
	return &punchTracer{
		tries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "share_holepunch_attempts_total",
			Help: "DCUtR hole punch attempts (a simultaneous dial to a peer reached through a relay), by result (success, failure).",
		}, []string{"result"}),
		directDials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "share_holepunch_direct_dials_total",
			Help: "Direct dials before a hole punch (connection reversal: the other peer had a public address), by result.",
		}, []string{"result"}),
		errs:   map[peer.ID]string{},
		triedP: map[peer.ID]bool{},
	}
}

// Trace implements holepunch.EventTracer.
func (t *punchTracer) Trace(evt *holepunch.Event) {
	switch e := evt.Evt.(type) {
	case *holepunch.EndHolePunchEvt:
		t.mu.Lock()
		if len(t.triedP) >= maxPunchErrors {
			clear(t.triedP)
			clear(t.errs)
		}
		t.triedP[evt.Remote] = true
		if e.Success {
			delete(t.errs, evt.Remote)
		} else {
			t.errs[evt.Remote] = punchError(e.Error)
		}
		t.mu.Unlock()
		if e.Success {
			t.ok.Add(1)
			t.tries.WithLabelValues("success").Inc()
		} else {
			t.failed.Add(1)
			t.tries.WithLabelValues("failure").Inc()
		}
	case *holepunch.DirectDialEvt:
		r := "failure"
		if e.Success {
			r = "success"
		}
		t.directDials.WithLabelValues(r).Inc()
	case *holepunch.ProtocolErrorEvt:
		t.mu.Lock()
		if len(t.errs) < maxPunchErrors {
			t.errs[evt.Remote] = e.Error
		}
		t.mu.Unlock()
	}
}

// punchError shortens a hole punch's dial error to what matters: the dials
// to the other peer's public addresses (libp2p also lists the addresses it
// skipped as its own).
func punchError(s string) string {
	var keep []string
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "*"))
		if line == "" || strings.Contains(line, "dial to self attempted") {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "; ")
}

func (t *punchTracer) lastError(p peer.ID) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.errs[p]
}

func (t *punchTracer) tried(p peer.ID) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.triedP[p]
}

// NATStatus is what status shows of NAT traversal.
type NATStatus struct {
	// Reachability is AutoNAT's verdict: "public", "private" (behind a
	// NAT) or "unknown" (no verdict: on a LAN, or not probed yet).
	Reachability string `json:"reachability"`
	// RelayAddrs are this peer's addresses through relays it holds a slot on.
	RelayAddrs []string `json:"relay_addrs,omitempty"`
	// RelayService is set when this peer relays for others: what its limits allow.
	RelayService string `json:"relay_service,omitempty"`
	// HolePunches counts DCUtR attempts and successes.
	HolePunches struct {
		Tried     int64 `json:"tried"`
		Succeeded int64 `json:"succeeded"`
	} `json:"hole_punches"`
	// Bytes of the chunk protocol over direct and relayed connections, both
	// directions.
	BytesDirect  int64 `json:"bytes_direct"`
	BytesRelayed int64 `json:"bytes_relayed"`
}

func (n *Node) natStatus() NATStatus {
	st := NATStatus{Reachability: reachabilityName(network.Reachability(n.nat.reachability.Load()))}
	for _, a := range n.host.Addrs() {
		if isRelayAddr(a) {
			st.RelayAddrs = append(st.RelayAddrs, a.Encapsulate(ma.StringCast("/p2p/"+n.host.ID().String())).String())
		}
	}
	if n.nat.relay != nil {
		st.RelayService = n.opts.RelayLimits.String()
	}
	st.HolePunches.Succeeded = n.nat.punch.ok.Load()
	st.HolePunches.Tried = st.HolePunches.Succeeded + n.nat.punch.failed.Load()
	st.BytesDirect, st.BytesRelayed = n.nat.direct.Load(), n.nat.relayed.Load()
	return st
}
