package node

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/sharefiles/share/transfer"
)

// Seeding: how a peer holding a complete share serves it (BitTorrent's
// "super-seeding", done with the chunk protocol's offers: see
// transfer.HaveWaiter).
//
// Left to themselves, downloaders that start together ask the seed for the
// same chunks, and a capped seed spends its upload sending some chunks
// several times while others have not left it at all. A swarm can only go as
// fast as new chunks enter it, so a seed should send each chunk once and let
// the peers trade the copies. A complete holder therefore advertises (in its
// answer to "which chunks do you have") only the chunks that nobody is
// fetching from it and that it has not sent recently; downloaders take those
// from it, and the others from the peers that got them. When every chunk not
// yet sent is being fetched, it offers nothing more: new requests would only
// duplicate. Once every chunk has left it recently, it offers all of them
// again, so the tail of a swarm, or a lone late downloader, gets everything.
// It never refuses a request: the offer is a hint.
const seedRecent = 20 * time.Second // a chunk sent this recently is spreading through its recipient

// seeding tracks, for one complete share, which chunks are being fetched
// from this peer and when each was last sent.
type seeding struct {
	mu      sync.Mutex
	claimed []int32     // requests in progress (queued or sending), per chunk
	sent    []time.Time // when each chunk was last sent in full
	changed chan struct{}
}

func newSeeding(n int) *seeding {
	return &seeding{claimed: make([]int32, n), sent: make([]time.Time, n), changed: make(chan struct{})}
}

// notifyLocked wakes the long polls waiting for a change.
func (s *seeding) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *seeding) claim(i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.claimed[i]++
	s.notifyLocked()
}

func (s *seeding) release(i int, sent bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.claimed[i]--
	if sent {
		s.sent[i] = time.Now()
	}
	s.notifyLocked()
}

// advertised returns the chunks to offer, and a channel closed at the next
// change: until every chunk has been sent (recently), the chunks nobody is
// fetching and that were not sent; after that, all of them.
func (s *seeding) advertised(now time.Time) (transfer.Bitfield, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.claimed)
	bf := transfer.NewBitfield(n)
	allSent := true
	for i := range n {
		if now.Sub(s.sent[i]) > seedRecent {
			allSent = false
			if s.claimed[i] == 0 {
				bf.Set(i)
			}
		}
	}
	if allSent {
		bf = transfer.FullBitfield(n)
	}
	return bf, s.changed
}

// seedingFor returns the seeding state of a complete share, or nil for a
// partial one (a downloader advertises what it holds).
func (n *Node) seedingFor(sh *transfer.Share) *seeding {
	if !sh.Complete() {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	st, ok := n.seeding[sh.ID()]
	if !ok {
		st = newSeeding(sh.Manifest().NumChunks())
		n.seeding[sh.ID()] = st
	}
	return st
}

// servingSource is what a peer serves to other peers: its store, with upload
// slots (see uploadSlots) and the seeding policy above.
type servingSource struct {
	n *Node
}

var (
	_ transfer.Source     = servingSource{}
	_ transfer.HaveWaiter = servingSource{}
)

func (s servingSource) String() string { return "local store" }
func (s servingSource) Manifest(ctx context.Context, id transfer.ID) ([]byte, error) {
	return s.n.store.Manifest(ctx, id)
}

// Have implements transfer.Source: what the peer holds. (The long poll,
// WaitHave, tells what it offers now.)
func (s servingSource) Have(ctx context.Context, id transfer.ID, chunks int) (transfer.Bitfield, error) {
	return s.n.store.Have(ctx, id, chunks)
}

// WaitHave implements transfer.HaveWaiter: the chunks offered now, once they
// differ from the set the asker knows.
func (s servingSource) WaitHave(ctx context.Context, id transfer.ID, chunks int, known uint32) (transfer.Bitfield, error) {
	sh, err := s.n.store.Get(id)
	if err != nil {
		return transfer.Bitfield{}, err
	}
	st := s.n.seedingFor(sh)
	if st == nil {
		return s.n.store.WaitHave(ctx, id, chunks, known)
	}
	if chunks != sh.Manifest().NumChunks() {
		return s.n.store.Have(ctx, id, chunks)
	}
	for {
		bf, changed := st.advertised(time.Now())
		if bf.Digest() != known {
			return bf, nil
		}
		select {
		case <-changed:
		case <-time.After(seedRecent): // recent sends age out without an event
		case <-ctx.Done():
			return bf, nil
		}
	}
}

// OpenChunk implements transfer.Source: it claims the chunk (so it is not
// advertised to others meanwhile), takes an upload slot, and records the
// send when the chunk was read to its end.
func (s servingSource) OpenChunk(ctx context.Context, id transfer.ID, i int) (io.ReadCloser, error) {
	sh, err := s.n.store.Get(id)
	if err != nil {
		return nil, err
	}
	if i < 0 || i >= sh.Manifest().NumChunks() {
		return s.n.store.OpenChunk(ctx, id, i) // reports the range error
	}
	st := s.n.seedingFor(sh)
	if st != nil {
		st.claim(i)
	}
	release := func(sent bool) {
		if st != nil {
			st.release(i, sent)
		}
	}
	w := min(int64(sh.Manifest().ChunkLen(i)), s.n.slotBytes)
	if !s.n.queue.TryAcquire(w) {
		release(false)
		return nil, transfer.ErrBusy // enough requests wait: ask another holder
	}
	err = s.n.slots.Acquire(ctx, w)
	s.n.queue.Release(w)
	if err != nil {
		release(false)
		return nil, err
	}
	rc, err := s.n.store.OpenChunk(ctx, id, i)
	if err != nil {
		s.n.slots.Release(w)
		release(false)
		return nil, err
	}
	size := rc.(interface{ Size() int64 }).Size()
	return &slotReader{ReadCloser: rc, size: size, release: func(read int64) {
		s.n.slots.Release(w)
		release(read == size)
	}}, nil
}

// slotReader releases its slot and claim when closed; it keeps the chunk's
// Size and counts what was read.
type slotReader struct {
	io.ReadCloser
	size    int64
	read    int64
	release func(read int64)
	once    sync.Once
}

func (r *slotReader) Size() int64 { return r.size }

func (r *slotReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.read += int64(n)
	return n, err
}

func (r *slotReader) Close() error {
	r.once.Do(func() { r.release(r.read) })
	return r.ReadCloser.Close()
}

// uploadSlotBytes is how many chunk bytes a peer sends at once (each send
// takes its chunk's length, or all of it for a larger chunk). With an upload
// cap, slotTime of it: a chunk leaves as fast as the cap allows, so the peer
// that gets it can pass it on at once, instead of every requested chunk
// trickling out in parallel and arriving late together. (Each hop of a chunk
// through a swarm costs the time it takes to send; one chunk at a time at
// 8 MiB/s measured 1.23x the distribution bound at N=16, two at a time
// 1.27-1.35x.) Without a cap, enough to keep the cores busy. As many bytes
// more may wait for a slot; beyond that a peer answers "busy", so that a
// downloader asks another holder rather than wait in a long line
// (BitTorrent's choking, without its timers): a chunk spreads from whoever
// has room.
func uploadSlotBytes(limit *transfer.Limiter) int64 {
	if limit == nil {
		return maxSlotBytes
	}
	return max(int64(float64(limit.Rate())*slotTime.Seconds()), transfer.MinChunkSize)
}

const (
	slotTime     = 125 * time.Millisecond
	maxSlotBytes = 32 * transfer.DefaultChunkSize
)
