package node

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sharefiles/share/transfer"
	"github.com/sharefiles/share/transfer/transfertest"
)

// chokeFixture is an upload queue whose shares' offers a test sets.
type chokeFixture struct {
	u        *uploads
	mu       sync.Mutex
	offers   map[transfer.ID]uint32
	complete bool // the shares are held complete: their offers are a seed's
	id       transfer.ID
}

func newChokeFixture(t *testing.T, slot int64) *chokeFixture {
	f := &chokeFixture{offers: map[transfer.ID]uint32{}}
	m, err := transfer.NewManifest("x.bin", false, transfer.MinChunkSize, []transfer.File{{Path: "x.bin", Size: 1, Mode: 0o644}}, nil,
		[]transfer.Hash{transfer.HashChunk(transfertest.Bytes(1, 1))})
	if err != nil {
		t.Fatal(err)
	}
	f.id = m.ID()
	f.offers[f.id] = 1
	f.u = newUploads(slot, false, func(id transfer.ID) (uint32, bool, bool) {
		f.mu.Lock()
		defer f.mu.Unlock()
		d, ok := f.offers[id]
		return d, f.complete, ok
	})
	return f
}

func (f *chokeFixture) setOffer(d uint32) {
	f.mu.Lock()
	f.offers[f.id] = d
	f.mu.Unlock()
	f.u.changed()
}

func (f *chokeFixture) key(name string) uploadKey { return uploadKey{peer.ID(name), f.id} }

// poll parks a long poll of name in the background and returns once it is
// queued or answered, so that tests can rely on the order of their polls;
// the channel gets whether it was granted.
func (f *chokeFixture) poll(ctx context.Context, name string, known uint32) <-chan bool {
	queued := func() bool {
		f.u.mu.Lock()
		defer f.u.mu.Unlock()
		for _, wt := range f.u.waiters {
			if wt.key == f.key(name) {
				return true
			}
		}
		return false
	}
	ch := make(chan bool, 1)
	go func() { ch <- f.u.wait(ctx, f.key(name), known, 100) }()
	for !queued() && len(ch) == 0 {
		time.Sleep(time.Millisecond)
	}
	return ch
}

func granted(t *testing.T, ch <-chan bool, want bool) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Fatalf("granted = %v, want %v", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("poll not answered")
	}
}

func pending(t *testing.T, ch <-chan bool) {
	t.Helper()
	select {
	case got := <-ch:
		t.Fatalf("poll answered (granted %v), want it waiting", got)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestUploadsAdmitAndChoke(t *testing.T) {
	f := newChokeFixture(t, 100) // room for 200 bytes: one sending, one queued
	for _, tc := range []struct {
		who  string
		w    int64
		want bool
	}{
		{"a", 100, true},
		{"b", 100, true},
		{"c", 1, false}, // full: c is choked
		{"a", 100, false},
	} {
		if got := f.u.admit(f.key(tc.who), tc.w); got != tc.want {
			t.Fatalf("admit(%s, %d) = %v, want %v", tc.who, tc.w, got, tc.want)
		}
	}
	// c and a were refused: their polls are owed the next room, in order,
	// whatever the offer.
	ctx := context.Background()
	pc := f.poll(ctx, "c", 1)
	pa := f.poll(ctx, "a", 1)
	pending(t, pc)
	f.u.done(100)
	granted(t, pc, true)
	pending(t, pa)
	// The room is kept for c: someone else's request is refused, c's taken.
	if f.u.admit(f.key("d"), 10) {
		t.Fatal("a request took the room kept for a granted peer")
	}
	if !f.u.admit(f.key("c"), 100) {
		t.Fatal("the granted peer's request was refused")
	}
	f.u.done(100)
	granted(t, pa, true)
}

func TestUploadsSeedNewsAnsweredWhenThereIsRoom(t *testing.T) {
	f := newChokeFixture(t, 100)
	f.complete = true
	ctx := context.Background()
	// A poll for news waits while the offer is the one it knows.
	p := f.poll(ctx, "a", 1)
	pending(t, p)
	// The offer changes while the upload is full: still waiting.
	f.u.admit(f.key("x"), 100)
	f.u.admit(f.key("y"), 100)
	f.setOffer(2)
	pending(t, p)
	f.u.done(100)
	granted(t, p, true)
	// A poll that knows the new offer waits again.
	p2 := f.poll(ctx, "b", 2)
	f.u.done(100)
	pending(t, p2)
	// A share that is gone answers at once, so the asker learns it.
	f.mu.Lock()
	delete(f.offers, f.id)
	f.mu.Unlock()
	f.u.changed()
	granted(t, p2, true)
}

// TestUploadsPartialNewsAnsweredAtOnce: a partial holder's new chunk is
// told to every poll that waits for news (BitTorrent's HAVE), full upload
// or not, without keeping room for the askers, and ahead of a poll owed room.
func TestUploadsPartialNewsAnsweredAtOnce(t *testing.T) {
	f := newChokeFixture(t, 100)
	ctx := context.Background()
	f.u.admit(f.key("x"), 100)
	f.u.admit(f.key("y"), 100)
	f.u.admit(f.key("r"), 100) // refused: owed the next room
	pr := f.poll(ctx, "r", 1)
	pa := f.poll(ctx, "a", 1)
	pb := f.poll(ctx, "b", 1)
	pending(t, pa)
	f.setOffer(2)
	granted(t, pa, true)
	granted(t, pb, true)
	pending(t, pr) // still no room
	f.u.mu.Lock()
	reserved := f.u.reserved
	f.u.mu.Unlock()
	if reserved != 0 {
		t.Fatalf("news kept %d bytes of room, want none", reserved)
	}
	// Knowing the new offer, a poll waits again; r gets the room that frees.
	pa2 := f.poll(ctx, "a", 2)
	f.u.done(100)
	granted(t, pr, true)
	pending(t, pa2)
}

func TestUploadsGrantExpiresOrIsGivenBack(t *testing.T) {
	f := newChokeFixture(t, 100)
	ctx := context.Background()
	f.u.admit(f.key("x"), 100)
	f.u.admit(f.key("y"), 100)
	f.u.admit(f.key("a"), 100) // refused
	f.u.admit(f.key("b"), 100) // refused
	pa := f.poll(ctx, "a", 1)
	pb := f.poll(ctx, "b", 1)
	f.u.done(100)
	granted(t, pa, true)
	pending(t, pb)
	// a does not ask within grantTTL: its room goes to b.
	start := time.Now()
	granted(t, pb, true)
	if d := time.Since(start); d < grantTTL/2 {
		t.Fatalf("grant moved on after %v, before grantTTL %v", d, grantTTL)
	}
	// b polls again instead of asking: it gives the room back at once.
	f.u.admit(f.key("c"), 100) // refused: b's grant holds the room
	pc := f.poll(ctx, "c", 1)
	pending(t, pc)
	cctx, cancel := context.WithCancel(ctx)
	pb2 := f.poll(cctx, "b", 1)
	granted(t, pc, true)
	cancel()
	granted(t, pb2, false)
	f.u.mu.Lock()
	defer f.u.mu.Unlock()
	if len(f.u.waiters) != 0 {
		t.Fatalf("%d waiters left after their polls ended", len(f.u.waiters))
	}
}

// TestTimingConstantsAgree checks the timing constants of the offer
// contract (transfer/doc.go, "Offers") on both sides.
func TestTimingConstantsAgree(t *testing.T) {
	for _, tc := range []struct {
		what string
		ok   bool
	}{
		{"a download's long poll (transfer.HaveWaitTime) is granted in full (transfer.MaxHaveWait)",
			transfer.HaveWaitTime <= transfer.MaxHaveWait},
		{"room kept for an unchoked peer (grantTTL) lapses long before a poll's wait ends (transfer.HaveWaitTime)",
			4*grantTTL <= transfer.HaveWaitTime},
		{"a choked peer keeps its claim (refusedTTL) as long as its poll may wait (transfer.MaxHaveWait)",
			refusedTTL >= transfer.MaxHaveWait},
		{"offers that change with time (offerTick) are noticed within a poll's wait (transfer.HaveWaitTime)",
			offerTick < transfer.HaveWaitTime},
		{"a download's queue allowance (transfer.DepthQueueTime) fits in a peer's upload queue (2 slots of slotTime)",
			transfer.DepthQueueTime <= 2*slotTime},
		{"a seed's sends count (seedRecent) longer than a poll waits (transfer.HaveWaitTime)",
			seedRecent > transfer.HaveWaitTime},
	} {
		if !tc.ok {
			t.Error(tc.what)
		}
	}
}

// TestUploadWeight: with a cap of share's own a send weighs its chunk, the
// slot at most; without one the slot follows the measured uplink, plus one
// chunk, and one chunk at a time until a rate is measured.
func TestUploadWeight(t *testing.T) {
	const slot = 1 << 20
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		measure bool
		rate    float64 // bytes/s sent over one sample; 0: none
		chunk   int64
		want    int64 // in parts of the slot (slot / want = sends at once)
	}{
		{"capped: small chunks share the slot", false, 0, slot / 4, slot / 4},
		{"capped: a large chunk takes the slot", false, 0, 4 * slot, slot},
		{"measured: one at a time before a rate is known", true, 0, 256 << 10, slot},
		{"measured: dsl uplink, 256 KiB chunks: one at a time", true, 1.2e6, 256 << 10, slot * (256 << 10) / (150000 + 256<<10)},
		{"measured: fast uplink: many at once", true, 800e6, 1 << 20, slot * (1 << 20) / (100_000_000 + 1<<20)},
		{"measured: growing (sends limited by their receivers): twice the room", true, -8e6, 1 << 20, slot * (1 << 20) / (2_000_000 + 1<<20)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newUploads(slot, tc.measure, nil)
			d := rateSample
			switch {
			case tc.rate > 0:
				u.measured.start(t0)
				u.measured.end(t0.Add(d), int64(tc.rate*d.Seconds()))
			case tc.rate < 0: // -r: a sample of r/2, then one of r
				u.measured.start(t0)
				u.measured.end(t0.Add(d), int64(-tc.rate/2*d.Seconds()))
				u.measured.start(t0.Add(time.Second))
				u.measured.end(t0.Add(time.Second+d), int64(-tc.rate*d.Seconds()))
			}
			if got := u.weight(tc.chunk); got != tc.want {
				t.Fatalf("weight(%d) = %d, want %d", tc.chunk, got, tc.want)
			}
		})
	}
}

// TestUploadRate: only time with a send running counts; a sample below the
// estimate moves it half way, one above it is taken at once, and one
// growthFactor above it marks the uplink as growing (see slot).
func TestUploadRate(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var r uploadRate
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	r.start(at(0))
	r.end(at(100), 100_000) // 100 ms busy: no sample yet
	r.start(at(5000))       // idle time between sends does not count
	r.start(at(5050))
	r.end(at(5100), 100_000)
	r.end(at(5150), 50_000) // 250 ms busy, 250 kB: 1 MB/s
	if r.bps != 1e6 {
		t.Fatalf("rate %v, want 1e6", r.bps)
	}
	if r.growing {
		t.Fatal("the first sample marked the uplink growing")
	}
	r.start(at(6000))
	r.end(at(6250), 750_000) // 3 MB/s: taken at once, and growing
	if r.bps != 3e6 || !r.growing {
		t.Fatalf("rate %v, growing %v; want 3e6, true", r.bps, r.growing)
	}
	r.start(at(7000))
	r.end(at(7250), 250_000) // 1 MB/s: half way, 2 MB/s
	if r.bps != 2e6 || r.growing {
		t.Fatalf("rate %v, growing %v; want 2e6, false", r.bps, r.growing)
	}
	r.start(at(8000))
	r.end(at(8250), 550_000) // 2.2 MB/s: taken, but not growthFactor above
	if r.bps != 2.2e6 || r.growing {
		t.Fatalf("rate %v, growing %v; want 2.2e6, false", r.bps, r.growing)
	}
}

// TestUploadsRoomy: a request answered busy ends the upload's room for
// seedRoomAfter.
func TestUploadsRoomy(t *testing.T) {
	f := newChokeFixture(t, 100)
	if !f.u.roomy(time.Now()) {
		t.Fatal("an upload that never refused has no room")
	}
	for _, name := range []string{"a", "b"} {
		if !f.u.admit(f.key(name), 100) {
			t.Fatalf("%s refused with room", name)
		}
	}
	if f.u.admit(f.key("c"), 100) {
		t.Fatal("c admitted beyond capacity")
	}
	now := time.Now()
	if f.u.roomy(now) {
		t.Fatal("room right after a busy answer")
	}
	if !f.u.roomy(now.Add(seedRoomAfter)) {
		t.Fatal("no room seedRoomAfter after the last busy answer")
	}
}
