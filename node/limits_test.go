package node

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sharefiles/share/transfer"
)

func refusals(n *Node, reason string) float64 {
	return testutil.ToFloat64(n.guard.refused.WithLabelValues(reason))
}

// chunkMemory sets the chunk protocol's per-peer memory limit.
func chunkMemory(bytes int64) func(*Options) {
	return func(o *Options) {
		o.tuneLimits = func(l *rcmgr.ScalingLimitConfig) {
			c := l.ProtocolPeerLimits[ProtocolID]
			c.BaseLimit.Memory = bytes
			l.AddProtocolPeerLimit(ProtocolID, c.BaseLimit, c.BaseLimitIncrease)
		}
	}
}

// TestLimitsHoldByConstruction checks the arithmetic of limits.go on the
// limits in force: one peer's inbound streams are a small part of the
// transient and system pools, and a chunk of the largest size fits a
// stream's memory at the priority it is reserved with.
func TestLimitsHoldByConstruction(t *testing.T) {
	for _, mem := range []int64{0, 1 << 30, 8 << 30, 64 << 30} { // memory libp2p may use
		l := scalingLimits(DefaultMaxStreamsPerPeer)
		c := l.Scale(mem, 1024).ToPartialLimitConfig()
		peerIn := int(c.PeerDefault.StreamsInbound)
		if peerIn != peerStreamsInbound(DefaultMaxStreamsPerPeer) {
			t.Errorf("%d MiB: a peer's inbound streams are %d, want %d", mem>>20, peerIn, peerStreamsInbound(DefaultMaxStreamsPerPeer))
		}
		if tr := int(c.Transient.StreamsInbound); tr < minPeersToExhaust*peerIn {
			t.Errorf("%d MiB: transient inbound streams %d, under %d peers' worth (%d each)", mem>>20, tr, minPeersToExhaust, peerIn)
		}
		if sys, tr := int(c.System.StreamsInbound), int(c.Transient.StreamsInbound); sys < 2*tr {
			t.Errorf("%d MiB: system inbound streams %d, under twice the transient %d", mem>>20, sys, tr)
		}
		if chunk := int(c.ProtocolPeer[ProtocolID].StreamsInbound); chunk+otherStreamsInbound > peerIn {
			t.Errorf("%d MiB: the chunk protocol's %d inbound streams per peer do not fit the peer's %d", mem>>20, chunk, peerIn)
		}
	}
	// Reservations succeed while the scope is below (1+prio)/256 of its limit.
	if need := int64(transfer.MaxChunkSize) * 256 / (1 + int64(fetchReservePrio)); streamMemory < need {
		t.Errorf("stream memory %d: a %d-byte chunk needs %d at priority %d", streamMemory, transfer.MaxChunkSize, need, fetchReservePrio)
	}
}

// request writes a chunk request for chunk i of id on s and reads the
// response header: its status and payload length.
func request(t *testing.T, s network.Stream, id transfer.ID, i int) (byte, int64) {
	t.Helper()
	if _, err := s.Write(transfer.EncodeRequest(transfer.Request{Op: 'C', ID: id, A: uint32(i)})); err != nil {
		t.Fatal(err)
	}
	var h [5]byte
	if _, err := io.ReadFull(s, h[:]); err != nil {
		t.Fatal(err)
	}
	return h[0], int64(binary.BigEndian.Uint32(h[1:]))
}

// TestServingReservesMemory: a seed whose chunk protocol may hold one send
// buffer per peer (at medium priority) answers a second concurrent chunk
// request busy, counts it, and serves the next request once the first chunk
// was sent.
func TestServingReservesMemory(t *testing.T) {
	const statusOK, statusBusy = 0, 6
	seed := testNode(t, "", chunkMemory(2*transfer.SendBufSize)) // 60% of it: one buffer, not two
	content := make([]byte, 4<<20)
	rand.Read(content)
	sh := importShare(t, seed, "f", content, 1<<20)
	client := testNode(t, "", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := client.host.Connect(ctx, peer.AddrInfo{ID: seed.ID(), Addrs: seed.host.Addrs()}); err != nil {
		t.Fatal(err)
	}
	open := func() network.Stream {
		s, err := client.host.NewStream(ctx, seed.ID(), ProtocolID)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Reset() })
		return s
	}
	// The first chunk is not read past its header: the seed's send blocks
	// on flow control with its buffer reserved.
	s1 := open()
	if st, n := request(t, s1, sh.ID(), 0); st != statusOK || n != 1<<20 {
		t.Fatalf("first request: status %d, %d bytes", st, n)
	}
	s2 := open()
	if st, _ := request(t, s2, sh.ID(), 1); st != statusBusy {
		t.Fatalf("second concurrent request: status %d, want busy (%d)", st, statusBusy)
	}
	if got := refusals(seed, refusedMemory); got != 1 {
		t.Errorf("memory refusals counted: %v, want 1", got)
	}
	if _, err := io.CopyN(io.Discard, s1, 1<<20); err != nil {
		t.Fatal(err)
	}
	// Released when sent: the same stream's next request is served.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, n := request(t, s2, sh.ID(), 1)
		if st == statusOK {
			if _, err := io.CopyN(io.Discard, s2, n); err != nil {
				t.Fatal(err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("request after the first chunk was sent: status %d", st)
		}
		time.Sleep(50 * time.Millisecond) // the release follows the last write
	}
}

// TestFetchingReservesMemory: a peer that may not hold one chunk in its
// chunk-protocol memory gets "busy" for it (counted), not a crash, and the
// stream stays usable.
func TestFetchingReservesMemory(t *testing.T) {
	seed := testNode(t, "", nil)
	content := make([]byte, 2<<20)
	rand.Read(content)
	sh := importShare(t, seed, "f", content, 1<<20)
	client := testNode(t, "", chunkMemory(1<<20)) // 80% of it: under one chunk
	client.host.Peerstore().AddAddrs(seed.ID(), seed.host.Addrs(), time.Hour)
	src := client.peerSource(seed.ID())
	defer src.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 2 {
		rc, err := src.OpenChunk(ctx, sh.ID(), i)
		if err == nil {
			rc.Close()
			t.Fatalf("chunk %d: no error, want busy", i)
		}
		if !errors.Is(err, transfer.ErrBusy) {
			t.Fatalf("chunk %d: %v, want transfer.ErrBusy", i, err)
		}
	}
	if got := refusals(client, refusedMemory); got != 2 {
		t.Errorf("memory refusals counted: %v, want 2", got)
	}
	if _, err := src.Manifest(ctx, sh.ID()); err != nil {
		t.Errorf("manifest after refused chunks: %v", err)
	}
}

// flooder is a hostile libp2p host: it opens streams to a victim and never
// negotiates a protocol on them, reopening each as soon as the victim
// resets it, from workers goroutines.
type flooder struct {
	h               host.Host
	opened, refused atomic.Int64
	wg              sync.WaitGroup
}

func startFlood(t *testing.T, ctx context.Context, victim *Node, workers int) *flooder {
	t.Helper()
	h, err := libp2p.New(
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.ResourceManager(&network.NullResourceManager{}), // no limits of its own
		libp2p.DisableMetrics(),
	)
	if err != nil {
		t.Fatal(err)
	}
	// Over TCP (yamux): QUIC caps a peer's open streams itself, and blocks
	// the opener.
	var tcp []ma.Multiaddr
	for _, a := range victim.host.Addrs() {
		if _, err := a.ValueForProtocol(ma.P_TCP); err == nil {
			tcp = append(tcp, a)
		}
	}
	if err := h.Connect(ctx, peer.AddrInfo{ID: victim.ID(), Addrs: tcp}); err != nil {
		t.Fatal(err)
	}
	f := &flooder{h: h}
	for range workers {
		f.wg.Go(func() {
			for ctx.Err() == nil {
				s, err := h.Network().NewStream(ctx, victim.ID()) // raw: no multistream
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				f.opened.Add(1)
				stop := context.AfterFunc(ctx, func() { s.Reset() })
				_, err = io.Copy(io.Discard, s) // until the victim resets it
				stop()
				s.Reset()
				if ctx.Err() == nil {
					f.refused.Add(1)
				}
			}
		})
	}
	t.Cleanup(func() { f.wg.Wait(); h.Close() })
	return f
}

// TestFloodingPeerDoesNotStallOthers: a hostile peer holding thousands of
// unnegotiated streams against a victim gets at most its own share of
// streams, refused beyond it, while an honest peer downloads a share from
// the victim; streams it holds unnegotiated are reset after
// negotiationTimeout. Issue 8, item 15.
func TestFloodingPeerDoesNotStallOthers(t *testing.T) {
	if testing.Short() {
		t.Skip("a flood of streams for several seconds")
	}
	victim := testNode(t, "", nil)
	content := make([]byte, 8<<20)
	rand.Read(content)
	sh := importShare(t, victim, "f", content, 256<<10)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := startFlood(t, ctx, victim, 2000)
	// The flood is on before the honest peer comes.
	for wait := time.Now(); f.refused.Load() < 1000; time.Sleep(10 * time.Millisecond) {
		if time.Since(wait) > 30*time.Second {
			t.Fatalf("flood: %d streams opened, %d reset by the victim in 30 s", f.opened.Load(), f.refused.Load())
		}
	}
	var most atomic.Int64 // the hostile peer's inbound streams at the victim, sampled
	sampling := make(chan struct{})
	go func() {
		defer close(sampling)
		for ctx.Err() == nil {
			victim.host.Network().ResourceManager().ViewPeer(f.h.ID(), func(s network.PeerScope) error {
				if k := int64(s.Stat().NumStreamsInbound); k > most.Load() {
					most.Store(k)
				}
				return nil
			})
			time.Sleep(20 * time.Millisecond)
		}
	}()

	honest := testNode(t, "", nil, victim)
	start := time.Now()
	fctx, fcancel := context.WithTimeout(ctx, 60*time.Second) // generous: the download takes a second or two unflooded
	defer fcancel()
	if _, err := honest.Fetch(fctx, sh.ID()); err != nil {
		t.Fatalf("honest download during the flood: %v (after %v)", err, time.Since(start))
	}
	got := waitComplete(t, honest, sh.ID(), 60*time.Second)
	sameContent(t, got, content)
	took := time.Since(start)

	// Streams held unnegotiated are reset after negotiationTimeout.
	for refusals(victim, refusedNegotiation) == 0 {
		if time.Since(start) > negotiationTimeout+30*time.Second {
			t.Fatal("no stream reset for want of negotiation")
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	<-sampling
	t.Logf("honest download of %d MiB during the flood: %v; flooder opened %d streams, %d reset by the victim; victim counted %v refused by a limit, %v reset unnegotiated; at most %d of the flooder's streams open at the victim",
		len(content)>>20, took.Round(time.Millisecond), f.opened.Load(), f.refused.Load(),
		refusals(victim, refusedLimit), refusals(victim, refusedNegotiation), most.Load())
	if refusals(victim, refusedLimit) == 0 {
		t.Error("the victim counted no stream refused by a limit")
	}
	if cap := int64(peerStreamsInbound(DefaultMaxStreamsPerPeer)); most.Load() > cap {
		t.Errorf("the flooder held %d inbound streams at the victim, over a peer's %d", most.Load(), cap)
	}
}

// TestFloodOfAMember runs Flood, what share bench's flooding member is,
// against a member of a private swarm: with the key it connects, its
// unnegotiated streams and its chunk requests beyond the victim's limits
// are refused and counted there, and it reports what it did; without the
// key it cannot start.
func TestFloodOfAMember(t *testing.T) {
	psk := testKey(t)
	victim := testNode(t, "", func(o *Options) { o.SwarmKey, o.Listen = psk, []string{"/ip4/127.0.0.1/tcp/0"} })
	content := make([]byte, 4<<20)
	rand.Read(content)
	sh := importShare(t, victim, "f", content, 256<<10)
	target := []string{victim.Addrs()[0].String()}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := Flood(ctx, FloodOptions{SwarmKey: testKey(t), Targets: target, StreamWorkers: 1}); err == nil {
		t.Fatal("a flood with another swarm's key started")
	}

	fctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan struct{})
	var st FloodStats
	var err error
	go func() {
		defer close(done)
		st, err = Flood(fctx, FloodOptions{SwarmKey: psk, Targets: target, StreamWorkers: 300, RequestWorkers: 64, Share: sh.ID()})
	}()
	// It runs until the victim has refused streams by a limit.
	for refusals(victim, refusedLimit) < 1000 {
		select {
		case <-done:
			t.Fatalf("the flood ended: %v", err)
		case <-ctx.Done():
			t.Fatalf("in 60 s the victim refused %v streams by a limit", refusals(victim, refusedLimit))
		case <-time.After(10 * time.Millisecond):
		}
	}
	stop()
	<-done
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", st)
	if st.Streams == 0 || st.StreamsReset == 0 || st.Requests == 0 || st.Requests != st.Served+st.Busy+st.RequestsFailed || st.PeerID == "" {
		t.Errorf("flood stats %+v", st)
	}
}
