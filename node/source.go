package node

import (
	"context"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sharefiles/share/transfer"
)

// peerSource is a remote peer as a transfer.Source: the chunk protocol over
// libp2p streams to it. It remembers whether the peer held every chunk when
// first asked (a seed), for the metrics of chunks from seeds and from peers.
type peerSource struct {
	transfer.StreamSource
	pid   peer.ID
	asked atomic.Bool
	seed  atomic.Bool
}

var (
	_ transfer.Source     = (*peerSource)(nil)
	_ transfer.HaveWaiter = (*peerSource)(nil)
)

func (n *Node) peerSource(pid peer.ID) *peerSource {
	return &peerSource{pid: pid, StreamSource: transfer.StreamSource{
		Name: pid.String(),
		Open: func(ctx context.Context) (transfer.Stream, error) {
			return n.host.NewStream(ctx, pid, ProtocolID)
		},
	}}
}

func (p *peerSource) note(bf transfer.Bitfield, err error) {
	if err == nil && !p.asked.Swap(true) {
		p.seed.Store(bf.Full())
	}
}

// Have implements transfer.Source.
func (p *peerSource) Have(ctx context.Context, id transfer.ID, n int) (transfer.Bitfield, error) {
	bf, err := p.StreamSource.Have(ctx, id, n)
	p.note(bf, err)
	return bf, err
}

// WaitHave implements transfer.HaveWaiter.
func (p *peerSource) WaitHave(ctx context.Context, id transfer.ID, n, known int) (transfer.Bitfield, error) {
	bf, err := p.StreamSource.WaitHave(ctx, id, n, known)
	p.note(bf, err)
	return bf, err
}
