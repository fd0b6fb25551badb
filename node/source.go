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
			s, err := n.host.NewStream(ctx, pid, ProtocolID)
			if err != nil {
				return nil, streamError(err)
			}
			return peerStream{s}, nil
		},
		Complete: func(_ transfer.ID, complete bool) { p.seed.Store(complete) },
	}
	return p
}

// peerStream is a chunk-protocol stream to a peer whose errors are
// translated by streamError.
type peerStream struct {
	network.Stream
}

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
