package node

import (
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	goyamux "github.com/libp2p/go-yamux/v5"

	"github.com/sharefiles/share/transfer"
)

// streamWindow is the receive window a peer gives each yamux stream from its
// start (bytes): room for two chunk responses of the swarm's chunk size.
//
// yamux (spec: hashicorp/yamux spec.md, "Flow Control") starts every stream
// at a 256 KiB window and grows it only when the receiver consumes a whole
// window within four round trips (go-yamux's auto-tuning), which a chunk
// upload paced at a few MiB/s never does. A chunk response is the swarm's
// 256 KiB chunk plus a 5-byte header: with the default window its sender
// cannot finish it until the receiver's process has read at least half the
// window and sent a window update, so every send waits on the scheduling of
// the peer it goes to, and an uploader's slot (choke.go) is held by a
// receiver that is slow to run instead of by the link. With two chunks of
// window a response leaves as fast as the upload limit and the sockets allow
// while the receiver is less than a chunk behind. Measured at N = 64 on two
// cores (`share bench --mode p2p --scenario scaling --peers 64 --size 16MiB
// --upload-limit 1MiB/s --trace`, two alternating pairs, BENCHMARKS.md
// "32 to 128 peers"): sends of a chunk that took over 0.3 s fell from
// 953-1142 to 347-547 of ~4200, the 90th percentile of a send from 0.38-0.43
// to 0.29-0.32 s, the seed's time spent sending its ~80 chunks from
// 24.6-26.0 to 18.2-18.4 s, and busy answers by 12 %.
//
// Memory: the window is what a peer may make this one buffer on a stream it
// does not read; with peerStreamsInbound streams a peer at most (limits.go),
// that is twice yamux's default. Window updates are yamux's own frames, so a
// peer with the default window interoperates: each side's window is what it
// grants.
const streamWindow = 2 * transfer.SwarmChunkSize

// chunkMuxer is libp2p's yamux transport (its settings: a 16 MiB window at
// most, no incoming-stream cap of its own, the resource manager's instead)
// with streamWindow for a stream's initial window.
var chunkMuxer = func() *yamux.Transport {
	c := goyamux.Config(*yamux.DefaultTransport)
	c.InitialStreamWindowSize = streamWindow
	t := yamux.Transport(c)
	return &t
}()
