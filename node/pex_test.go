package node

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sharefiles/share/transfer"
	"github.com/sharefiles/share/transfer/transfertest"
)

// A peer that asked for a share is told to the next asker, with its
// addresses; the asker itself is not.
func TestPeerExchange(t *testing.T) {
	seed := testNode(t, "", nil)
	sh := importShare(t, seed, "pex.bin", transfertest.Bytes(4, 100<<10), transfer.MinChunkSize)
	var askers []*Node
	for range 3 {
		a := testNode(t, "", nil, seed)
		if err := a.host.Connect(context.Background(), peer.AddrInfo{ID: seed.ID(), Addrs: seed.host.Addrs()}); err != nil {
			t.Fatal(err)
		}
		src := a.peerSource(seed.ID())
		if _, err := src.Have(context.Background(), sh.ID(), sh.Manifest().NumChunks()); err != nil {
			t.Fatal(err)
		}
		src.Close()
		askers = append(askers, a)
	}
	d := askers[0]
	d.mu.Lock()
	sw := &swarmDownload{id: sh.ID(), added: map[peer.ID]*peerSource{}, d: transfer.NewDownload(mustShare(t, d, sh.Manifest()), transfer.DownloadOptions{})}
	d.mu.Unlock()
	added, err := d.exchangePeers(context.Background(), sw, seed.ID())
	if err != nil {
		t.Fatal(err)
	}
	var got []peer.ID
	for pid := range sw.added {
		got = append(got, pid)
	}
	want := []peer.ID{askers[1].ID(), askers[2].ID()}
	slices.Sort(got)
	slices.Sort(want)
	if added != 2 || !slices.Equal(got, want) {
		t.Fatalf("learned %v (%d new), want the other askers %v", got, added, want)
	}
	if addrs := d.host.Peerstore().Addrs(askers[1].ID()); len(addrs) == 0 {
		t.Fatal("no address learned")
	}
	// An unknown share: nobody.
	other := transfertest.Bytes(9, 1000)
	m, err := transfer.NewManifest("x", false, transfer.MinChunkSize, []transfer.File{{Path: "x", Size: int64(len(other)), Mode: 0o644}}, nil, []transfer.Hash{transfer.HashChunk(other)})
	if err != nil {
		t.Fatal(err)
	}
	sw2 := &swarmDownload{id: m.ID(), added: map[peer.ID]*peerSource{}}
	if added, err := d.exchangePeers(context.Background(), sw2, seed.ID()); err != nil || added != 0 {
		t.Fatalf("unknown share: %d peers, %v", added, err)
	}
}

func mustShare(t *testing.T, n *Node, m *transfer.Manifest) *transfer.Share {
	t.Helper()
	sh, _, err := n.store.Create(m)
	if err != nil {
		t.Fatal(err)
	}
	return sh
}

func TestDecodePEX(t *testing.T) {
	id := "12D3KooWHHzSeKaY8xuZVzkLbKFfvNgPPeKhFBGrMbNzbm5akpqu"
	for _, tc := range []struct {
		name  string
		in    string
		peers int
		ok    bool
	}{
		{"empty", `{"peers":[]}`, 0, true},
		{"one", `{"peers":[{"id":"` + id + `","addrs":["/ip4/10.0.0.1/tcp/7071"]}]}`, 1, true},
		{"no address: left out", `{"peers":[{"id":"` + id + `","addrs":[]}]}`, 0, true},
		{"bad id", `{"peers":[{"id":"nope","addrs":["/ip4/10.0.0.1/tcp/7071"]}]}`, 0, false},
		{"bad address", `{"peers":[{"id":"` + id + `","addrs":["/ip9/x"]}]}`, 0, false},
		{"not json", `peers`, 0, false},
		{"too many addresses", `{"peers":[{"id":"` + id + `","addrs":["/ip4/1.1.1.1/tcp/1","/ip4/1.1.1.1/tcp/2","/ip4/1.1.1.1/tcp/3","/ip4/1.1.1.1/tcp/4","/ip4/1.1.1.1/tcp/5"]}]}`, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peers, err := decodePEX([]byte(tc.in))
			if (err == nil) != tc.ok || len(peers) != tc.peers {
				t.Fatalf("decodePEX: %d peers, %v", len(peers), err)
			}
		})
	}
	var many pexAnswer
	for range pexMaxPeers + 1 {
		many.Peers = append(many.Peers, pexPeer{ID: id, Addrs: []string{"/ip4/10.0.0.1/tcp/1"}})
	}
	b, _ := json.Marshal(many)
	if _, err := decodePEX(b); err == nil {
		t.Fatal("more than pexMaxPeers peers accepted")
	}
}

func FuzzDecodePEX(f *testing.F) {
	f.Add([]byte(`{"peers":[{"id":"12D3KooWHHzSeKaY8xuZVzkLbKFfvNgPPeKhFBGrMbNzbm5akpqu","addrs":["/ip4/10.0.0.1/tcp/7071"]}]}`))
	f.Add([]byte(`{"peers":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		peers, err := decodePEX(b)
		if err != nil {
			return
		}
		if len(peers) > pexMaxPeers {
			t.Fatalf("%d peers", len(peers))
		}
		for _, p := range peers {
			if len(p.Addrs) == 0 || len(p.Addrs) > pexMaxAddrs {
				t.Fatalf("peer with %d addresses", len(p.Addrs))
			}
		}
	})
}
