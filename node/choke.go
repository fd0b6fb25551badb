package node

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
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
//   - A long poll that waits for news is BitTorrent's HAVE message: a
//     downloader keeps one parked at every source of its active set. A
//     partial holder answers it as soon as its offer differs from the one
//     the asker knows (it gained a chunk), whether or not it has room: the
//     asker learns at once what it may fetch here, and rarest-first works
//     on a current view of the active set. A complete holder (a seed, whose
//     super-seeding offer changes with every chunk it hands out) answers it
//     only once there is room, in order, like a choked peer: its offer is
//     an unchoke for one request.
//
// So every time room frees, one waiting peer is woken, not all of them, and
// a chunk gained is told to the peers that poll this one (its in-degree in
// the swarm's active sets, about MaxActive whatever the swarm's size): the
// answers a peer gives cost O(1) per chunk, and no peer retries on a timer.
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
	capacity  int64               // bytes being sent or queued: 2 × slotBytes
	slotBytes int64               // see uploadSlotBytes
	slots     *semaphore.Weighted // bytes being sent: slotBytes
	// measured, for an upload with no cap of share's own, is the rate the
	// uplink was measured to deliver; sends then weigh what weight says.
	measured *uploadRate
	// offer returns the digest of the offer of share id now, whether this
	// peer holds it complete (its offer is a seed's), and false if the share
	// is gone. Called with mu held: it must not call back.
	offer func(id transfer.ID) (digest uint32, complete, live bool)

	mu       sync.Mutex
	used     int64 // bytes of requests taken (queued or being sent)
	reserved int64 // bytes kept for granted peers
	grants   map[uploadKey]*grant
	refused  map[uploadKey]time.Time // answered busy, not granted since
	waiters  []*waiter               // parked long polls, oldest first

	trace *slog.Logger // Options.Trace; nil: none

	// lastBusy is when a request was last answered busy (Unix ns); read
	// without mu, by offer (see roomy).
	lastBusy atomic.Int64
}

// newUploads returns an upload queue of slotBytes being sent, as many
// queued; with measure (an upload with no cap of share's own) the sends weigh
// what the uplink is measured to deliver (see weight).
func newUploads(slotBytes int64, measure bool, offer func(transfer.ID) (digest uint32, complete, live bool)) *uploads {
	var m *uploadRate
	if measure {
		m = &uploadRate{}
	}
	return &uploads{
		measured:  m,
		slotBytes: slotBytes,
		capacity:  2 * slotBytes,
		slots:     semaphore.NewWeighted(slotBytes),
		offer:     offer,
		grants:    map[uploadKey]*grant{},
		refused:   map[uploadKey]time.Time{},
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
	now := time.Now()
	u.refused[k] = now
	u.lastBusy.Store(now.UnixNano())
	return false
}

// roomy reports whether the upload had room for every request lately: none
// was answered busy for seedRoomAfter. A seed then offers every chunk (see
// seeding.go): its upload is not what the swarm waits on. It takes no
// lock: offer calls it with mu held.
func (u *uploads) roomy(now time.Time) bool {
	return now.UnixNano()-u.lastBusy.Load() >= int64(seedRoomAfter)
}

// owedLocked reports whether a parked poll is owed room (it was refused, or
// its offer changed): a new request must not take that room first.
func (u *uploads) owedLocked() bool {
	if len(u.waiters) == 0 {
		return false
	}
	offers := map[transfer.ID]offerState{}
	for _, wt := range u.waiters {
		if u.owes(wt, offers) == owedRoom {
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

// offerState is a share's offer as of one pass over the waiters.
type offerState struct {
	digest         uint32
	complete, live bool
}

// What a parked poll is owed.
const (
	owedNothing = iota // its offer is the one it knows: it waits
	owedNews           // a partial holder's offer changed: answer at once
	owedRoom           // it was refused, or a seed's offer changed: answer when there is room
)

// owes returns what wt is owed. offers caches the shares' offers for
// one pass.
func (u *uploads) owes(wt *waiter, offers map[transfer.ID]offerState) int {
	if _, ok := u.refused[wt.key]; ok {
		return owedRoom
	}
	o, ok := offers[wt.key.id]
	if !ok {
		o.digest, o.complete, o.live = u.offer(wt.key.id)
		offers[wt.key.id] = o
	}
	switch {
	case !o.live:
		return owedNews // the share is gone: answer, so the asker learns it
	case o.digest == wt.known:
		return owedNothing
	case o.complete:
		return owedRoom
	}
	return owedNews
}

// dispatchLocked answers the waiters owed news, and grants room to those
// owed room, oldest first, while there is room.
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
	offers := map[transfer.ID]offerState{}
	kept := u.waiters[:0]
	full := false // first come, first served: once one waiter owed room waits, all do
	for _, wt := range u.waiters {
		switch u.owes(wt, offers) {
		case owedNews:
			wt.granted = true // no room kept: its request is admitted or refused as any
			close(wt.ready)
			continue
		case owedRoom:
			if !full && u.used+u.reserved+wt.w <= u.capacity {
				u.grantLocked(wt)
				continue
			}
			full = true
		}
		kept = append(kept, wt)
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
			if u.trace != nil {
				u.trace.Info("grant expired", "peer", k.pid)
			}
			u.dropGrantLocked(k, g)
			u.dispatchLocked()
		}
	})
	u.grants[k] = g
	u.reserved += g.w
	if u.trace != nil {
		u.trace.Info("grant", "peer", k.pid)
	}
	wt.granted = true
	close(wt.ready)
}

func (u *uploads) dropGrantLocked(k uploadKey, g *grant) {
	g.timer.Stop()
	delete(u.grants, k)
	u.reserved -= g.w
}

// weight is the part of the upload slot (of slotBytes) that sending a chunk
// of n bytes takes. With a cap of share's own the slot is slotTime of the
// cap: a chunk takes its length, the whole slot at most, so a peer sends one
// chunk at a time when chunks are larger than an eighth of a second of its
// cap. Without one (an emulated or real network whose link is the cap), the
// peer does not know its uplink's rate, so it measures it (uploadRate): the
// slot is then slotTime of the measured rate plus one chunk, so that the
// sends in parallel are as many as the uplink carries, plus one to find out
// whether it carries more; while the measured rate grows (the sends were
// limited by their receivers, not by the uplink: a fibre seed sending to
// DSL peers), twice slotTime of it, so that the sends in parallel double
// with each sample instead of growing by one (see uploadRate.slot).
// Admitting every request at once would send them
// all in parallel, each at a fraction of the uplink: each chunk then arrives
// late, a seed's first copies reach the swarm late together, and peers have
// nothing to pass on (measured on the dsl profile, N = 4: 1.75x the bound
// with every request admitted, 1.11x with one chunk sent at a time).
func (u *uploads) weight(n int64) int64 {
	if u.measured == nil {
		return min(n, u.slotBytes)
	}
	slot := u.measured.slot(n)
	return max(u.slotBytes*min(n, slot)/slot, 1)
}

// rateSample is the upload time over which a rate is measured.
const rateSample = 2 * slotTime

// growthFactor: a sample this much above the estimate says the sends were
// limited by their receivers, not by the uplink.
const growthFactor = 1.25

// uploadRate measures an uplink: the bytes sent per second of time during
// which at least one send ran. Safe for concurrent use.
type uploadRate struct {
	mu       sync.Mutex
	sending  int       // sends running
	busyFrom time.Time // when sending last became non-zero
	busy     time.Duration
	bytes    int64
	bps      float64 // the estimate; 0: none yet
	growing  bool    // the last sample was growthFactor above the estimate before it
}

// start records that a send began.
func (r *uploadRate) start(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sending == 0 {
		r.busyFrom = now
	}
	r.sending++
}

// end records that a send of n bytes ended; every rateSample of busy time
// makes a sample. A sample below the estimate moves it half way (a dip is
// not taken for the uplink's rate at once); one above it is the estimate at
// once, and one growthFactor above marks the rate as growing (see slot).
func (r *uploadRate) end(now time.Time, n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sending--
	r.bytes += n
	busy := r.busy + now.Sub(r.busyFrom)
	if r.sending == 0 {
		r.busy = busy
	}
	if busy < rateSample {
		return
	}
	sample := float64(r.bytes) / busy.Seconds()
	r.growing = r.bps > 0 && sample > growthFactor*r.bps
	if sample > r.bps {
		r.bps = sample
	} else {
		r.bps = (r.bps + sample) / 2
	}
	r.bytes, r.busy, r.busyFrom = 0, 0, now
}

// slot returns the bytes to send at once, for chunks of n bytes: slotTime of
// the measured rate plus one chunk; one chunk until a rate is measured;
// twice slotTime of it plus one chunk while the rate grows, so that an
// uplink faster than its receivers (measured on the mixed profile, N = 16:
// a fibre seed sent 1-3 chunks at once in its first 2 s while 16
// downloaders waited) reaches the parallel sends it carries in a few
// samples, as TCP's slow start does, not one chunk per sample.
func (r *uploadRate) slot(n int64) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	room := int64(r.bps * slotTime.Seconds())
	if r.growing {
		return 2*room + max(n, 1)
	}
	return room + max(n, 1)
}
