package node

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/sec"

	"github.com/sharefiles/share/transfer"
)

// peerSource is a remote peer as a transfer.Source: the chunk protocol over
// libp2p streams to it. Chunks go over streams of their own, on direct
// connections only; manifest and have requests over others, which may go
// through a limited relay (see nat.go). It remembers whether the peer holds
// every chunk (a seed), for the metrics of chunks from seeds and from peers.
type peerSource struct {
	transfer.StreamSource                       // chunk requests
	ctl                   transfer.StreamSource // manifest and have requests
	pid                   peer.ID
	seed                  atomic.Bool // its last have answer said it holds every chunk
}

var (
	_ transfer.Source     = (*peerSource)(nil)
	_ transfer.HaveWaiter = (*peerSource)(nil)
	_ transfer.Seeder     = (*peerSource)(nil)
)

func (n *Node) peerSource(pid peer.ID) *peerSource {
	p := &peerSource{pid: pid}
	p.StreamSource = transfer.StreamSource{
		Name: pid.String(),
		Open: func(ctx context.Context) (transfer.Stream, error) { return n.openChunkStream(ctx, pid) },
	}
	p.ctl = transfer.StreamSource{
		Name:     pid.String(),
		Open:     func(ctx context.Context) (transfer.Stream, error) { return n.openControlStream(ctx, pid) },
		Complete: func(_ transfer.ID, complete bool) { p.seed.Store(complete) },
	}
	return p
}

// Manifest implements transfer.Source.
func (p *peerSource) Manifest(ctx context.Context, id transfer.ID) ([]byte, error) {
	return p.ctl.Manifest(ctx, id)
}

// Have implements transfer.Source.
func (p *peerSource) Have(ctx context.Context, id transfer.ID, n int) (transfer.Bitfield, error) {
	return p.ctl.Have(ctx, id, n)
}

// WaitHave implements transfer.HaveWaiter.
func (p *peerSource) WaitHave(ctx context.Context, id transfer.ID, n int, known uint32) (transfer.Bitfield, error) {
	return p.ctl.WaitHave(ctx, id, n, known)
}

// Seeding implements transfer.Seeder: have answers come over the control
// streams.
func (p *peerSource) Seeding(id transfer.ID) bool { return p.ctl.Seeding(id) }

// Close ends the streams kept for reuse.
func (p *peerSource) Close() error {
	p.ctl.Close()
	return p.StreamSource.Close()
}

// peerStream is a chunk-protocol stream to a peer whose errors are
// translated by streamError.
type peerStream struct {
	network.Stream
	g *streamGuard // counts a refused reservation
}

var _ transfer.MemoryReserver = peerStream{}

// ReserveMemory implements transfer.MemoryReserver: a response's payload is
// reserved on the stream's resource scope (see limits.go), at high
// priority: we asked for it.
func (s peerStream) ReserveMemory(n int) error {
	if err := s.Scope().ReserveMemory(n, fetchReservePrio); err != nil {
		s.g.refuse(s.Conn().RemotePeer(), refusedMemory, err)
		return streamError(fmt.Errorf("reserve %d bytes for a response: %w", n, err))
	}
	return nil
}

// ReleaseMemory implements transfer.MemoryReserver.
func (s peerStream) ReleaseMemory(n int) { s.Scope().ReleaseMemory(n) }

func (s peerStream) Read(p []byte) (int, error) {
	n, err := s.Stream.Read(p)
	if err != nil {
		err = streamError(err)
	}
	return n, err
}

func (s peerStream) Write(p []byte) (int, error) {
	n, err := s.Stream.Write(p)
	if err != nil {
		err = streamError(err)
	}
	return n, err
}

// streamError is the one translation of libp2p errors into transfer's
// sentinels, so that a download's busy handling and transfer.Permanent
// see them:
//
//   - a stream or memory reservation a resource manager refused, ours
//     (network.ErrResourceLimitExceeded) or the peer's (it resets the
//     stream with StreamResourceLimitExceeded or StreamRateLimited), is
//     transfer.ErrBusy: ask again later, or ask another peer;
//   - a peer whose key does not match the ID we dialled
//     (sec.ErrPeerIDMismatch) is transfer.ErrSourceRefused: permanent.
//
// Other errors pass unchanged (transient, for transfer.Permanent).
func streamError(err error) error {
	var se *network.StreamError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, network.ErrResourceLimitExceeded):
		return fmt.Errorf("%w: %w", transfer.ErrBusy, err)
	case errors.As(err, &se) && se.Remote &&
		(se.ErrorCode == network.StreamResourceLimitExceeded || se.ErrorCode == network.StreamRateLimited):
		return fmt.Errorf("%w: %w", transfer.ErrBusy, err)
	}
	if _, ok := errors.AsType[sec.ErrPeerIDMismatch](err); ok {
		return fmt.Errorf("%w: %w", transfer.ErrSourceRefused, err)
	}
	if _, ok := errors.AsType[*sec.ErrPeerIDMismatch](err); ok {
		return fmt.Errorf("%w: %w", transfer.ErrSourceRefused, err)
	}
	return err
}
