package node

import (
	"context"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sharefiles/share/transfer"
)

// peerSource is a remote peer as a transfer.Source: the chunk protocol over
// libp2p streams to it. It remembers whether the peer holds every chunk (a
// seed), for the metrics of chunks from seeds and from peers.
type peerSource struct {
	transfer.StreamSource
	pid  peer.ID
	seed atomic.Bool // its last have answer said it holds every chunk
}

var (
	_ transfer.Source     = (*peerSource)(nil)
	_ transfer.HaveWaiter = (*peerSource)(nil)
)

func (n *Node) peerSource(pid peer.ID) *peerSource {
	p := &peerSource{pid: pid}
	p.StreamSource = transfer.StreamSource{
		Name: pid.String(),
		Open: func(ctx context.Context) (transfer.Stream, error) {
			return n.host.NewStream(ctx, pid, ProtocolID)
		},
		Complete: func(_ transfer.ID, complete bool) { p.seed.Store(complete) },
	}
	return p
}
