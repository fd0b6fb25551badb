package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sharefiles/share/transfer"
	"github.com/sharefiles/share/transfer/transfertest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// testNode starts a peer on loopback with its own data directory.
func testNode(t testing.TB, dataDir string, mod func(*Options), boot ...*Node) *Node {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	st, err := transfer.OpenStore(dataDir, transfer.StoreOptions{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{
		Store:          st,
		DataDir:        dataDir,
		Listen:         []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"},
		LookupInterval: time.Second,
		Logger:         quiet,
	}
	for _, b := range boot {
		opts.Bootstrap = append(opts.Bootstrap, b.Addrs()[0].String())
	}
	if mod != nil {
		mod(&opts)
	}
	n, err := New(context.Background(), opts)
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(); st.Close() })
	return n
}

func importShare(t testing.TB, n *Node, name string, content []byte, chunkSize int64) *transfer.Share {
	t.Helper()
	sh, err := n.Import(context.Background(), name, bytes.NewReader(content), transfer.ImportOptions{ChunkSize: chunkSize})
	if err != nil {
		t.Fatal(err)
	}
	return sh
}

// waitComplete waits until n holds id complete, or fails after timeout.
func waitComplete(t testing.TB, n *Node, id transfer.ID, timeout time.Duration) *transfer.Share {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if sh, err := n.Get(id); err == nil && sh.Complete() {
			return sh
		}
		if time.Now().After(deadline) {
			have := -1
			if sh, err := n.Get(id); err == nil {
				have = sh.HaveCount()
			}
			t.Fatalf("peer %s: share not complete after %v (%d chunks held)", n.ID(), timeout, have)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sameContent(t testing.TB, sh *transfer.Share, want []byte) {
	t.Helper()
	got, err := os.ReadFile(sh.DataPath())
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("content differs (%v)", err)
	}
}

func fetch(t testing.TB, n *Node, id transfer.ID) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := n.Fetch(ctx, id); err != nil {
		t.Fatalf("peer %s: Fetch: %v", n.ID(), err)
	}
}

func TestPeerIsASource(t *testing.T) {
	// The chunk protocol over libp2p keeps the Source contract.
	transfertest.Run(t, func(t *testing.T, st *transfer.Store) transfer.Source {
		server := testNode(t, "", func(o *Options) { o.Store = st })
		client := testNode(t, "", nil, server)
		client.host.Peerstore().AddAddrs(server.ID(), server.host.Addrs(), time.Hour)
		return client.peerSource(server.ID())
	})
}

func TestThreePeersFindEachOtherThroughTheDHT(t *testing.T) {
	a := testNode(t, "", nil)
	b := testNode(t, "", nil, a)
	c := testNode(t, "", nil, a)
	content := transfertest.Bytes(1, 3<<20+5)
	sh := importShare(t, b, "three.bin", content, 256<<10)
	// Nobody names the provider: c and a find b through the DHT alone.
	fetch(t, c, sh.ID())
	sameContent(t, waitComplete(t, c, sh.ID(), 30*time.Second), content)
	fetch(t, a, sh.ID())
	sameContent(t, waitComplete(t, a, sh.ID(), 30*time.Second), content)
	if got := testutil.ToFloat64(c.m.lookups.WithLabelValues("found")); got < 1 {
		t.Fatalf("c made no successful lookup (%v)", got)
	}
}

func TestFetchUnknownShare(t *testing.T) {
	a := testNode(t, "", func(o *Options) { o.FetchTimeout = 500 * time.Millisecond })
	b := testNode(t, "", nil, a)
	m, err := transfer.NewManifest("nobody", false, transfer.MinChunkSize, []transfer.File{{Path: "nobody", Size: 1}}, nil, []transfer.Hash{{1}})
	if err != nil {
		t.Fatal(err)
	}
	_ = b
	// The error says where the peer looked, for the user of its API.
	_, err = a.Fetch(context.Background(), m.ID())
	if !errors.Is(err, transfer.ErrNotFound) || !strings.Contains(err.Error(), "no peer provides "+m.ID().String()) ||
		!regexp.MustCompile(`\d+ DHT lookups? in \d+s, with 1 peers connected and 1 in the routing table`).MatchString(err.Error()) {
		t.Fatalf("fetch of a share nobody has: %v", err)
	}
	// A peer alone says it knows nobody.
	alone := testNode(t, "", func(o *Options) { o.FetchTimeout = 200 * time.Millisecond })
	if _, err := alone.Fetch(context.Background(), m.ID()); !errors.Is(err, transfer.ErrNotFound) || !strings.Contains(err.Error(), "knows no other peer") || !strings.Contains(err.Error(), "--bootstrap") {
		t.Fatalf("fetch by a peer that knows nobody: %v", err)
	}
}

// TestSwarmSpreadsLoad: a seed with a slow uplink and nine downloaders. The
// downloaders must get most of their chunks from each other.
func TestSwarmSpreadsLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("ten-peer swarm; skipped with -short")
	}
	const chunk = 128 << 10
	content := transfertest.Bytes(2, 64*chunk) // 8 MiB, 64 chunks
	boot := testNode(t, "", nil)
	seed := testNode(t, "", func(o *Options) { o.UploadLimit = transfer.NewLimiter(2 << 20) }, boot)
	sh := importShare(t, seed, "swarm.bin", content, chunk)
	var peers []*Node
	for range 9 {
		peers = append(peers, testNode(t, "", func(o *Options) { o.UploadLimit = transfer.NewLimiter(4 << 20) }, boot))
	}
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Go(func() { fetch(t, p, sh.ID()) })
	}
	wg.Wait()
	var fromSeed, fromPeers float64
	for _, p := range peers {
		sameContent(t, waitComplete(t, p, sh.ID(), 2*time.Minute), content)
		fromSeed += testutil.ToFloat64(p.m.chunksRecv.WithLabelValues("seed"))
		fromPeers += testutil.ToFloat64(p.m.chunksRecv.WithLabelValues("peer"))
	}
	t.Logf("chunks from the seed %v, from other peers %v (seed alone would be %d)", fromSeed, fromPeers, 9*64)
	if fromSeed+fromPeers != 9*64 {
		t.Fatalf("%v chunks received in all, want %d", fromSeed+fromPeers, 9*64)
	}
	if fromPeers < 0.6*9*64 {
		t.Fatalf("only %v of %d chunks came from other peers", fromPeers, 9*64)
	}
}

// TestSeedLeaves: once every chunk exists somewhere besides the seed, the
// seed goes away and every download still finishes.
func TestSeedLeaves(t *testing.T) {
	const chunk = 64 << 10
	content := transfertest.Bytes(3, 48*chunk)
	boot := testNode(t, "", nil)
	seed := testNode(t, "", func(o *Options) { o.UploadLimit = transfer.NewLimiter(1 << 20) }, boot)
	sh := importShare(t, seed, "leave.bin", content, chunk)
	var peers []*Node
	for range 3 {
		peers = append(peers, testNode(t, "", func(o *Options) { o.UploadLimit = transfer.NewLimiter(512 << 10) }, boot))
	}
	for _, p := range peers {
		fetch(t, p, sh.ID())
	}
	// Wait until the peers together hold every chunk.
	deadline := time.Now().Add(time.Minute)
	for {
		union := transfer.NewBitfield(sh.Manifest().NumChunks())
		for _, p := range peers {
			if psh, err := p.Get(sh.ID()); err == nil {
				bf := psh.Have()
				for i := range bf.Len() {
					if bf.Has(i) {
						union.Set(i)
					}
				}
			}
		}
		if union.Full() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("peers hold %d of %d chunks after a minute", union.Count(), union.Len())
		}
		time.Sleep(10 * time.Millisecond)
	}
	incomplete := 0
	for _, p := range peers {
		if psh, _ := p.Get(sh.ID()); !psh.Complete() {
			incomplete++
		}
	}
	seed.Close()
	if incomplete == 0 {
		t.Fatal("every peer finished before the seed left; the test proves nothing")
	}
	for _, p := range peers {
		sameContent(t, waitComplete(t, p, sh.ID(), time.Minute), content)
	}
	t.Logf("%d of 3 peers were still downloading when the seed left", incomplete)
}

// TestPartialPeerLeaves: a downloader asks a seed only for the chunks that
// no partial peer of its active set offers; when such a peer leaves in the
// middle, the download must finish from the seed at the seed's pace, not
// wait for the peer (the stall timeout here is minutes).
func TestPartialPeerLeaves(t *testing.T) {
	const chunk = 64 << 10
	const chunks = 32
	content := transfertest.Bytes(5, chunks*chunk)
	boot := testNode(t, "", nil)
	seed := testNode(t, "", func(o *Options) { o.UploadLimit = transfer.NewLimiter(512 << 10) }, boot)
	sh := importShare(t, seed, "partial.bin", content, chunk)
	// The partial peer holds every chunk but the last, and sends slowly,
	// so the downloader still wants many of its chunks when it leaves.
	partial := testNode(t, "", func(o *Options) { o.UploadLimit = transfer.NewLimiter(128 << 10) }, boot)
	psh, _, err := partial.Create(sh.Manifest())
	if err != nil {
		t.Fatal(err)
	}
	for i := range chunks - 1 {
		if err := psh.PutChunk(i, content[i*chunk:(i+1)*chunk]); err != nil {
			t.Fatal(err)
		}
	}
	d := testNode(t, "", func(o *Options) { o.StallTimeout = 10 * time.Minute }, boot)
	d.host.Peerstore().AddAddrs(partial.ID(), partial.host.Addrs(), time.Hour)
	fetch(t, d, sh.ID())
	dsh, err := d.Get(sh.ID())
	if err != nil {
		t.Fatal(err)
	}
	d.ensureDownload(dsh, []peer.ID{partial.ID()})
	st := d.share(sh.ID())
	deadline := time.Now().Add(time.Minute)
	for st.fromPeers.Load() < 2 {
		if time.Now().After(deadline) || dsh.Complete() {
			t.Fatalf("the downloader got %d chunks from the partial peer (complete: %v); the test proves nothing", st.fromPeers.Load(), dsh.Complete())
		}
		time.Sleep(10 * time.Millisecond)
	}
	partial.Close()
	left := chunks - dsh.HaveCount()
	if left < chunks/2 {
		t.Fatalf("only %d chunks were left when the peer left; the test proves nothing", left)
	}
	// From the seed alone the rest takes about left*chunk / 512 KiB/s
	// (under 4 s); waiting on the peer that left would take the stall
	// timeout.
	sameContent(t, waitComplete(t, d, sh.ID(), 30*time.Second), content)
	t.Logf("%d chunks were left when the peer left; %d came from the seed in all", left, st.fromSeed.Load())
}

// TestLyingPeerIsDropped: a peer whose copy is corrupt on disk (it believes
// it is complete) serves bad chunks; downloaders detect, count and drop it,
// and every download is byte-identical.
func TestLyingPeerIsDropped(t *testing.T) {
	const chunk = 64 << 10
	content := transfertest.Bytes(4, 32*chunk)
	boot := testNode(t, "", nil)
	seed := testNode(t, "", func(o *Options) { o.UploadLimit = transfer.NewLimiter(1 << 20) }, boot)
	sh := importShare(t, seed, "lie.bin", content, chunk)
	liar := testNode(t, "", nil, boot) // fast: downloaders will ask it a lot
	lsh := importShare(t, liar, "lie.bin", content, chunk)
	f, err := os.OpenFile(lsh.DataPath(), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 32; i += 2 { // every other chunk
		f.WriteAt([]byte("corrupt"), int64(i)*chunk+100)
	}
	f.Close()
	var peers []*Node
	for range 3 {
		peers = append(peers, testNode(t, "", nil, boot))
	}
	for _, p := range peers {
		fetch(t, p, sh.ID())
	}
	var bad float64
	for _, p := range peers {
		sameContent(t, waitComplete(t, p, sh.ID(), time.Minute), content)
		bad += testutil.ToFloat64(p.m.badChunks)
		if got := p.m.peerRecv.value(liar.ID().String()); got > float64(16*chunk) {
			t.Errorf("peer kept %v bytes from the liar, more than its good chunks", got)
		}
	}
	if bad == 0 {
		t.Fatal("no bad chunk was detected")
	}
	t.Logf("bad chunks detected: %v", bad)
}

// TestRestart: a restarted peer keeps its ID, announces its shares again
// (to a network that forgot them), and resumes its interrupted download.
func TestRestart(t *testing.T) {
	const chunk = 64 << 10
	dirC := t.TempDir()
	boot := testNode(t, "", nil)
	seed := testNode(t, "", func(o *Options) { o.UploadLimit = transfer.NewLimiter(1 << 20) }, boot)
	content := transfertest.Bytes(5, 40*chunk)
	sh := importShare(t, seed, "resume.bin", content, chunk)

	c := testNode(t, dirC, nil, boot)
	own := importShare(t, c, "own.bin", transfertest.Bytes(6, 3*chunk), chunk)
	id := c.ID()
	fetch(t, c, sh.ID())
	// Let it get part of the file, then stop it.
	for {
		csh, err := c.Get(sh.ID())
		if err == nil && csh.HaveCount() >= 8 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.Close()
	c.store.Close()
	st, _ := transfer.OpenStore(dirC, transfer.StoreOptions{Logger: quiet})
	psh, _ := st.Get(sh.ID())
	had := psh.HaveCount()
	st.Close()
	if had == 40 {
		t.Fatal("download finished before the restart")
	}

	// A new network that has never heard of c's shares.
	boot2 := testNode(t, "", nil)
	seed.opts.Bootstrap = nil
	c2 := testNode(t, dirC, nil, boot2)
	if c2.ID() != id {
		t.Fatalf("peer ID changed across restart: %s -> %s", id, c2.ID())
	}
	// The interrupted download resumes by itself: the seed is in the old
	// network, so join c2 to it by connecting to the seed.
	if err := c2.host.Connect(context.Background(), seed.host.Peerstore().PeerInfo(seed.ID())); err != nil {
		t.Fatal(err)
	}
	c2.mu.RLock()
	sw, ok := c2.downloads[sh.ID()]
	c2.mu.RUnlock()
	if ok {
		c2.addSource(sw, seed.ID())
	}
	sameContent(t, waitComplete(t, c2, sh.ID(), time.Minute), content)
	fetched := testutil.ToFloat64(c2.m.chunksRecv.WithLabelValues("seed")) + testutil.ToFloat64(c2.m.chunksRecv.WithLabelValues("peer"))
	if int(fetched) != 40-had {
		t.Fatalf("resumed download fetched %v chunks; had %d of 40", fetched, had)
	}
	// Its own share was announced again: a fresh peer finds it.
	d := testNode(t, "", nil, boot2)
	fetch(t, d, own.ID())
	waitComplete(t, d, own.ID(), 30*time.Second)
}

func TestStatus(t *testing.T) {
	a := testNode(t, "", nil)
	b := testNode(t, "", nil, a)
	sh := importShare(t, a, "s.bin", transfertest.Bytes(7, 300<<10), transfer.MinChunkSize)
	fetch(t, b, sh.ID())
	waitComplete(t, b, sh.ID(), 30*time.Second)
	st := a.Status(context.Background()).(Status)
	if st.PeerID != a.ID().String() || len(st.Addrs) == 0 || len(st.Peers) != 1 || st.RoutingTable != 1 {
		t.Fatalf("status %+v", st)
	}
	if len(st.Shares) != 1 || !st.Shares[0].Complete || st.Shares[0].BytesUp != 300<<10 {
		t.Fatalf("share status %+v", st.Shares)
	}
	// The store completes the share before the download's last progress
	// callback counts its bytes: wait for the download to end.
	bs := b.Status(context.Background()).(Status)
	for deadline := time.Now().Add(10 * time.Second); bs.Shares[0].Downloading && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		bs = b.Status(context.Background()).(Status)
	}
	if bs.Shares[0].Providers != 1 || bs.Shares[0].BytesDown != 300<<10 {
		t.Fatalf("downloader's share status %+v", bs.Shares)
	}
	_ = fmt.Sprint(filepath.Separator)
}

func TestSourceInDialBackoffIsDialled(t *testing.T) {
	// A source that was down when last dialled is in libp2p's dial backoff
	// (5 s and more); once it is back, a download that asks it again must
	// reach it, not be answered "dial backoff".
	dirB := t.TempDir()
	b := testNode(t, dirB, func(o *Options) { o.Listen = []string{"/ip4/127.0.0.1/tcp/0"} })
	sh := importShare(t, b, "back.bin", transfertest.Bytes(7, 4*transfer.MinChunkSize), transfer.MinChunkSize)
	addrs := b.host.Addrs()
	a := testNode(t, "", nil)
	a.host.Peerstore().AddAddrs(b.ID(), addrs, time.Hour)
	src := a.peerSource(b.ID())
	defer src.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := src.Have(ctx, sh.ID(), 4); err != nil {
		t.Fatal(err)
	}

	b.Close()
	b.store.Close()
	for a.host.Network().Connectedness(b.ID()) == network.Connected {
		if ctx.Err() != nil {
			t.Fatal("a still connected to the stopped peer")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A failed dial puts b's address in backoff; the second dial says so.
	var err error
	for range 3 {
		if _, err = a.host.NewStream(ctx, b.ID(), ProtocolID); errors.Is(err, swarm.ErrDialBackoff) {
			break
		}
	}
	if !errors.Is(err, swarm.ErrDialBackoff) {
		t.Fatalf("dial of the stopped peer: %v; want libp2p's dial backoff (the test relies on it)", err)
	}

	b2 := testNode(t, dirB, func(o *Options) { o.Listen = []string{addrs[0].String()} })
	if b2.ID() != b.ID() {
		t.Fatalf("peer ID changed across restart: %s -> %s", b.ID(), b2.ID())
	}
	bf, err := src.Have(ctx, sh.ID(), 4)
	if err != nil {
		t.Fatalf("Have from the restarted peer: %v", err)
	}
	if !bf.Full() {
		t.Fatalf("restarted peer offers %d of 4 chunks", bf.Count())
	}
	if got := testutil.ToFloat64(a.m.dialBackoffCleared); got < 1 {
		t.Fatalf("dial backoffs cleared: %v, want at least 1", got)
	}
}
