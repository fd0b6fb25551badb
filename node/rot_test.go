package node

import (
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sharefiles/share/transfer/transfertest"
)

// TestRotRefetchedFromSwarm: a peer restarts on a store whose file changed
// on disk meanwhile. The first time it reads the rotten chunk to serve it,
// it drops the chunk (not served, shown as damaged, counted) and fetches it
// again from the swarm; the downloader it was serving gets the chunk from
// the peer that has a good copy. Nobody receives a bad chunk.
func TestRotRefetchedFromSwarm(t *testing.T) {
	const chunk = 64 << 10
	content := transfertest.Bytes(50, 48*chunk)
	dirA := t.TempDir()
	a := testNode(t, dirA, nil)
	sh := importShare(t, a, "rot.bin", content, chunk)
	id, data := sh.ID(), sh.DataPath()
	a.Close()
	a.store.Close()
	f, err := os.OpenFile(data, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("rot"), 20*chunk+5)
	f.Close()

	a = testNode(t, dirA, nil)
	b := testNode(t, "", nil, a)
	fetch(t, b, id)
	// b's only source is a: it gets every chunk but the rotten one.
	deadline := time.Now().Add(time.Minute)
	for {
		ash, err := a.Get(id)
		if err == nil && ash.Damaged() == 1 && !ash.HasChunk(20) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the peer did not find its rotten chunk while serving")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		st := a.Status(t.Context()).(Status)
		if len(st.Shares) == 1 && st.Shares[0].Damaged == 1 && !st.Shares[0].Complete && st.Shares[0].Downloading {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status of the damaged peer: %+v, want damaged 1, not complete, downloading", st.Shares)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A peer with a good copy joins: both get the chunk from it.
	c := testNode(t, "", nil, a)
	importShare(t, c, "rot.bin", content, chunk)
	sameContent(t, waitComplete(t, b, id, time.Minute), content)
	ash := waitComplete(t, a, id, time.Minute)
	sameContent(t, ash, content)
	if ash.Damaged() != 0 || a.DamagedChunks() != 1 {
		t.Fatalf("repaired peer: damaged %d, counted %d; want 0, 1", ash.Damaged(), a.DamagedChunks())
	}
	if bad := testutil.ToFloat64(b.m.badChunks) + testutil.ToFloat64(a.m.badChunks); bad != 0 {
		t.Fatalf("%v bad chunks were sent", bad)
	}
}
