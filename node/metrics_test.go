package node

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// series gathers a per-peer counter: value by peer label.
func series(t *testing.T, c *peerCounter) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			out[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	return out
}

// The per-peer counters stay bounded in an open swarm, and their sum is
// always every byte counted.
func TestPeerCounterBounded(t *testing.T) {
	const max = 4
	type step struct {
		after time.Duration // clock advance before the add
		peer  string
		n     float64
	}
	tests := []struct {
		name  string
		steps []step
		want  map[string]float64
	}{
		{"below the bound every peer has a series",
			[]step{{0, "a", 1}, {0, "b", 2}, {0, "a", 3}},
			map[string]float64{"a": 4, "b": 2, "other": 0}},
		{"full and all active: newcomers go to other",
			[]step{{0, "a", 1}, {0, "b", 1}, {0, "c", 1}, {0, "d", 1}, {time.Minute, "e", 5}, {0, "f", 6}, {0, "a", 1}},
			map[string]float64{"a": 2, "b": 1, "c": 1, "d": 1, "other": 11}},
		{"full: the idlest peer gives its series up once idle long enough",
			[]step{{0, "a", 10}, {0, "b", 1}, {0, "c", 1}, {0, "d", 1}, {3 * time.Minute, "b", 1}, {0, "c", 1}, {0, "d", 1}, {3 * time.Minute, "e", 7}},
			map[string]float64{"b": 2, "c": 2, "d": 2, "e": 7, "other": 10}},
		{"a peer that lost its series starts a new one",
			[]step{{0, "a", 10}, {time.Second, "b", 1}, {time.Second, "c", 1}, {time.Second, "d", 1}, {6 * time.Minute, "e", 1},
				{time.Second, "b", 1}, {time.Second, "c", 1}, {time.Second, "d", 1}, {6 * time.Minute, "a", 2}},
			map[string]float64{"a": 2, "b": 2, "c": 2, "d": 2, "other": 11}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Unix(0, 0)
			c := newPeerCounter("test_bytes_total", "test")
			c.max, c.now = max, func() time.Time { return now }
			var total float64
			for _, s := range tt.steps {
				now = now.Add(s.after)
				c.add(s.peer, s.n)
				total += s.n
			}
			got := series(t, c)
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("series %v, want %v", got, tt.want)
			}
			var sum float64
			for _, v := range got {
				sum += v
			}
			if sum != total {
				t.Fatalf("series sum to %v, %v were counted", sum, total)
			}
		})
	}
}

// Ten thousand peers, as an open swarm might bring, make maxPeerSeries+1
// series, and the exposition stays valid.
func TestPeerCounterManyPeers(t *testing.T) {
	c := newPeerCounter("share_peer_bytes_sent_total", "test")
	for k := range 10000 {
		c.add(fmt.Sprintf("12D3KooW%06d", k), 1)
	}
	if n := testutil.CollectAndCount(c); n != maxPeerSeries+1 {
		t.Fatalf("%d series, want %d", n, maxPeerSeries+1)
	}
	got := series(t, c)
	if got[otherPeers] != 10000-maxPeerSeries {
		t.Fatalf("other = %v, want %d", got[otherPeers], 10000-maxPeerSeries)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
}
