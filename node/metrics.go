package node

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are a Node's Prometheus series.
type metrics struct {
	peerSent       *prometheus.CounterVec // chunk bytes sent, by peer
	peerRecv       *prometheus.CounterVec // chunk bytes received, by peer
	chunksRecv     *prometheus.CounterVec // chunks received, from "seed" or "peer"
	chunksSent     prometheus.Counter
	badChunks      prometheus.Counter
	refused        prometheus.Counter     // requests refused at the per-peer limit
	lookups        *prometheus.CounterVec // DHT provider lookups, by result
	lookupSeconds  prometheus.Histogram   // time to the first provider
	provides       *prometheus.CounterVec // announcements, by result
	provideSeconds prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, n *Node) (*metrics, error) {
	latency := prometheus.ExponentialBuckets(0.0005, 3, 12) // 0.5 ms .. 88 s
	m := &metrics{
		peerSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "share_peer_bytes_sent_total", Help: "Chunk bytes sent to each peer.",
		}, []string{"peer"}),
		peerRecv: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "share_peer_bytes_received_total", Help: "Chunk bytes received from each peer.",
		}, []string{"peer"}),
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
			func() float64 { n.mu.Lock(); defer n.mu.Unlock(); return float64(len(n.downloads)) }),
	}
	gauges = append(gauges, n.nat.collectors()...)
	for _, c := range append([]prometheus.Collector{m.peerSent, m.peerRecv, m.chunksRecv, m.chunksSent, m.badChunks, m.refused,
		m.lookups, m.lookupSeconds, m.provides, m.provideSeconds}, gauges...) {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
