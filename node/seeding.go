package node

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sharefiles/share/transfer"
)

// Seeding: how a peer holding a complete share serves it (BitTorrent's
// "super-seeding", BEP 16, done with the chunk protocol's offers: see
// transfer.HaveWaiter).
//
// Left to themselves, downloaders that start together ask the seed for the
// same chunks, and a capped seed spends its upload sending some chunks
// several times while others have not left it at all. A swarm can only go as
// fast as new chunks enter it, so a seed should send each chunk once and let
// the peers trade the copies. A complete holder therefore offers (in its
// answer to "which chunks do you have") only the chunks it has sent least
// recently — at first those it has not sent at all — and among them only
// those nobody is fetching from it; downloaders take those from it, and the
// others from the peers that got them. Once every chunk has left it once, it
// offers them all again, but still each chunk to one asker at a time and the
// least sent first: at the end of a swarm every downloader wants the same
// last, rarest chunks, and the seed sends each of them again rather than one
// of them to everyone. A send counts for seedRecent; after that a chunk is
// as good as unsent, so a lone late downloader gets everything.
//
// It never refuses a request for being outside its offer: the offer is a
// hint. Offers and their changes reach the askers through choke.go's queue:
// one asker per free upload slot, so a seed's offer costs O(1) per chunk it
// sends, however many peers wait.
//
// Super-seeding is for a seed whose upload is what the swarm waits on: it
// makes every byte the seed sends a byte the swarm lacks. A seed whose
// upload has room (a fibre seed among DSL peers: no request was answered
// busy for seedRoomAfter) offers every chunk instead, and downloaders take
// from it whatever they want of it (transfer's pickFree asks a seed only
// for what the peers lack while it super-seeds): otherwise its upload
// stands idle while downloaders wait on peers whose uplinks are a fraction
// of it (measured on the mixed profile, N = 16: the seed's uplink used 5-8 %,
// P2P 2.5x its bound and behind client-server).
const (
	seedRecent    = 20 * time.Second // a chunk sent this recently is spreading through its recipient
	seedRoomAfter = time.Second      // no busy answer for this long: the upload has room
)

// seeding tracks, for one complete share, which chunks are being fetched
// from this peer and how often each was sent recently.
type seeding struct {
	mu      sync.Mutex
	claimed []int32     // requests in progress (queued or sending), per chunk
	sends   []uint16    // sends of each chunk, counted while recent
	sent    []time.Time // when each chunk was last sent in full
}

func newSeeding(n int) *seeding {
	return &seeding{claimed: make([]int32, n), sends: make([]uint16, n), sent: make([]time.Time, n)}
}

func (s *seeding) claim(i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.claimed[i]++
}

// release ends a claim; sent says whether the chunk went out in full.
func (s *seeding) release(i int, sent bool, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.claimed[i]--
	if sent {
		s.sends[i] = s.recentLocked(i, now) + 1
		s.sent[i] = now
	}
}

// recentLocked is how often chunk i was sent recently: since its last send,
// seedRecent has not passed.
func (s *seeding) recentLocked(i int, now time.Time) uint16 {
	if now.Sub(s.sent[i]) > seedRecent {
		return 0
	}
	return s.sends[i]
}

// advertised returns the chunks to offer: of those nobody is fetching, the
// ones sent recently the fewest times.
func (s *seeding) advertised(now time.Time) transfer.Bitfield {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.claimed)
	bf := transfer.NewBitfield(n)
	least := uint16(1<<16 - 1)
	for i := range n {
		if s.claimed[i] == 0 {
			least = min(least, s.recentLocked(i, now))
		}
	}
	for i := range n {
		if s.claimed[i] == 0 && s.recentLocked(i, now) == least {
			bf.Set(i)
		}
	}
	return bf
}

// seedingFor returns the seeding state of a complete share, or nil for a
// partial one (a downloader advertises what it holds).
func (n *Node) seedingFor(sh *transfer.Share) *seeding {
	if !sh.Complete() {
		return nil
	}
	st := n.share(sh.ID())
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.seeding == nil {
		st.seeding = newSeeding(sh.Manifest().NumChunks())
	}
	return st.seeding
}

// offer returns what this peer offers of sh: what it holds, or for a
// complete share what the seeding policy offers.
func (n *Node) offer(sh *transfer.Share) transfer.Bitfield {
	if st := n.seedingFor(sh); st != nil {
		now := time.Now()
		if n.uploads.roomy(now) {
			return sh.Have()
		}
		return st.advertised(now)
	}
	return sh.Have()
}

// offerDigest is the digest of the offer of share id and whether it is held
// complete; live is false if it is gone.
func (n *Node) offerDigest(id transfer.ID) (digest uint32, complete, live bool) {
	sh, err := n.store.Get(id)
	if err != nil {
		return 0, false, false
	}
	return n.offer(sh).Digest(), sh.Complete(), true
}

// servingSource is what a peer serves to another peer: its store, with the
// upload capacity and choking of choke.go and the seeding policy above.
type servingSource struct {
	n   *Node
	pid peer.ID // the asker
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

// WaitHave implements transfer.HaveWaiter: the chunks offered, once the
// asker is owed an answer (the offer differs from the set it knows, or it
// was answered busy) and there is room for its next request (see choke.go),
// or when ctx is done.
func (s servingSource) WaitHave(ctx context.Context, id transfer.ID, chunks int, known uint32) (transfer.Bitfield, error) {
	sh, err := s.n.store.Get(id)
	if err != nil {
		return transfer.Bitfield{}, err
	}
	m := sh.Manifest()
	if chunks != m.NumChunks() {
		return s.n.store.Have(ctx, id, chunks) // reports the mismatch
	}
	if ctx.Err() == nil { // a have request that asks for no wait takes no place in the queue
		s.n.uploads.wait(ctx, uploadKey{s.pid, id}, known, s.n.uploads.weight(m.ChunkSize()))
	}
	if _, err := s.n.store.Get(id); err != nil {
		return transfer.Bitfield{}, err // removed meanwhile
	}
	return s.n.offer(sh), nil
}

// OpenChunk implements transfer.Source: it takes room in the upload queue or
// answers busy (see choke.go), claims the chunk (so that a seed does not
// offer it to others meanwhile), waits for the upload slot, and records the
// send when the chunk was read to its end.
func (s servingSource) OpenChunk(ctx context.Context, id transfer.ID, i int) (io.ReadCloser, error) {
	sh, err := s.n.store.Get(id)
	if err != nil {
		return nil, err
	}
	if i < 0 || i >= sh.Manifest().NumChunks() {
		return s.n.store.OpenChunk(ctx, id, i) // reports the range error
	}
	u := s.n.uploads
	w := u.weight(int64(sh.Manifest().ChunkLen(i)))
	trace := u.trace
	if !u.admit(uploadKey{s.pid, id}, w) {
		s.n.m.busy.Inc()
		if trace != nil {
			trace.Info("serve busy", "chunk", i, "peer", s.pid)
		}
		return nil, transfer.ErrBusy // choked: it polls, and is answered when there is room
	}
	admitted := time.Now()
	st := s.n.seedingFor(sh)
	if st != nil {
		st.claim(i)
		u.changed()
	}
	release := func(sent bool) {
		if st != nil {
			st.release(i, sent, time.Now())
		}
		u.done(w) // wakes the next waiting peer
	}
	if err := u.slots.Acquire(ctx, w); err != nil {
		release(false)
		return nil, err
	}
	rc, err := s.n.store.OpenChunk(ctx, id, i)
	if err != nil {
		u.slots.Release(w)
		release(false)
		return nil, err
	}
	if u.measured != nil {
		u.measured.start(time.Now())
	}
	if trace != nil {
		trace.Info("serve send", "chunk", i, "peer", s.pid, "queued_us", time.Since(admitted).Microseconds())
	}
	size := rc.(interface{ Size() int64 }).Size()
	return &slotReader{ReadCloser: rc, size: size, release: func(read int64) {
		if u.measured != nil {
			u.measured.end(time.Now(), read)
		}
		u.slots.Release(w)
		if trace != nil {
			trace.Info("serve sent", "chunk", i, "peer", s.pid, "bytes", read, "size", size)
		}
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
// more may wait for a slot; beyond that a peer answers "busy" and serves the
// asker later, when it has room (see choke.go), so that a chunk spreads from
// whoever has room rather than waiting in a long line.
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
