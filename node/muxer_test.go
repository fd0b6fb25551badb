package node

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	"github.com/sharefiles/share/transfer"
)

const stalledProto = protocol.ID("/share-test/stalled-reader")

// writeToStalledReader opens a stream from a to b, whose handler does not
// read until the test ends, and writes one chunk response (a 5-byte header
// and a swarm-sized chunk) with a write deadline of d; it returns the
// write's error.
func writeToStalledReader(t *testing.T, a, b host.Host, d time.Duration) error {
	t.Helper()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	b.SetStreamHandler(stalledProto, func(s network.Stream) {
		<-release
		s.Reset()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
		t.Fatal(err)
	}
	s, err := a.NewStream(ctx, b.ID(), stalledProto)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	if err := s.SetWriteDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	_, err = s.Write(make([]byte, 5+transfer.SwarmChunkSize))
	return err
}

// A peer finishes sending a chunk response to a peer that is not reading
// (its process not scheduled, say): the stream window holds a whole
// response, so the sender's upload slot does not wait on the receiver.
func TestChunkResponseFitsStreamWindow(t *testing.T) {
	a := testNode(t, "", func(o *Options) { o.Listen = []string{"/ip4/127.0.0.1/tcp/0"} })
	b := testNode(t, "", func(o *Options) { o.Listen = []string{"/ip4/127.0.0.1/tcp/0"} })
	if err := writeToStalledReader(t, a.host, b.host, 5*time.Second); err != nil {
		t.Fatalf("a chunk response to a peer that does not read: %v; want it sent whole into the stream window", err)
	}
}

// The control: with libp2p's default yamux (a 256 KiB window) the same
// write waits for the receiver, which is what the test above guards against.
func TestDefaultStreamWindowWaitsForReceiver(t *testing.T) {
	newHost := func() host.Host {
		h, err := libp2p.New(libp2p.NoTransports, libp2p.Transport(tcp.NewTCPTransport),
			libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		return h
	}
	a, b := newHost(), newHost()
	err := writeToStalledReader(t, a, b, time.Second)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("default window: write returned %v; want a timeout (the window is smaller than a chunk response)", err)
	}
}
