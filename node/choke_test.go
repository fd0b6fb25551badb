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
	u      *uploads
	mu     sync.Mutex
	offers map[transfer.ID]uint32
	id     transfer.ID
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
	f.u = newUploads(slot, func(id transfer.ID) (uint32, bool) {
		f.mu.Lock()
		defer f.mu.Unlock()
		d, ok := f.offers[id]
		return d, ok
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

func TestUploadsNewsAnsweredWhenThereIsRoom(t *testing.T) {
	f := newChokeFixture(t, 100)
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
