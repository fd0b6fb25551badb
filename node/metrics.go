package node

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are a Node's Prometheus series.
type metrics struct {
	peerSent   *peerCounter           // chunk bytes sent, by peer (bounded; see peerCounter)
	peerRecv   *peerCounter           // chunk bytes received, by peer
	chunksRecv *prometheus.CounterVec // chunks received, from "seed" or "peer"
	chunksSent prometheus.Counter
	badChunks  prometheus.Counter
	refused    prometheus.Counter // requests refused at the per-peer limit
	busy       prometheus.Counter // chunk requests answered busy (the asker is choked)
	// requests counts the chunk-protocol requests this peer answered, by
	// op: each is two messages (the request and its answer), so with the
	// chunks received they give the protocol's messages per chunk.
	requests *prometheus.CounterVec
	// dialBackoffCleared counts dials of a source that libp2p refused for
	// its dial backoff and that were tried again (see Node.newStream).
	dialBackoffCleared prometheus.Counter
	pexPeers           prometheus.Counter     // sources learned by peer exchange
	lookups            *prometheus.CounterVec // DHT provider lookups, by result
	lookupSeconds      prometheus.Histogram   // time to the first provider
	provides           *prometheus.CounterVec // announcements, by result
	provideSeconds     prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, n *Node) (*metrics, error) {
	latency := prometheus.ExponentialBuckets(0.0005, 3, 12) // 0.5 ms .. 88 s
	m := &metrics{
		peerSent: newPeerCounter("share_peer_bytes_sent_total", "Chunk bytes sent, by peer: the most recently active peers by ID, the rest summed under peer=\"other\"."),
		peerRecv: newPeerCounter("share_peer_bytes_received_total", "Chunk bytes received, by peer: the most recently active peers by ID, the rest summed under peer=\"other\"."),
		chunksRecv: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "share_peer_chunks_received_total", Help: `Verified chunks received, from="seed" (a peer that held every chunk when first asked) or "peer".`,
		}, []string{"from"}),
		chunksSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "share_peer_chunks_sent_total", Help: "Chunks sent to peers.",
		}),
		badChunks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "share_peer_bad_chunks_total", Help: "Chunks from peers that failed verification (the peer was dropped as a source).",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "share_peer_requests_refused_total", Help: "Chunk-protocol requests refused because the peer had too many in progress.",
		}),
		busy: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "share_peer_chunk_requests_busy_total", Help: "Chunk requests answered busy: the upload was full, and the asker is served when it has room.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "share_peer_requests_served_total", Help: `Chunk-protocol requests answered, by op ("manifest", "have": a have request or long poll, "chunk"), busy answers included.`,
		}, []string{"op"}),
		dialBackoffCleared: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "share_peer_dial_backoff_cleared_total", Help: "Dials of a download's source that libp2p refused for its dial backoff, and that were tried again at once.",
		}),
		pexPeers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "share_peer_exchange_peers_total", Help: "Sources of swarm downloads learned from other peers (peer exchange) rather than the DHT.",
		}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "share_dht_lookups_total", Help: "DHT provider lookups, by result (found, none).",
		}, []string{"result"}),
		lookupSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "share_dht_lookup_seconds", Help: "Time from a DHT provider lookup's start to its first provider.", Buckets: latency,
		}),
		provides: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "share_dht_provides_total", Help: "DHT announcements (provider records put), by result (ok, error).",
		}, []string{"result"}),
		provideSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "share_dht_provide_seconds", Help: "Time a DHT announcement took.", Buckets: latency,
		}),
	}
	gauges := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "share_peers_connected", Help: "Peers connected."},
			func() float64 { return float64(len(n.host.Network().Peers())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "share_dht_routing_table_size", Help: "Peers in the DHT routing table."},
			func() float64 { return float64(n.dht.RoutingTable().Size()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "share_swarm_downloads", Help: "Swarm downloads in progress."},
			func() float64 { n.mu.RLock(); defer n.mu.RUnlock(); return float64(len(n.downloads)) }),
	}
	gauges = append(gauges, n.nat.collectors()...)
	gauges = append(gauges, n.guard.refused)
	for _, c := range append([]prometheus.Collector{m.peerSent, m.peerRecv, m.chunksRecv, m.chunksSent, m.badChunks, m.refused, m.busy, m.requests, m.dialBackoffCleared, m.pexPeers,
		m.lookups, m.lookupSeconds, m.provides, m.provideSeconds}, gauges...) {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Per-peer series. In an open swarm the peers a node meets have no bound, and
// a label per peer ID would grow the metrics without one (each series costs
// memory here and in every Prometheus that scrapes us). So at most
// maxPeerSeries peers have a series of their own at a time.
const (
	maxPeerSeries  = 64              // per-peer series of each per-peer counter
	peerSeriesIdle = 5 * time.Minute // a peer this long without traffic may give its series to a new one
	otherPeers     = "other"         // the label of the series that sums every other peer
)

// peerCounter is a counter by peer with bounded cardinality: a peer gets a
// series of its own while fewer than maxPeerSeries peers have one; when all
// are taken, the one idle longest gives its series up if it has been idle
// for peerSeriesIdle (its total moves to peer="other", and its series
// disappears), else the new peer's bytes go to peer="other". Hence the sum
// over all series is always every byte counted, and never decreases: rates
// of the sum, and of "other", are right; a peer that comes back after losing
// its series starts a new one (Prometheus sees a counter reset). It is safe
// for concurrent use.
type peerCounter struct {
	desc *prometheus.Desc
	max  int
	idle time.Duration
	now  func() time.Time

	mu    sync.Mutex
	peers map[string]*peerSeries
	other float64
}

type peerSeries struct {
	v    float64
	last time.Time // of the last add
}

func newPeerCounter(name, help string) *peerCounter {
	return &peerCounter{
		desc:  prometheus.NewDesc(name, help, []string{"peer"}, nil),
		max:   maxPeerSeries,
		idle:  peerSeriesIdle,
		now:   time.Now,
		peers: map[string]*peerSeries{},
	}
}

// add counts v (bytes) for peer.
func (c *peerCounter) add(peer string, v float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if s, ok := c.peers[peer]; ok {
		s.v += v
		s.last = now
		return
	}
	if len(c.peers) >= c.max {
		var idlest string
		var since time.Time
		for p, s := range c.peers {
			if idlest == "" || s.last.Before(since) {
				idlest, since = p, s.last
			}
		}
		if now.Sub(since) < c.idle {
			c.other += v
			return
		}
		c.other += c.peers[idlest].v
		delete(c.peers, idlest)
	}
	c.peers[peer] = &peerSeries{v: v, last: now}
}

// value returns the count of peer's own series (0 if it has none).
func (c *peerCounter) value(peer string) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.peers[peer]; ok {
		return s.v
	}
	return 0
}

// Describe implements prometheus.Collector.
func (c *peerCounter) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *peerCounter) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for p, s := range c.peers {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, s.v, p)
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, c.other, otherPeers)
}
