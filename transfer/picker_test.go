package transfer

import (
	"cmp"
	"math/rand/v2"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func testPicker(n int, opts DownloadOptions) *picker {
	opts.MaxInFlight = cmp.Or(opts.MaxInFlight, 16)
	opts.PerSource = cmp.Or(opts.PerSource, 8)
	opts.MaxActive = cmp.Or(opts.MaxActive, DefaultMaxActive)
	return newPicker(n, MinChunkSize, FullBitfield(n), opts, rand.New(rand.NewPCG(1, 2)))
}

// offer returns a bitfield of n chunks holding the given ones.
func offer(n int, held ...int) Bitfield {
	bf := NewBitfield(n)
	for _, i := range held {
		bf.Set(i)
	}
	return bf
}

func source(p *picker, name string, have Bitfield) *srcState {
	s := &srcState{name: name, waiter: true, active: true}
	p.add(s)
	p.offered(s, have, have.Full(), t0)
	return s
}

// superSeed adds a seed that super-seeds: it holds every chunk and offers
// all but the last (it sent that one lately).
func superSeed(p *picker, name string) *srcState {
	n := len(p.avail)
	bf := FullBitfield(n)
	bf.Clear(n - 1)
	s := &srcState{name: name, waiter: true, active: true}
	p.add(s)
	p.offered(s, bf, true, t0)
	return s
}

// pickFree must find the one chunk left wherever it is, whatever the random
// start: a regression test for skipping whole bytes of held chunks.
func TestPickFreeFindsEveryChunk(t *testing.T) {
	for _, n := range []int{1, 7, 8, 9, 10, 17, 64} {
		for last := range n {
			p := testPicker(n, DownloadOptions{})
			p.need = offer(n, last)
			s := source(p, "s", FullBitfield(n))
			for range 20 {
				if got := p.pickFree(s, t0); got != last {
					t.Fatalf("n=%d: picked %d, want %d", n, got, last)
				}
			}
		}
	}
}

func TestPickFreeRarestFirst(t *testing.T) {
	for _, tc := range []struct {
		name     string
		need     []int        // nil: all
		offers   [][]int      // what other sources offer (availability)
		mine     []int        // what the source asked offers
		inflight []int        // chunks already requested
		want     map[int]bool // acceptable picks; empty: -1
	}{
		{name: "the rarest", offers: [][]int{{0, 1, 2}, {0, 1}}, mine: []int{0, 1, 2, 3}, want: map[int]bool{3: true}},
		{name: "rarest of those offered", offers: [][]int{{0, 1}, {0}}, mine: []int{0, 1}, want: map[int]bool{1: true}},
		{name: "ties: any", offers: [][]int{{0, 1, 2, 3}}, mine: []int{1, 2}, want: map[int]bool{1: true, 2: true}},
		{name: "not in flight", mine: []int{0, 1}, inflight: []int{0}, want: map[int]bool{1: true}},
		{name: "not held", need: []int{5}, mine: []int{0, 1, 5}, want: map[int]bool{5: true}},
		{name: "nothing offered we need", need: []int{2}, mine: []int{0, 1}, want: map[int]bool{}},
		{name: "everything in flight", mine: []int{0}, inflight: []int{0}, want: map[int]bool{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 16
			p := testPicker(n, DownloadOptions{})
			if tc.need != nil {
				p.need = offer(n, tc.need...)
			}
			for k, o := range tc.offers {
				source(p, string(rune('a'+k)), offer(n, o...))
			}
			s := source(p, "me", offer(n, tc.mine...))
			for _, i := range tc.inflight {
				p.start(i, s, t0)
			}
			for range 50 {
				got := p.pickFree(s, t0)
				if len(tc.want) == 0 && got != -1 || len(tc.want) > 0 && !tc.want[got] {
					t.Fatalf("picked %d, want one of %v", got, tc.want)
				}
			}
		})
	}
}

func TestNextEndgame(t *testing.T) {
	const n = 4
	p := testPicker(n, DownloadOptions{})
	p.need = offer(n, 1, 2, 3)
	a := source(p, "a", FullBitfield(n))
	b := source(p, "b", FullBitfield(n))
	c := source(p, "c", offer(n, 0, 1))
	p.start(3, a, t0.Add(2*time.Second))
	p.start(2, a, t0) // the oldest
	p.start(1, a, t0.Add(time.Second))
	if i, endgame := p.next(b, t0, p.free()); i != 2 || !endgame {
		t.Fatalf("b: next = %d, %v; want the oldest single request, 2, as endgame", i, endgame)
	}
	p.start(2, b, t0.Add(3*time.Second))
	if i, _ := p.next(b, t0, p.free()); i != 1 {
		t.Fatalf("b: next = %d, want 1 (2 has two requests)", i)
	}
	if i, _ := p.next(c, t0, p.free()); i != 1 {
		t.Fatalf("c: next = %d, want 1, the only one it offers", i)
	}
	if i, _ := p.next(a, t0, p.free()); i != -1 || !a.starved {
		t.Fatalf("a: next = %d (starved %v); it has every request already", i, a.starved)
	}
	// The first copy wins; the other request for the chunk lost.
	reqs := append([]*request(nil), p.inflight[2]...)
	p.received(reqs[1], MinChunkSize, 0, t0)
	won, lost := p.finish(reqs[1], true)
	if !won || len(lost) != 1 || lost[0] != reqs[0] || !reqs[0].lost {
		t.Fatalf("finish: won %v, lost %v", won, lost)
	}
	if won, _ := p.finish(reqs[0], true); won {
		t.Fatal("the second copy won too")
	}
	if p.active != 2 || a.inflight != 2 || b.inflight != 0 {
		t.Fatalf("in flight: %d in all, a %d, b %d", p.active, a.inflight, b.inflight)
	}
}

func TestDepth(t *testing.T) {
	const mib = 1 << 20
	// samples spreads the given bytes over the rate window at rate bytes/s,
	// each chunk taking latency.
	samples := func(rate float64, chunk int64, latency time.Duration) []sample {
		var out []sample
		every := time.Duration(float64(chunk) / rate * float64(time.Second))
		for at := t0.Add(-rateWindow + every); !at.After(t0); at = at.Add(every) {
			out = append(out, sample{at: at, n: chunk, latency: latency})
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		done  []sample
		chunk int64
		limit int
		want  int
	}{
		{"no rate yet", nil, mib, 8, minDepth},
		{"no rate yet, limit 1", nil, mib, 1, 1},
		{"slow seed: 1 MiB/s, 1 MiB chunks", samples(mib, mib, time.Second), mib, 8, minDepth},
		{"8 MiB/s, 1 MiB chunks, loopback", samples(8*mib, mib, 125*time.Millisecond), mib, 8, 4},
		{"8 MiB/s, 128 KiB chunks, 80 ms round trip", samples(8*mib, 128<<10, 96*time.Millisecond), 128 << 10, 32, 23},
		{"the same, limited", samples(8*mib, 128<<10, 96*time.Millisecond), 128 << 10, 8, 8},
		{"1 MiB/s, 256 KiB chunks, 80 ms round trip", samples(mib, 256<<10, 330*time.Millisecond), 256 << 10, 32, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &srcState{done: tc.done}
			if got := s.depth(t0, tc.chunk, tc.limit); got != tc.want {
				t.Fatalf("depth = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestWantsHave(t *testing.T) {
	const n = 8
	for _, tc := range []struct {
		name string
		s    srcState
		want bool
	}{
		{"candidate", srcState{waiter: true}, false},
		{"first contact", srcState{active: true, waiter: true}, true},
		{"asking already", srcState{active: true, asking: true}, false},
		{"long poll when starved", srcState{active: true, waiter: true, known: true, starved: true, have: offer(n, 1)}, true},
		{"long poll while it has chunks for us (HAVE)", srcState{active: true, waiter: true, known: true, have: offer(n, 1)}, true},
		{"long poll while requests run", srcState{active: true, waiter: true, known: true, inflight: 2, have: offer(n, 1)}, true},
		{"a full source has no news", srcState{active: true, waiter: true, known: true, starved: true, have: FullBitfield(n)}, false},
		{"choked: poll for a grant", srcState{active: true, waiter: true, known: true, choked: true, have: FullBitfield(n)}, true},
		{"no poll: ask again when idle", srcState{active: true, known: true, starved: true, have: offer(n, 1)}, true},
		{"no poll: not while requests run", srcState{active: true, known: true, starved: true, inflight: 1, have: offer(n, 1)}, false},
		{"no poll: not before HaveInterval", srcState{active: true, known: true, starved: true, have: offer(n, 1), askAt: t0.Add(time.Second)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPicker(n, DownloadOptions{})
			if got := p.wantsHave(&tc.s, t0); got != tc.want {
				t.Fatalf("wantsHave = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestArrangeActiveSet(t *testing.T) {
	const n = 8
	actives := func(p *picker) (k int) {
		for _, s := range p.sources {
			if s.active {
				k++
			}
		}
		return k
	}
	mk := func(sources int) (*picker, []*srcState) {
		p := testPicker(n, DownloadOptions{MaxActive: 3})
		var ss []*srcState
		for k := range sources {
			s := &srcState{name: string(rune('a' + k)), waiter: true}
			p.add(s)
			ss = append(ss, s)
		}
		return p, ss
	}
	t.Run("fills up to MaxActive", func(t *testing.T) {
		p, _ := mk(10)
		if left := p.arrange(t0); len(left) != 0 || actives(p) != 3 {
			t.Fatalf("%d active, %d left", actives(p), len(left))
		}
		p2, _ := mk(2)
		p2.arrange(t0)
		if actives(p2) != 2 {
			t.Fatalf("%d active of 2 sources", actives(p2))
		}
	})
	t.Run("a dropped source gives way", func(t *testing.T) {
		p, ss := mk(4)
		p.arrange(t0)
		var gone *srcState
		for _, s := range ss {
			if s.active {
				gone = s
				break
			}
		}
		gone.stats.Dropped = true
		left := p.arrange(t0.Add(time.Second))
		if len(left) != 1 || left[0] != gone || actives(p) != 3 {
			t.Fatalf("left %v, %d active", left, actives(p))
		}
	})
	t.Run("a failing source gives way only to a candidate", func(t *testing.T) {
		p, ss := mk(3)
		p.arrange(t0)
		ss[0].fails = activeFailures
		if left := p.arrange(t0.Add(time.Second)); len(left) != 0 || !ss[0].active {
			t.Fatal("the only sources must stay active")
		}
		p.add(&srcState{name: "new", waiter: true})
		if left := p.arrange(t0.Add(time.Second)); len(left) != 1 || left[0] != ss[0] || actives(p) != 3 {
			t.Fatalf("left %v, %d active", left, actives(p))
		}
	})
	t.Run("the slowest gives way every refresh", func(t *testing.T) {
		p, ss := mk(5)
		p.arrange(t0)
		var act []*srcState
		for _, s := range ss {
			if s.active {
				act = append(act, s)
			}
		}
		act[0].got, act[1].got, act[2].got = 3<<20, 1<<20, 2<<20
		if left := p.arrange(t0.Add(activeRefresh / 4)); len(left) != 0 {
			t.Fatal("replaced before a refresh")
		}
		left := p.arrange(t0.Add(activeRefresh))
		if len(left) != 1 || left[0] != act[1] || act[1].active || actives(p) != 3 {
			t.Fatalf("left %v, want %s", left, act[1].name)
		}
		for _, s := range ss {
			if s.got != 0 {
				t.Fatal("rates are not reset at a refresh")
			}
		}
		// A source made active in the middle of a period is not replaced at
		// the end of it, however slow.
		var dropped *srcState
		for _, s := range ss {
			if s.active {
				s.got = 1 << 20
				if dropped == nil {
					dropped = s
				}
			}
		}
		dropped.stats.Dropped = true
		p.arrange(t0.Add(activeRefresh * 3 / 2))
		var newcomer *srcState
		for _, s := range ss {
			if s.active && s.activeAt.Equal(t0.Add(activeRefresh*3/2)) {
				newcomer = s
			}
		}
		if newcomer == nil {
			t.Fatal("no source replaced the dropped one")
		}
		for _, s := range p.arrange(t0.Add(2 * activeRefresh)) {
			if s == newcomer {
				t.Fatalf("%s replaced after half a period", s.name)
			}
		}
	})
	t.Run("a super-seeding seed stays", func(t *testing.T) {
		p, ss := mk(4)
		p.arrange(t0)
		for _, s := range ss {
			if s.active {
				s.got = 1 << 20
			}
		}
		var seed *srcState
		for _, s := range ss {
			if s.active {
				seed = s
				break
			}
		}
		seed.got = 0
		p.offered(seed, offer(n, 3), true, t0)
		for _, s := range p.arrange(t0.Add(activeRefresh)) {
			if s == seed {
				t.Fatal("the super-seeding seed was replaced for being slow")
			}
		}
	})
}

func TestOfferedKeepsAvailability(t *testing.T) {
	const n = 20
	p := testPicker(n, DownloadOptions{})
	a := source(p, "a", offer(n, 0, 1, 9, 17))
	b := source(p, "b", offer(n, 1, 2))
	p.offered(a, offer(n, 0, 2, 9, 19), false, t0) // lost 1 and 17, gained 2 and 19
	want := map[int]int32{0: 1, 1: 1, 2: 2, 9: 1, 17: 0, 19: 1}
	for i := range n {
		if p.avail[i] != want[i] {
			t.Fatalf("avail[%d] = %d, want %d", i, p.avail[i], want[i])
		}
	}
	b.choked, b.starved = true, true
	p.offered(b, offer(n, 1, 2), false, t0)
	if b.choked || b.starved {
		t.Fatal("a have answer must end a choke and a starvation")
	}
	p.notHeld(b, 2)
	if p.avail[2] != 1 || b.have.Has(2) {
		t.Fatal("notHeld did not forget the chunk")
	}
}

func TestBusyAndFailures(t *testing.T) {
	p := testPicker(4, DownloadOptions{})
	w := &srcState{waiter: true}
	p.busy(w, t0)
	if !w.choked || !w.backoff.IsZero() {
		t.Fatal("a busy HaveWaiter must be choked until its next answer, without a pause")
	}
	o := &srcState{}
	p.busy(o, t0)
	if o.choked || o.backoff.Before(t0.Add(minBackoff/2)) || o.backoff.After(t0.Add(minBackoff)) {
		t.Fatalf("a busy source without long polls pauses %v", o.backoff.Sub(t0))
	}
	s := &srcState{}
	var last time.Duration
	for k := range 8 {
		now := t0.Add(time.Duration(k) * time.Minute)
		back := p.failed(s, now, now)
		if back < last/2 || back > maxBackoff {
			t.Fatalf("failure %d: backoff %v after %v", k+1, back, last)
		}
		last = back
	}
	if s.fails != 8 {
		t.Fatalf("fails = %d", s.fails)
	}
	// Requests in flight when a failure was counted fail with it.
	if back := p.failed(s, t0.Add(8*time.Minute), t0.Add(7*time.Minute-time.Second)); back != 0 || s.fails != 8 {
		t.Fatal("a request started before the last failure counted again")
	}
}

func TestNextWake(t *testing.T) {
	const n = 8
	p := testPicker(n, DownloadOptions{})
	if got := p.nextWake(t0); !got.Equal(t0) {
		t.Fatalf("before the first arrange: %v, want at once", got)
	}
	a := source(p, "a", offer(n, 1))
	b := source(p, "b", offer(n, 2))
	c := &srcState{name: "c", waiter: true} // a candidate
	p.add(c)
	p.refresh = t0.Add(activeRefresh)
	if got := p.nextWake(t0); !got.Equal(p.refresh) {
		t.Fatalf("nothing pending: %v, want the refresh", got.Sub(t0))
	}
	a.backoff = t0.Add(300 * time.Millisecond)
	b.waiter, b.askAt = false, t0.Add(200*time.Millisecond)
	c.backoff = t0.Add(100 * time.Millisecond)
	for _, tc := range []struct {
		name string
		do   func()
		want time.Duration
	}{
		{"a candidate's backoff", func() {}, 100 * time.Millisecond},
		{"a have request's pause", func() { c.backoff = time.Time{} }, 200 * time.Millisecond},
		{"an active source's backoff", func() { b.asking = true }, 300 * time.Millisecond},
	} {
		tc.do()
		if got := p.nextWake(t0).Sub(t0); got != tc.want {
			t.Fatalf("%s: wake in %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestPickFreeFromSeed: from a seed a download takes only chunks that no
// active partial source it can ask offers; what only inactive, failing or
// seed sources offer still comes from it.
func TestPickFreeFromSeed(t *testing.T) {
	const n = 8
	for _, tc := range []struct {
		name   string
		peer   []int // what an active partial source offers
		modify func(p *srcState)
		seed   []int // what the seed offers
		want   map[int]bool
	}{
		{name: "chunks no peer offers", peer: []int{0, 1, 2}, seed: []int{0, 1, 2, 3}, want: map[int]bool{3: true}},
		{name: "peers offer all: none", peer: []int{0, 1}, seed: []int{0, 1}, want: map[int]bool{}},
		{name: "a peer out of the active set does not count", peer: []int{0, 1}, seed: []int{0}, modify: func(p *srcState) { p.active = false }, want: map[int]bool{0: true}},
		{name: "a peer backing off does not count", peer: []int{0, 1}, seed: []int{1}, modify: func(p *srcState) { p.backoff = t0.Add(time.Second) }, want: map[int]bool{1: true}},
		{name: "a choked peer counts", peer: []int{0, 1}, seed: []int{0, 1}, modify: func(p *srcState) { p.choked = true }, want: map[int]bool{}},
		{name: "a peer that left does not count", peer: []int{0, 1}, seed: []int{0, 1}, modify: func(p *srcState) { p.gone = true }, want: map[int]bool{0: true, 1: true}},
		{name: "a peer choking us PeerGrace does not count", peer: []int{0, 1}, seed: []int{0, 1}, modify: func(p *srcState) {
			p.choked, p.waitFrom = true, t0.Add(-PeerGrace)
		}, want: map[int]bool{0: true, 1: true}},
		{name: "a peer with requests out and no chunk for PeerGrace does not count", peer: []int{0, 1}, seed: []int{0, 1}, modify: func(p *srcState) {
			p.inflight, p.waitFrom = 2, t0.Add(-PeerGrace)
		}, want: map[int]bool{0: true, 1: true}},
		{name: "a peer that delivered within PeerGrace counts", peer: []int{0, 1}, seed: []int{0, 1}, modify: func(p *srcState) {
			p.inflight, p.waitFrom = 2, t0.Add(-PeerGrace+time.Millisecond)
		}, want: map[int]bool{}},
		{name: "a slow peer is given twice its quickest chunk", peer: []int{0, 1}, seed: []int{0, 1}, modify: func(p *srcState) {
			p.inflight, p.waitFrom = 2, t0.Add(-5*time.Second)
			p.done = []sample{{at: t0.Add(-6 * time.Second), latency: 3 * time.Second}, {at: t0.Add(-5 * time.Second), latency: 4 * time.Second}}
		}, want: map[int]bool{}},
		{name: "an idle peer counts however long ago it delivered", peer: []int{0, 1}, seed: []int{0, 1}, modify: func(p *srcState) {
			p.waitFrom = t0.Add(-time.Hour)
		}, want: map[int]bool{}},
		{name: "another seed does not count", peer: []int{0, 1}, seed: []int{1}, modify: func(p *srcState) { p.seed = true }, want: map[int]bool{1: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPicker(n, DownloadOptions{})
			peer := source(p, "peer", offer(n, tc.peer...))
			source(p, "other", offer(n, 7)) // a partial source that delivers: the seed's offer limits it
			if tc.modify != nil {
				tc.modify(peer)
			}
			s := &srcState{name: "seed", waiter: true, active: true}
			p.add(s)
			p.offered(s, offer(n, tc.seed...), true, t0)
			s.inflight = 1 // a request of ours out: no chunk it does not offer (see TestSeedAloneIsAskedForAnything)
			for range 20 {
				got := p.pickFree(s, t0)
				if len(tc.want) == 0 && got != -1 || len(tc.want) > 0 && !tc.want[got] {
					t.Fatalf("picked %d, want one of %v", got, tc.want)
				}
			}
			// A partial source is served whatever others offer.
			if got := p.pickFree(peer, t0); len(tc.peer) > 0 && got < 0 && !peer.seed {
				t.Fatalf("the peer was asked nothing")
			}
		})
	}
}

// TestSeedUnstarved: a seed found with nothing to send (the peers offer
// all it offers) is looked at again when a peer's offer changes, when a
// peer fails, and when the active set changes: it offers every chunk, so no
// poll of its own would tell it.
func TestSeedUnstarved(t *testing.T) {
	const n = 8
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, p *picker, peer *srcState) (at time.Time) // when to look again
	}{
		{"a peer's offer changed", func(t *testing.T, p *picker, peer *srcState) time.Time {
			p.offered(peer, offer(n, 1), false, t0)
			return t0
		}},
		{"a peer failed", func(t *testing.T, p *picker, peer *srcState) time.Time { p.failed(peer, t0, time.Time{}); return t0 }},
		{"a peer left", func(t *testing.T, p *picker, peer *srcState) time.Time { p.gone(peer, t0); return t0 }},
		{"a peer kept us waiting PeerGrace", func(t *testing.T, p *picker, peer *srcState) time.Time {
			peer.choked = true
			p.refresh = t0.Add(activeRefresh)
			if got := p.nextWake(t0); !got.Equal(t0.Add(PeerGrace)) {
				t.Fatalf("next wake in %v, want PeerGrace", got.Sub(t0))
			}
			p.expireGrace(t0.Add(PeerGrace - time.Millisecond))
			if !p.sources[1].starved {
				t.Fatal("the seed was looked at again before PeerGrace ran out")
			}
			p.expireGrace(t0.Add(PeerGrace))
			return t0.Add(PeerGrace)
		}},
		{"a peer left the active set", func(t *testing.T, p *picker, peer *srcState) time.Time {
			source(p, "candidate", offer(n))
			p.sources[len(p.sources)-1].active = false
			peer.fails = activeFailures
			p.arrange(t0)
			return t0
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPicker(n, DownloadOptions{})
			p.need = offer(n, 0)
			peer := source(p, "peer", offer(n, 0, 1))
			seed := superSeed(p, "seed")
			if i, _ := p.next(seed, t0, 1); i != -1 || !seed.starved {
				t.Fatalf("seed asked for %d (starved %v), want nothing: the peer offers it", i, seed.starved)
			}
			at := tc.change(t, p, peer)
			if i, _ := p.next(seed, at, 1); i != 0 {
				t.Fatalf("seed asked for %d, want 0", i)
			}
		})
	}
}

// TestSeedRacesInEndgame: a seed starved while a peer offered the last
// chunk still races that peer once the chunk is in flight to it (the peer
// may have left without a word): a starved source is looked at in the
// endgame all the same.
func TestSeedRacesInEndgame(t *testing.T) {
	const n = 8
	p := testPicker(n, DownloadOptions{})
	p.need = offer(n, 5)
	peer := source(p, "peer", offer(n, 5))
	seed := superSeed(p, "seed")
	if i, _ := p.next(seed, t0, 1); i != -1 {
		t.Fatalf("seed asked for %d while the peer offers the chunk", i)
	}
	i, _ := p.next(peer, t0, 1)
	if i != 5 {
		t.Fatalf("peer asked for %d, want 5", i)
	}
	p.start(i, peer, t0)
	if i, endgame := p.next(seed, t0, 0); i != 5 || !endgame {
		t.Fatalf("seed asked for %d (endgame %v), want 5 in the endgame", i, endgame)
	}
}

// TestSeedAloneIsAskedForAnything: with no partial source that delivers (the
// peers left), a super-seeding seed is asked for chunks it does not offer:
// it offers only the chunks it sent least lately, and those it sent went to
// peers that are gone.
// TestSeedWithRoomIsAskedForAnything: a seed that offers every chunk is not
// rationing its upload (node/seeding.go: its upload has room), so it is
// asked for the rarest chunk it offers, also one a peer offers, and a
// super-seeding seed is not.
func TestSeedWithRoomIsAskedForAnything(t *testing.T) {
	const n = 8
	p := testPicker(n, DownloadOptions{})
	p.need = offer(n, 2, 3)
	source(p, "peer", offer(n, 2, 3))
	seed := source(p, "seed", FullBitfield(n))
	if !seed.seed || seed.superSeeding() {
		t.Fatalf("seed %v, super-seeding %v; want a seed that is not super-seeding", seed.seed, seed.superSeeding())
	}
	i, _ := p.next(seed, t0, 2)
	if i != 2 && i != 3 {
		t.Fatalf("seed with room asked for %d, want 2 or 3", i)
	}
	p = testPicker(n, DownloadOptions{})
	p.need = offer(n, 2, 3)
	source(p, "peer", offer(n, 2, 3))
	if i, _ := p.next(superSeed(p, "seed"), t0, 2); i != -1 {
		t.Fatalf("super-seeding seed asked for %d the peer offers", i)
	}
}

// TestSlowPeerDoesNotHoldSeedBack: a super-seeding seed is not asked for
// what a partial peer offers, unless that peer's chunks take slowPeer times
// as long as the seed's (a DSL uplink beside a fibre seed).
func TestSlowPeerDoesNotHoldSeedBack(t *testing.T) {
	const n = 8
	for _, tc := range []struct {
		name      string
		peer      time.Duration // the peer's chunk time; the seed's is 1 s
		seedAsked bool
	}{
		{"as fast as the seed", time.Second, false},
		{"slowPeer times slower", slowPeer * time.Second, false},
		{"more than slowPeer times slower", slowPeer*time.Second + time.Millisecond, true},
		{"not measured yet", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPicker(n, DownloadOptions{})
			p.need = offer(n, 2)
			peer := source(p, "peer", offer(n, 2))
			peer.chunkTime = tc.peer
			seed := superSeed(p, "seed")
			seed.chunkTime = time.Second
			i, _ := p.next(seed, t0, 1)
			if got := i == 2; got != tc.seedAsked {
				t.Fatalf("seed asked for %d; want it asked for chunk 2: %v", i, tc.seedAsked)
			}
		})
	}
	// The chunk time is a moving average of the chunks received.
	p := testPicker(n, DownloadOptions{})
	s := source(p, "s", FullBitfield(n))
	for _, lat := range []time.Duration{4 * time.Second, 2 * time.Second} {
		p.received(p.start(0, s, t0), MinChunkSize, 0, t0.Add(lat))
	}
	if s.chunkTime != 3*time.Second {
		t.Fatalf("chunk time %v, want 3s", s.chunkTime)
	}
}

// TestQueuedIsNotLatency: time a source kept a request in line (a server's
// send slots) is not part of the latency sample, so the request depth
// follows the round trip and the sending time, not the length of the line:
// with the line counted, a client sharing a server with 63 others would
// see its depth grow by one with each estimate.
func TestQueuedIsNotLatency(t *testing.T) {
	const n = 64
	p := testPicker(n, DownloadOptions{})
	s := source(p, "server", FullBitfield(n))
	chunk := int64(256 << 10)
	// 19.5 KB/s each (10 Mbit/s shared by 64): a chunk every 13.4 s, each
	// sent in 1.7 s after 26 s in line.
	at := t0
	for i := range 4 {
		req := p.start(i, s, at.Add(-27700*time.Millisecond))
		p.received(req, chunk, 26*time.Second, at)
		p.finish(req, true)
		at = at.Add(13400 * time.Millisecond)
	}
	if lat := s.done[len(s.done)-1].latency; lat != 1700*time.Millisecond {
		t.Fatalf("latency sample %v, want the 1.7s of sending", lat)
	}
	if d := s.depth(at, chunk, 8); d != minDepth {
		t.Fatalf("depth %d, want %d", d, minDepth)
	}
	// A queue time longer than the whole request (a clock off, a lying
	// source) is ignored rather than making the latency negative.
	req := p.start(5, s, at)
	p.received(req, chunk, time.Hour, at.Add(time.Second))
	if lat := s.done[len(s.done)-1].latency; lat != time.Second {
		t.Fatalf("latency sample %v with an impossible queue time, want 1s", lat)
	}
}

func TestSeedAloneIsAskedForAnything(t *testing.T) {
	const n = 8
	p := testPicker(n, DownloadOptions{})
	p.need = offer(n, 5)
	peer := source(p, "peer", offer(n, 1, 5))
	seed := source(p, "seed", offer(n, 0, 1))
	seed.seed = true
	if i, _ := p.next(seed, t0, 1); i != -1 {
		t.Fatalf("seed asked for %d while a peer offers the chunk", i)
	}
	p.gone(peer, t0)
	if i, _ := p.next(seed, t0, 1); i != 5 {
		t.Fatalf("seed alone asked for %d, want 5 (not offered, held)", i)
	}
	// A peer that delivers but lacks the chunk: the seed, with nothing
	// offered to send and no request of ours, is asked for it all the same.
	p = testPicker(n, DownloadOptions{})
	p.need = offer(n, 5, 6)
	source(p, "peer", offer(n, 6))
	seed = source(p, "seed", offer(n, 0, 1))
	seed.seed = true
	if i, _ := p.next(seed, t0, 2); i != 5 {
		t.Fatalf("seed asked for %d, want 5: no peer offers it", i)
	}
	seed.starved, seed.inflight = false, 1
	if i, _ := p.next(seed, t0, 2); i != -1 {
		t.Fatalf("seed with a request out asked for %d it does not offer", i)
	}
}
