package transfer

import (
	"math/rand/v2"
	"time"
)

// The picker is the pure part of a Download's scheduling: which sources it
// trades with (its active set), when it asks a source what it offers, how
// many requests it keeps in flight to each source, and which chunk it asks of
// which (rarest first, endgame). It starts no goroutine, does no I/O and
// reads no clock (callers pass the time), and draws its randomness from a
// *rand.Rand it is given, so that tables can test it (picker_test.go). The
// run loop in fetch.go does the I/O and tells it what happened.
//
// The active set is BitTorrent's choking seen from the downloader's side
// (Cohen, "Incentives Build Robustness in BitTorrent", 2003, section 3): a
// download knows many sources but trades with at most MaxActive of them at
// a time. Only active sources are asked what they offer and sent requests;
// the others are candidates, which cost nothing. Every activeRefresh the
// active source that delivered the fewest bytes since the last refresh (and
// has been active a whole period) gives way to a random candidate — the
// optimistic slot, through which a download finds sources better than those
// it has. Why every 2 s and not BitTorrent's 30 s (or our former 10 s): a
// peer that joins a flash crowd late is a candidate everywhere and active
// nowhere, and its uplink stays idle until some download rotates it in. At
// N = 64 on loopback (16 MiB, 1 MiB/s uplinks, traced) a sixth of the peers
// served almost nothing between 6 and 14 s with 10 s, and the uplinks were
// 75 % busy; with 2 s, 87 %, and the swarm finished in 1.24-1.31x its bound
// instead of 1.35-1.50x. Rotating costs one have request to the newcomer;
// chunk requests in flight to the source that leaves go on. A source that
// fails twice in a row, or that left
// (Download.SourceGone), gives way at once. A seed that offers less than it
// holds (it is super-seeding, see HaveWaiter) is never rotated out for being
// slow: it hands out each chunk once, to one peer at a time, so a slow rate
// from it is the policy, not a fault.
const (
	DefaultMaxActive = 8               // sources traded with at once
	activeRefresh    = 2 * time.Second // the slowest active source may be replaced this often (see above)
	activeFailures   = 2               // consecutive failures that make an active source give way
	minDepth         = 2               // requests kept in flight to any source
	// DepthQueueTime is how much of a source's rate a download keeps
	// requested beyond its bandwidth-delay product (see srcState.depth).
	DepthQueueTime = 250 * time.Millisecond
	rateWindow     = 2 * time.Second // rates and round trips are measured over this window
	// slowPeer is how many times as long as a seed's a partial source's
	// chunks may take for its offer to hold the seed back (see peerOffers).
	slowPeer = 4
	// PeerGrace is how long a partial source's offer holds a seed back (see
	// pickFree) while the download waits on that source without getting
	// anything from it: choked, or with requests out and no chunk back.
	// About one chunk's send time on a slow uplink, and longer for a source
	// whose chunks take longer (srcState.grace): a peer that left without
	// a word, or lingers without serving, costs this much, not the stall
	// timeout.
	PeerGrace = time.Second
)

// srcState is one source of a download: what it offers, and what the
// download is doing with it. The picker and the run loop own it together,
// from the run loop's goroutine.
type srcState struct {
	src    Source
	name   string
	waiter bool // src is a HaveWaiter

	have     Bitfield // the chunks it offers
	known    bool     // have is valid
	seed     bool     // it holds every chunk, whatever it offers (see Seeder)
	asking   bool     // a have request (or long poll) is in flight
	askAt    time.Time
	starved  bool      // offers nothing we need that is not in flight; cleared when that may change
	choked   bool      // answered busy; no requests until its next have answer (a grant: see HaveWaiter)
	inflight int       // chunk requests in flight
	waitFrom time.Time // when it last delivered (a chunk, a have answer), or began to be waited on
	gone     bool      // the caller said it left (Download.SourceGone); cleared by its next have answer

	active   bool
	activeAt time.Time // when it last became active
	got      int64     // chunk bytes received since the last refresh of the active set

	fails   int       // consecutive failures, counting requests in flight together as one
	failAt  time.Time // when the last failure was counted
	backoff time.Time // no new requests before this

	done []sample // chunks received in the last rateWindow: rate and round trip
	// chunkTime is how long its chunks take, request to last byte: a moving
	// average (each chunk moves it half way), 0 before the first.
	chunkTime time.Duration
	stats     SourceStats
	stop      func() // cancels the have request in flight, if any (set by the run loop)
}

type sample struct {
	at      time.Time
	n       int64
	latency time.Duration // from request to the whole chunk received
}

func (s *srcState) usable(now time.Time) bool {
	return !s.stats.Dropped && !now.Before(s.backoff)
}

// waiting reports whether the download waits on s for something: a have
// answer that ends a choke, or the chunks requested from it.
func (s *srcState) waiting() bool { return s.choked || s.inflight > 0 }

// delivers reports whether s's offer may hold a seed back (see pickFree):
// it is known, usable and not gone, and if the download waits on it, it
// delivered something within its grace.
func (s *srcState) delivers(now time.Time) bool {
	return s.known && !s.gone && s.usable(now) && (!s.waiting() || now.Sub(s.waitFrom) < s.grace())
}

// grace is how long s may keep the download waiting without delivering
// before its offer stops holding a seed back: PeerGrace, or twice the
// quickest chunk it sent lately (a round trip and one chunk's send time) if
// that is longer, so that a slow link is not taken for a source that
// cannot deliver.
func (s *srcState) grace() time.Duration {
	if len(s.done) == 0 {
		return PeerGrace
	}
	lat := s.done[0].latency
	for _, d := range s.done[1:] {
		lat = min(lat, d.latency)
	}
	return max(PeerGrace, 2*lat)
}

// superSeeding reports whether s is a seed that offers fewer chunks than it
// holds: it hands each chunk out once (see HaveWaiter), at its own pace.
func (s *srcState) superSeeding() bool {
	return s.seed && s.known && !s.have.Full()
}

// depth is how many requests to keep in flight to s: its bandwidth-delay
// product plus DepthQueueTime of its rate, in chunks, plus one, within
// [minDepth, limit]. By Little's law a source delivering rate R with
// requests taking latency L needs R·L bytes in flight; the smallest latency
// seen (its round trip plus one chunk's transfer) stands for L, so that a
// long line at a busy source does not inflate the estimate. A slow source (a
// seed whose uplink is shared by many) gets few requests, so its chunks
// arrive one after another, soon enough to be passed on, instead of all
// arriving late together; a fast or distant one gets many.
func (s *srcState) depth(now time.Time, chunkSize int64, limit int) int {
	for len(s.done) > 0 && now.Sub(s.done[0].at) > rateWindow {
		s.done = s.done[1:]
	}
	if len(s.done) < 2 {
		return min(minDepth, limit)
	}
	var bytes int64 // received after the first sample's time
	lat := s.done[0].latency
	for k, d := range s.done {
		if k > 0 {
			bytes += d.n
		}
		lat = min(lat, d.latency)
	}
	span := max(now.Sub(s.done[0].at), 10*time.Millisecond)
	rate := float64(bytes) / span.Seconds()
	want := int(rate*(lat+DepthQueueTime).Seconds()/float64(chunkSize)) + 1
	return min(max(want, minDepth), limit)
}

// request is one chunk request in flight.
type request struct {
	i        int
	s        *srcState
	started  time.Time
	cancel   func() // set by the run loop
	lost     bool   // another request for the chunk won
	received bool   // its source slot was given back; the chunk is being written
}

// picker holds the scheduling state of one Download run.
type picker struct {
	chunkSize   int64
	maxActive   int // sources traded with at once
	perSource   int // most requests in flight to one source
	maxInFlight int // most requests in flight in all

	need     Bitfield // chunks not held
	avail    []int32  // per chunk, how many known sources offer it
	inflight map[int][]*request
	active   int // requests in flight on the network
	sources  []*srcState
	rng      *rand.Rand
	refresh  time.Time // next refresh of the active set
	scratch  Bitfield  // peerOffers' result, reused
	graceAt  time.Time // when expireGrace last looked
}

func newPicker(n int, chunkSize int64, need Bitfield, opts DownloadOptions, rng *rand.Rand) *picker {
	return &picker{
		chunkSize: chunkSize, maxActive: opts.MaxActive, perSource: opts.PerSource, maxInFlight: opts.MaxInFlight,
		need: need, avail: make([]int32, n), inflight: map[int][]*request{}, rng: rng,
	}
}

// add makes s a candidate source.
func (p *picker) add(s *srcState) { p.sources = append(p.sources, s) }

// free returns how many needed chunks have no request in flight.
func (p *picker) free() int {
	free := p.need.Count()
	for i := range p.inflight {
		if p.need.Has(i) {
			free--
		}
	}
	return free
}

// usable counts the sources not dropped.
func (p *picker) usable() int {
	n := 0
	for _, s := range p.sources {
		if !s.stats.Dropped {
			n++
		}
	}
	return n
}

// arrange keeps the active set: sources dropped, or failing while others
// are waiting, give way; every activeRefresh the slowest gives way too; free
// places go to random candidates. It returns the sources that stopped being
// active, whose have requests the caller cancels.
func (p *picker) arrange(now time.Time) (left []*srcState) {
	var actives, candidates []*srcState
	for _, s := range p.sources {
		switch {
		case s.active && s.stats.Dropped:
			s.active = false
			left = append(left, s)
		case s.active:
			actives = append(actives, s)
		case s.usable(now):
			candidates = append(candidates, s)
		}
	}
	if p.refresh.IsZero() {
		// The first refresh comes after a random part of a period, so that
		// downloads started together do not all refresh together.
		p.refresh = now.Add(activeRefresh/2 + time.Duration(p.rng.Int64N(int64(activeRefresh/2))))
	}
	if len(candidates) > 0 {
		kept := actives[:0]
		for _, s := range actives {
			if s.fails >= activeFailures {
				s.active = false
				left = append(left, s)
				continue
			}
			kept = append(kept, s)
		}
		actives = kept
		if !now.Before(p.refresh) && len(actives) >= p.maxActive {
			var slowest *srcState
			for _, s := range actives {
				if s.superSeeding() || now.Sub(s.activeAt) < activeRefresh {
					continue
				}
				if slowest == nil || s.got < slowest.got || (s.got == slowest.got && p.rng.IntN(2) == 0) {
					slowest = s
				}
			}
			if slowest != nil {
				slowest.active = false
				left = append(left, slowest)
				for k, s := range actives {
					if s == slowest {
						actives = append(actives[:k], actives[k+1:]...)
						break
					}
				}
			}
		}
	}
	if !now.Before(p.refresh) {
		p.refresh = now.Add(activeRefresh)
		for _, s := range p.sources {
			s.got = 0
		}
	}
	if len(left) > 0 {
		p.unstarveSeeds() // chunks that only the sources that left offered
	}
	for len(actives) < p.maxActive && len(candidates) > 0 {
		k := p.rng.IntN(len(candidates))
		s := candidates[k]
		candidates[k] = candidates[len(candidates)-1]
		candidates = candidates[:len(candidates)-1]
		if s.stats.Dropped {
			continue
		}
		s.active, s.activeAt = true, now
		actives = append(actives, s)
	}
	return left
}

// nextWake returns when the state changes without an event: a backoff or a
// pause before a have request ends, or the active set is due for a refresh
// (the zero time: at once).
func (p *picker) nextWake(now time.Time) time.Time {
	next := p.refresh
	if next.IsZero() {
		return now
	}
	for _, s := range p.sources {
		if !s.active || s.stats.Dropped {
			if !s.active && !s.stats.Dropped && s.backoff.After(now) {
				next = minTime(next, s.backoff) // a candidate becomes usable
			}
			continue
		}
		if s.backoff.After(now) {
			next = minTime(next, s.backoff)
		} else if !s.asking && s.known && s.askAt.After(now) {
			next = minTime(next, s.askAt)
		}
		if end := s.waitFrom.Add(s.grace()); !s.seed && s.waiting() && end.After(now) {
			next = minTime(next, end) // its offer stops holding the seeds back
		}
	}
	return next
}

// expireGrace makes the seeds look again at what they offer when an active
// partial source's grace ran out since the last call: its offer no
// longer holds them back (see pickFree).
func (p *picker) expireGrace(now time.Time) {
	for _, s := range p.sources {
		if !s.active || s.seed || !s.waiting() {
			continue
		}
		if end := s.waitFrom.Add(s.grace()); end.After(p.graceAt) && !end.After(now) {
			p.unstarveSeeds()
			break
		}
	}
	p.graceAt = now
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// wantsHave reports whether to ask s what it offers now: always at first;
// then, for a HaveWaiter, with a long poll kept parked all the time it is
// active and offers less than everything (it answers when its offer changes:
// BitTorrent's HAVE, so that rarest-first sees what the active set holds
// now, not what it held when it last ran dry) or after it answered busy (it
// answers when it has room for us); for other sources, again every
// HaveInterval while they offer nothing we need.
func (p *picker) wantsHave(s *srcState, now time.Time) bool {
	switch {
	case !s.active || s.asking:
		return false
	case !s.known:
		return true
	case s.choked:
		return true
	case s.have.Full() || now.Before(s.askAt):
		return false
	case s.waiter:
		return true
	}
	return s.starved && s.inflight == 0
}

// next returns the chunk to ask of s now, or -1: the rarest free chunk it
// offers, or in the endgame (every needed chunk in flight) a duplicate of the
// oldest single request to another source. A -1 marks s starved.
func (p *picker) next(s *srcState, now time.Time, free int) (chunk int, endgame bool) {
	if free > 0 {
		if s.starved {
			return -1, false
		}
		if i := p.pickFree(s, now); i >= 0 {
			return i, false
		}
		s.starved = true
		return -1, false
	}
	// In the endgame a starved source is looked at all the same: a seed
	// starved while peers offered the last chunks must race the peer they
	// went to, which may be gone or slow (the requests in flight are few).
	if i := p.pickEndgame(s); i >= 0 {
		return i, true
	}
	s.starved = true // ask again what it has: it may have gained a chunk to race for
	return -1, false
}

// pickFree chooses the rarest needed chunk that is not in flight and that s
// offers, scanning from a random point: the random start spreads concurrent
// requests, and concurrent downloaders, over the share, so that a seed is not
// asked for the same chunk twice while other chunks wait; chunks are written
// where they belong, so order costs nothing. It returns -1 if s offers none.
//
// From a super-seeding seed (one that offers fewer chunks than it holds) it
// takes only chunks that no partial source of the active set offers
// (peerOffers): such a seed's upload is what brings new chunks into the
// swarm, and a copy of a chunk that peers already pass around is taken from
// them (BitTorrent's super-seeding, seen from the downloader's side). A
// seed that offers every chunk has upload to spare (node/seeding.go) and is
// asked for any chunk, as any source is. A
// partial source that left, failed, or kept the download waiting its grace
// without delivering does not count, so a download never waits on a peer
// that cannot deliver while a seed could. When no partial source delivers,
// a seed is asked for any chunk, offered or not (an offer is a hint, see
// transfer/doc.go): a super-seeding seed does not offer the chunks it sent
// lately, and the peers it sent them to may be gone; when some do, a seed
// with nothing offered to send and no request of ours is asked for one
// chunk it holds that none of them offers. Once every needed chunk is in
// flight, the endgame may still race a seed.
func (p *picker) pickFree(s *srcState, now time.Time) int {
	var peers Bitfield
	alone := false // s is a seed and no partial source delivers: its offer is no limit
	if s.superSeeding() {
		peers, alone = p.peerOffers(s, now)
	}
	i := p.pickFreeOf(s, peers, alone)
	if i < 0 && s.seed && !alone && s.inflight == 0 {
		// Nothing it offers is wanted from it: ask it, one at a time, for
		// a chunk it holds but does not offer that no peer that delivers
		// offers either (it sent it lately, maybe to peers now gone).
		i = p.pickFreeOf(s, peers, true)
	}
	return i
}

// pickFreeOf is pickFree's scan: the rarest free chunk s offers (any, if
// anyOffer) that no source in peers offers.
func (p *picker) pickFreeOf(s *srcState, peers Bitfield, anyOffer bool) int {
	alone := anyOffer
	limited := s.seed && len(peers.b) > 0 // a super-seeding seed: peers' offers are not asked of it
	n := len(p.avail)
	best, bestAvail := -1, int32(1<<30)
	start := p.rng.IntN(n)
	for k := 0; k < n; k++ {
		i := start + k
		if i >= n {
			i -= n
		}
		if i%8 == 0 && i+8 <= n && (p.need.b[i/8] == 0 || !alone && s.have.b[i/8] == 0 || limited && peers.b[i/8] == 0xff) {
			k += 7 // eight chunks held, not offered, or offered by peers, at once
			continue
		}
		if !p.need.Has(i) || len(p.inflight[i]) > 0 || !alone && !s.have.Has(i) || limited && peers.Has(i) {
			continue
		}
		if p.avail[i] < bestAvail {
			best, bestAvail = i, p.avail[i]
			if bestAvail <= 1 {
				break
			}
		}
	}
	return best
}

// peerOffers returns the chunks offered by the active partial sources other
// than s that deliver (srcState.delivers: choked ones included for their
// grace: they answer when they have room). Sources that failed, were
// dropped, are gone, left the active set or kept the download waiting
// longer do not count, so a seed serves what only they held; nor do those
// whose chunks take slowPeer times as long as the seed's (a 1 Mbit/s DSL
// uplink beside a fibre seed: asking the seed only for what they lack would
// leave its upload idle while the download waits on them; where the seed's
// upload is what the swarm waits on, its chunks take as long as the peers').
// alone reports that no partial source counts.
func (p *picker) peerOffers(s *srcState, now time.Time) (offers Bitfield, alone bool) {
	if len(p.scratch.b) != (len(p.avail)+7)/8 {
		p.scratch = NewBitfield(len(p.avail))
	}
	bf := p.scratch
	clear(bf.b)
	alone = true
	for _, o := range p.sources {
		if o == s || o.seed || !o.active || !o.delivers(now) {
			continue
		}
		if s.chunkTime > 0 && o.chunkTime > slowPeer*s.chunkTime {
			continue
		}
		alone = false
		for k := range bf.b {
			bf.b[k] |= o.have.b[k]
		}
	}
	return bf, alone
}

// pickEndgame is for when every missing chunk is in flight: it returns the
// chunk with a single request, from another source, that s offers and whose
// request is the oldest, or -1. The first copy to arrive wins; the other is
// cancelled.
func (p *picker) pickEndgame(s *srcState) int {
	var oldest *request
	for i, reqs := range p.inflight {
		if len(reqs) != 1 || reqs[0].s == s || !p.need.Has(i) || !s.have.Has(i) {
			continue
		}
		if oldest == nil || reqs[0].started.Before(oldest.started) {
			oldest = reqs[0]
		}
	}
	if oldest == nil {
		return -1
	}
	return oldest.i
}

// start records a request for chunk i to s.
func (p *picker) start(i int, s *srcState, now time.Time) *request {
	req := &request{i: i, s: s, started: now}
	if !s.waiting() {
		s.waitFrom = now
	}
	p.inflight[i] = append(p.inflight[i], req)
	p.active++
	s.inflight++
	return req
}

// received records that req's chunk arrived whole and checked out: its
// source is free for another request while the chunk is written. queued is
// how long the source kept the request in line before sending (Queued): it
// is not part of the latency sample, which stands for a round trip and the
// chunk's sending time.
func (p *picker) received(req *request, n int64, queued time.Duration, now time.Time) {
	req.received = true
	s := req.s
	p.active--
	s.inflight--
	s.fails = 0 // it works
	s.got += n
	s.waitFrom = now
	lat := now.Sub(req.started)
	if queued > 0 && queued < lat {
		lat -= queued
	}
	s.done = append(s.done, sample{at: now, n: n, latency: lat})
	if s.chunkTime == 0 {
		s.chunkTime = lat
	} else {
		s.chunkTime = (s.chunkTime + lat) / 2
	}
}

// finish removes req from the requests in flight. If ok and its chunk was
// still needed, it won: the chunk is held now, and finish returns the other
// requests for it, which lost the race.
func (p *picker) finish(req *request, ok bool) (won bool, lost []*request) {
	if !req.received {
		p.active--
		req.s.inflight--
	}
	i := req.i
	reqs := p.inflight[i]
	for k, q := range reqs {
		if q == req {
			reqs = append(reqs[:k], reqs[k+1:]...)
			break
		}
	}
	if len(reqs) == 0 {
		delete(p.inflight, i)
	} else {
		p.inflight[i] = reqs
	}
	if !ok || !p.need.Has(i) {
		return false, nil
	}
	p.need.Clear(i)
	for _, q := range p.inflight[i] {
		q.lost = true
	}
	return true, p.inflight[i]
}

// requeueAll makes every needed chunk available to pick again.
func (p *picker) requeueAll() {
	for _, s := range p.sources {
		s.starved = false
	}
}

// requeue makes chunk i available to pick again: the sources that offer it
// are not starved any more.
func (p *picker) requeue(i int) {
	for _, s := range p.sources {
		if s.known && s.have.Has(i) {
			s.starved = false
		}
	}
}

// offered records what s offers now (a have answer, at now), and whether it
// holds every chunk. The answer also ends a choke (see HaveWaiter), and shows
// s is there.
func (p *picker) offered(s *srcState, bf Bitfield, seed bool, now time.Time) {
	if s.known {
		for k := range bf.b {
			if d := s.have.b[k] ^ bf.b[k]; d != 0 {
				for j := range 8 {
					if d&(0x80>>j) == 0 {
						continue
					}
					if i := k*8 + j; bf.Has(i) {
						p.avail[i]++
					} else {
						p.avail[i]--
					}
				}
			}
		}
	} else {
		for i := range len(p.avail) {
			if bf.Has(i) {
				p.avail[i]++
			}
		}
	}
	if !seed || !s.seed {
		p.unstarveSeeds() // what the active peers offer changed (see pickFree)
	}
	s.have, s.known, s.seed = bf, true, seed
	s.starved, s.choked, s.fails, s.gone, s.waitFrom = false, false, 0, false, now
}

// gone records that s left (Download.SourceGone): its offer no longer holds
// the seeds back, it gives way in the active set as one that failed does,
// and it is not asked again before Backoff(activeFailures), nor counted on
// until it answers a have request.
func (p *picker) gone(s *srcState, now time.Time) {
	s.gone = true
	s.fails = max(s.fails, activeFailures)
	s.failAt = now
	s.backoff = now.Add(Backoff(activeFailures))
	p.unstarveSeeds()
}

// unstarveSeeds makes the seeds look again at what they offer: a seed is
// asked only for chunks the active peers do not offer (see pickFree), so a
// change of those offers may give it chunks to send, and a seed that offers
// every chunk is not polled (it has no news) to learn it otherwise.
func (p *picker) unstarveSeeds() {
	for _, s := range p.sources {
		if s.seed {
			s.starved = false
		}
	}
}

// notHeld records that s does not hold chunk i after all.
func (p *picker) notHeld(s *srcState, i int) {
	if s.known && s.have.Has(i) {
		s.have.Clear(i)
		p.avail[i]--
	}
}

// failed counts a failure of s for a request started at started (zero: a
// have request) and returns how long to leave s alone. Requests that were
// already in flight when a failure was counted fail together (a restarted
// server resets them all) and count once: they return 0.
func (p *picker) failed(s *srcState, now, started time.Time) time.Duration {
	if !started.IsZero() && started.Before(s.failAt) {
		return 0
	}
	s.fails++
	s.failAt = now
	p.unstarveSeeds()        // s's chunks no longer count against a seed's (see peerOffers)
	back := Backoff(s.fails) // the policy of every request of a transfer: see retry.go
	s.backoff = now.Add(back)
	return back
}

// busy records that s answered busy. A HaveWaiter is choked until its next
// have answer, which it gives when it has room for us; another source is
// left alone for Backoff(1). This is no failure: the pause does not grow.
func (p *picker) busy(s *srcState, now time.Time) {
	if s.waiter {
		s.choked = true
		return
	}
	s.backoff = now.Add(Backoff(1))
}
