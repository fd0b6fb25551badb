package node

import (
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sharefiles/share/transfer"
	"github.com/sharefiles/share/transfer/transfertest"
)

// BenchmarkSwarm distributes a 16 MiB share from one seed to 16 peers in
// this process, every upload capped at 1 MiB/s (the bound F/u is 16 s), and
// reports the distribution time against the bound, the copies of the share
// the seed sent, the have answers and busy answers per chunk received, and
// the CPU time of all peers per GiB distributed. All peers share this
// process's cores, so the time is meaningful only on an otherwise idle
// machine; `share bench` measures the same with one process per peer.
func BenchmarkSwarm(b *testing.B) {
	const (
		n    = 16
		size = 16 << 20
		rate = 1 << 20
	)
	content := transfertest.Bytes(3, size)
	capped := func(o *Options) {
		o.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
		o.UploadLimit = transfer.NewLimiter(rate)
	}
	for b.Loop() {
		b.StopTimer()
		seed := testNode(b, "", capped)
		sh := importShare(b, seed, "swarm.bin", content, 0)
		var peers []*Node
		for range n {
			peers = append(peers, testNode(b, "", capped, seed))
		}
		waitAnnounced(b, seed, sh.ID())
		b.StartTimer()
		start, cpu := time.Now(), cpuTime()
		var wg sync.WaitGroup
		for _, p := range peers {
			wg.Go(func() {
				fetch(b, p, sh.ID())
				waitCompleteFast(b, p, sh.ID())
			})
		}
		wg.Wait()
		took, used := time.Since(start), cpuTime()-cpu
		b.StopTimer()
		var busy float64
		for _, p := range append(peers, seed) {
			busy += testutil.ToFloat64(p.m.busy)
		}
		for _, p := range peers {
			sameContent(b, waitComplete(b, p, sh.ID(), time.Second), content)
		}
		b.ReportMetric(took.Seconds()/(size/rate), "x-bound")
		b.ReportMetric(float64(seed.share(sh.ID()).up.Load())/size, "seed-copies")
		b.ReportMetric(busy/float64(n*sh.Manifest().NumChunks()), "busy/chunk")
		b.ReportMetric(used.Seconds()/(float64(n)*size/(1<<30)), "CPU-s/GiB")
		for _, p := range append(peers, seed) {
			p.Close()
		}
		b.StartTimer()
	}
}

// waitAnnounced waits until n has announced id on the DHT.
func waitAnnounced(t testing.TB, n *Node, id transfer.ID) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		st := n.share(id)
		st.mu.Lock()
		done := !st.provided.IsZero()
		st.mu.Unlock()
		if done {
			return
		}
	}
	t.Fatalf("%s not announced", id)
}
