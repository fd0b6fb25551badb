package node

import (
	"context"
	"io"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sharefiles/share/transfer"
)

// handleStream serves a peer's chunk-protocol requests on one stream with
// the store, through transfer.ServeStream: the same requests, the same store
// and the same upload limit as the HTTP server's chunk routes. A peer with
// MaxStreamsPerPeer streams open is told to back off, and the stream closed.
// Each chunk's send buffer is reserved on the stream's resource scope while
// it is sent (reservingSource, limits.go).
func (n *Node) handleStream(s network.Stream) {
	pid := s.Conn().RemotePeer()
	if !n.acquireInbound(pid) {
		n.m.refused.Inc()
		n.guard.refuse(pid, refusedBusy, nil)
		transfer.ServeStream(n.ctx, s, busySource{}, transfer.ServeOptions{MaxRequests: 1})
		return
	}
	defer n.releaseInbound(pid)
	var src transfer.Source = servingSource{n, pid}
	if s.Conn().Stat().Limited {
		src = limitedSource{servingSource{n, pid}} // no chunks through a limited relay
	}
	src = reservingSource{Source: src, n: n, pid: pid, scope: s.Scope()}
	req, err := transfer.ServeStream(n.ctx, n.countStream(s, "sent"), src, transfer.ServeOptions{
		Limiter: n.opts.UploadLimit,
		OnRequest: func(req transfer.Request) {
			n.m.requests.WithLabelValues(req.OpName()).Inc()
			n.noticeDownloader(req.ID, pid)
			if !req.IsChunk() { // a peer's first requests of a share are manifest and have
				n.noteAsker(req.ID, pid)
			}
		},
		Served: func(id transfer.ID, _ int, size int64) {
			n.m.peerSent.add(pid.String(), float64(size))
			n.m.chunksSent.Inc()
			n.share(id).up.Add(size)
		},
	})
	if err != nil {
		n.log.Debug("chunk request failed", "peer", pid, "op", string(req.Op), "share", req.ID, "err", err)
	}
}

func (n *Node) acquireInbound(pid peer.ID) bool {
	n.inboundMu.Lock()
	defer n.inboundMu.Unlock()
	if n.inbound[pid] >= n.opts.MaxStreamsPerPeer {
		return false
	}
	n.inbound[pid]++
	return true
}

func (n *Node) releaseInbound(pid peer.ID) {
	n.inboundMu.Lock()
	defer n.inboundMu.Unlock()
	if n.inbound[pid]--; n.inbound[pid] <= 0 {
		delete(n.inbound, pid)
	}
}

// limitedSource serves manifests and have lists over a limited relayed
// connection, and answers chunk requests "busy": chunks need a direct
// connection (see nat.go), which the hole punch may bring in a moment.
type limitedSource struct{ servingSource }

func (limitedSource) OpenChunk(context.Context, transfer.ID, int) (io.ReadCloser, error) {
	return nil, transfer.ErrBusy
}

// busySource answers every request with transfer.ErrBusy.
type busySource struct{}

func (busySource) Manifest(context.Context, transfer.ID) ([]byte, error) {
	return nil, transfer.ErrBusy
}
func (busySource) Have(context.Context, transfer.ID, int) (transfer.Bitfield, error) {
	return transfer.Bitfield{}, transfer.ErrBusy
}
func (busySource) OpenChunk(context.Context, transfer.ID, int) (io.ReadCloser, error) {
	return nil, transfer.ErrBusy
}
func (busySource) String() string { return "busy" }
