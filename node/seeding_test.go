package node

import (
	"testing"
	"time"

	"github.com/sharefiles/share/transfer"
	"github.com/sharefiles/share/transfer/transfertest"
)

func TestSeedingOffersLeastSentUnclaimed(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	recent, old := now.Add(-seedRecent/2), now.Add(-2*seedRecent)
	for _, tc := range []struct {
		name    string
		sends   []uint16
		sent    []time.Time
		claimed []int32
		want    []int
	}{
		{"nothing sent: everything", nil, nil, nil, []int{0, 1, 2, 3}},
		{"unsent first", []uint16{1, 0, 1, 0}, []time.Time{recent, {}, recent, {}}, nil, []int{1, 3}},
		{"not what is being fetched", []uint16{1, 0, 1, 0}, []time.Time{recent, {}, recent, {}}, []int32{0, 1, 0, 0}, []int{3}},
		{"every unsent chunk claimed: nothing",
			[]uint16{1, 0, 1, 0}, []time.Time{recent, {}, recent, {}}, []int32{0, 1, 0, 1}, []int{0, 2}},
		{"all sent once: all again, least sent first",
			[]uint16{2, 1, 1, 3}, []time.Time{recent, recent, recent, recent}, nil, []int{1, 2}},
		{"an old send does not count", []uint16{2, 1, 1, 3}, []time.Time{recent, recent, recent, old}, nil, []int{3}},
		{"all claimed: nothing", nil, nil, []int32{1, 1, 2, 1}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSeeding(4)
			copy(s.sends, tc.sends)
			copy(s.sent, tc.sent)
			copy(s.claimed, tc.claimed)
			got := s.advertised(now)
			want := map[int]bool{}
			for _, i := range tc.want {
				want[i] = true
			}
			for i := range 4 {
				if got.Has(i) != want[i] {
					t.Fatalf("offer %v, want chunks %v", got.Bytes(), tc.want)
				}
			}
		})
	}
	// A send is counted on release, if the chunk went out whole.
	s := newSeeding(2)
	s.claim(0)
	s.release(0, true, now)
	s.claim(1)
	s.release(1, false, now)
	if s.sends[0] != 1 || s.sends[1] != 0 || s.claimed[0] != 0 || s.claimed[1] != 0 {
		t.Fatalf("sends %v, claimed %v", s.sends, s.claimed)
	}
}

// TestSeedWithRoomOffersEverything: a complete holder whose upload has room
// offers every chunk, also one it is sending; after a busy answer it
// super-seeds again (its offer leaves out what it is sending).
func TestSeedWithRoomOffersEverything(t *testing.T) {
	n := testNode(t, "", nil)
	sh := importShare(t, n, "room.bin", transfertest.Bytes(3, 4*transfer.MinChunkSize), transfer.MinChunkSize)
	n.seedingFor(sh).claim(0)
	if got := n.offer(sh); !got.Full() {
		t.Fatalf("seed with room offers %d of 4 chunks, want all", got.Count())
	}
	n.uploads.lastBusy.Store(time.Now().UnixNano())
	got := n.offer(sh)
	if got.Has(0) || got.Count() != 3 {
		t.Fatalf("seed after a busy answer offers %v, want chunks 1-3 (chunk 0 is being sent)", got.Bytes())
	}
}
