package node

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/sync/semaphore"

	"github.com/sharefiles/share/transfer"
)

// Choking: how a peer shares its upload among the peers that ask it for
// chunks.
//
// A BitTorrent uploader serves a few peers at a time ("unchoked") and tells
// the others it will not serve them for now ("choked"); a choked peer sends
// no requests until it is told otherwise (Cohen, "Incentives Build Robustness
// in BitTorrent", 2003; BEP 3). The chunk protocol has no messages of its
// own, so the same is done with its answers:
//
//   - A peer's upload capacity is uploadSlotBytes being sent plus as many
//     queued (see uploadSlotBytes). A chunk request that fits is taken; one
//     beyond it is answered "busy": the asker is choked.
//   - A choked asker sends no more requests; it parks a long poll (a have
//     request, see transfer.HaveWaiter), and this peer answers it when it
//     has room, first come first served, and keeps room for the request that
//     follows for grantTTL: the asker is unchoked for one request.
//   - Long polls of peers waiting for news (this peer offers nothing they
//     need yet) are answered the same way: once the offer differs from the
//     one they know AND there is room, in order.
//
// So every time room frees, one waiting peer is woken, not all of them: the
// answers a peer gives cost O(1) per chunk it sends, whatever the number of
// peers that want its chunks, and no peer retries on a timer.
const (
	// grantTTL is how long room is kept for an unchoked peer's request: a
	// round trip, with a wide margin. An unchoked peer that polls again
	// instead of asking gives its room back at once.
	grantTTL = 500 * time.Millisecond
	// refusedTTL is how long a peer answered busy keeps its claim to the
	// next room without polling for it: a long poll's longest wait.
	refusedTTL = transfer.MaxHaveWait
	// offerTick is how often the queue is looked at without an event:
	// offers also change with time (a seed's sends age out after
	// seedRecent) and with chunks stored outside a swarm download (a
	// client's chunked upload).
	offerTick = time.Second
)

// offerLoop runs the queue every offerTick until the node closes.
func (n *Node) offerLoop() {
	t := time.NewTicker(offerTick)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			n.uploads.changed()
		case <-n.ctx.Done():
			return
		}
	}
}

// uploadKey is one peer asking for one share.
type uploadKey struct {
	pid peer.ID
	id  transfer.ID
}

// waiter is a parked long poll.
type waiter struct {
	key     uploadKey
	known   uint32        // digest of the offer the asker knows
	w       int64         // room to keep when it is granted: one chunk
	ready   chan struct{} // closed when granted
	granted bool
}

type grant struct {
	w     int64
	timer *time.Timer
}

// uploads is a peer's upload capacity and the queue of peers waiting for it.
// It is safe for concurrent use.
type uploads struct {
	capacity int64               // bytes being sent or queued
	slots    *semaphore.Weighted // bytes being sent: slotBytes
	// offer returns the digest of the offer of share id now, false if the
	// share is gone. Called with mu held: it must not call back.
	offer func(id transfer.ID) (uint32, bool)

	mu       sync.Mutex
	used     int64 // bytes of requests taken (queued or being sent)
	reserved int64 // bytes kept for granted peers
	grants   map[uploadKey]*grant
	refused  map[uploadKey]time.Time // answered busy, not granted since
	waiters  []*waiter               // parked long polls, oldest first
}

func newUploads(slotBytes int64, offer func(transfer.ID) (uint32, bool)) *uploads {
	return &uploads{
		capacity: 2 * slotBytes,
		slots:    semaphore.NewWeighted(slotBytes),
		offer:    offer,
		grants:   map[uploadKey]*grant{},
		refused:  map[uploadKey]time.Time{},
	}
}

// admit takes a request of w bytes from k if there is room (or room was kept
// for k), and reports whether it did. A refused asker is choked: it is owed
// the next room when it polls.
func (u *uploads) admit(k uploadKey, w int64) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if g, ok := u.grants[k]; ok {
		u.dropGrantLocked(k, g)
		u.used += w
		return true
	}
	if u.used+u.reserved+w <= u.capacity && !u.owedLocked() {
		u.used += w
		delete(u.refused, k)
		return true
	}
	u.refused[k] = time.Now()
	return false
}

// owedLocked reports whether a parked poll is owed room (it was refused, or
// its offer changed): a new request must not take that room first.
func (u *uploads) owedLocked() bool {
	if len(u.waiters) == 0 {
		return false
	}
	digests := map[transfer.ID]uint32{}
	for _, wt := range u.waiters {
		if u.eligibleLocked(wt, digests) {
			return true
		}
	}
	return false
}

// done gives back the room of a request taken with admit.
func (u *uploads) done(w int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.used -= w
	u.dispatchLocked()
}

// changed wakes the polls whose offer changed, as far as there is room.
func (u *uploads) changed() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.dispatchLocked()
}

// wait parks a long poll of k, which knows the offer whose digest is known,
// until it is granted room for a request of w bytes (true) or ctx is done
// (false). A poll from a peer that holds a grant gives the grant back: it is
// not asking.
func (u *uploads) wait(ctx context.Context, k uploadKey, known uint32, w int64) bool {
	wt := &waiter{key: k, known: known, w: w, ready: make(chan struct{})}
	u.mu.Lock()
	if g, ok := u.grants[k]; ok {
		u.dropGrantLocked(k, g)
	}
	u.waiters = append(u.waiters, wt)
	u.dispatchLocked()
	u.mu.Unlock()
	select {
	case <-wt.ready:
		return true
	case <-ctx.Done():
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if wt.granted { // granted meanwhile: the grant stands
		return true
	}
	for i, x := range u.waiters {
		if x == wt {
			u.waiters = append(u.waiters[:i], u.waiters[i+1:]...)
			break
		}
	}
	return false
}

// eligibleLocked reports whether wt is owed an answer: it was refused (and
// polls for room), or the offer changed from the one it knows. digests
// caches the offers' digests for one pass.
func (u *uploads) eligibleLocked(wt *waiter, digests map[transfer.ID]uint32) bool {
	if _, ok := u.refused[wt.key]; ok {
		return true
	}
	d, ok := digests[wt.key.id]
	if !ok {
		var live bool
		if d, live = u.offer(wt.key.id); !live {
			return true // the share is gone: answer, so the asker learns it
		}
		digests[wt.key.id] = d
	}
	return d != wt.known
}

// dispatchLocked grants room to the eligible waiters, oldest first, while
// there is room.
func (u *uploads) dispatchLocked() {
	now := time.Now()
	for k, at := range u.refused {
		if now.Sub(at) > refusedTTL {
			delete(u.refused, k)
		}
	}
	if len(u.waiters) == 0 {
		return
	}
	digests := map[transfer.ID]uint32{}
	kept := u.waiters[:0]
	for i, wt := range u.waiters {
		if !u.eligibleLocked(wt, digests) {
			kept = append(kept, wt)
			continue
		}
		if u.used+u.reserved+wt.w > u.capacity {
			kept = append(kept, u.waiters[i:]...) // first come, first served
			break
		}
		u.grantLocked(wt)
	}
	clear(u.waiters[len(kept):])
	u.waiters = kept
}

func (u *uploads) grantLocked(wt *waiter) {
	k := wt.key
	delete(u.refused, k)
	if g, ok := u.grants[k]; ok {
		u.dropGrantLocked(k, g)
	}
	g := &grant{w: wt.w}
	g.timer = time.AfterFunc(grantTTL, func() {
		u.mu.Lock()
		defer u.mu.Unlock()
		if u.grants[k] == g {
			u.dropGrantLocked(k, g)
			u.dispatchLocked()
		}
	})
	u.grants[k] = g
	u.reserved += g.w
	wt.granted = true
	close(wt.ready)
}

func (u *uploads) dropGrantLocked(k uploadKey, g *grant) {
	g.timer.Stop()
	delete(u.grants, k)
	u.reserved -= g.w
}
