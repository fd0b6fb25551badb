package node

import (
	"context"
	"io"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sharefiles/share/transfer"
)

// handleStream serves a peer's chunk-protocol requests on one stream with
// the store, through transfer.ServeStream: the same requests, the same store
// and the same upload limit as the HTTP server's chunk routes. A peer with
// MaxStreamsPerPeer streams open is told to back off, and the stream closed.
func (n *Node) handleStream(s network.Stream) {
	pid := s.Conn().RemotePeer()
	if !n.acquireInbound(pid) {
		n.m.refused.Inc()
		transfer.ServeStream(n.ctx, s, busySource{}, transfer.ServeOptions{MaxRequests: 1})
		return
	}
	defer n.releaseInbound(pid)
	req, err := transfer.ServeStream(n.ctx, s, slotSource{Store: n.store, slots: n.slots}, transfer.ServeOptions{
		Limiter:   n.opts.UploadLimit,
		OnRequest: func(req transfer.Request) { n.noticeDownloader(req.ID, pid) },
		Served: func(id transfer.ID, _ int, size int64) {
			n.m.peerSent.WithLabelValues(pid.String()).Add(float64(size))
			n.m.chunksSent.Inc()
			n.mu.Lock()
			n.statsLocked(id).up += size
			n.mu.Unlock()
		},
	})
	if err != nil {
		n.log.Debug("chunk request failed", "peer", pid, "op", string(req.Op), "share", req.ID, "err", err)
	}
}

func (n *Node) acquireInbound(pid peer.ID) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.inbound[pid] >= n.opts.MaxStreamsPerPeer {
		return false
	}
	n.inbound[pid]++
	return true
}

func (n *Node) releaseInbound(pid peer.ID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.inbound[pid]--; n.inbound[pid] <= 0 {
		delete(n.inbound, pid)
	}
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

// uploadSlots is how many chunks a peer sends at once. With an upload cap,
// few: a chunk should leave in about slotTime, so the peer that gets it can
// pass it on soon, instead of every requested chunk trickling out in
// parallel and arriving late together (what makes a capped seed send
// duplicates in a swarm). Without a cap, enough to keep the cores busy.
func uploadSlots(limit *transfer.Limiter) int64 {
	if limit == nil {
		return maxUploadSlots
	}
	slots := int64(float64(limit.Rate()) * slotTime.Seconds() / transfer.DefaultChunkSize)
	return min(max(slots, minUploadSlots), maxUploadSlots)
}

const (
	slotTime       = 250 * time.Millisecond
	minUploadSlots = 2
	maxUploadSlots = 32
)

// slotSource serves chunks from the store, each holding an upload slot
// (FIFO, so requests are served in the order they came) while it is sent.
type slotSource struct {
	*transfer.Store
	slots *semaphore.Weighted
}

// OpenChunk implements transfer.Source.
func (s slotSource) OpenChunk(ctx context.Context, id transfer.ID, i int) (io.ReadCloser, error) {
	if err := s.slots.Acquire(ctx, 1); err != nil {
		return nil, err
	}
	rc, err := s.Store.OpenChunk(ctx, id, i)
	if err != nil {
		s.slots.Release(1)
		return nil, err
	}
	return &slotReader{ReadCloser: rc, release: func() { s.slots.Release(1) }}, nil
}

// slotReader releases its slot when closed; it keeps the chunk's Size.
type slotReader struct {
	io.ReadCloser
	release func()
	once    sync.Once
}

func (r *slotReader) Size() int64 { return r.ReadCloser.(interface{ Size() int64 }).Size() }

func (r *slotReader) Close() error {
	r.once.Do(r.release)
	return r.ReadCloser.Close()
}
