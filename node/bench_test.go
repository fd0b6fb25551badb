package node

import (
	"context"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	"github.com/sharefiles/share/transfer"
)

const rawProtocol = "/share/bench-raw/1.0.0"

// BenchmarkOneToOne moves a 256 MiB share from one peer to another over
// libp2p on loopback (TCP + TLS + yamux, the transport peers prefer), through
// the real path: DHT lookup, chunk protocol, verification, store. In the
// same run it measures a raw libp2p stream on the same connection (256 KiB
// writes from memory, read into io.Discard) and reports both and their ratio.
func BenchmarkOneToOne(b *testing.B) {
	const size = 256 << 20
	tcpOnly := func(o *Options) { o.Listen = []string{"/ip4/127.0.0.1/tcp/0"} }
	provider := testNode(b, "", tcpOnly)
	downloader := testNode(b, "", tcpOnly, provider)
	var key [32]byte
	sh, err := provider.Import(context.Background(), "bench.bin", io.LimitReader(rand.NewChaCha8(key), size), transfer.ImportOptions{})
	if err != nil {
		b.Fatal(err)
	}
	provider.host.SetStreamHandler(rawProtocol, func(s network.Stream) {
		var n uint64
		binary.Read(s, binary.BigEndian, &n)
		buf := make([]byte, 256<<10)
		for sent := uint64(0); sent < n; sent += uint64(len(buf)) {
			if _, err := s.Write(buf); err != nil {
				s.Reset()
				return
			}
		}
		s.Close()
	})
	var shareTime, rawTime, shareCPU, rawCPU time.Duration
	b.SetBytes(size)
	for b.Loop() {
		start, cpu := time.Now(), cpuTime()
		fetch(b, downloader, sh.ID())
		waitCompleteFast(b, downloader, sh.ID())
		shareTime += time.Since(start)
		shareCPU += cpuTime() - cpu
		b.StopTimer()
		if err := downloader.Remove(sh.ID()); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	for range b.N {
		start, cpu := time.Now(), cpuTime()
		rawStream(b, downloader, provider, size)
		rawTime += time.Since(start)
		rawCPU += cpuTime() - cpu
	}
	mb := float64(b.N) * size / 1e6
	gib := float64(b.N) * size / (1 << 30)
	b.ReportMetric(mb/shareTime.Seconds(), "share-MB/s")
	b.ReportMetric(mb/rawTime.Seconds(), "raw-stream-MB/s")
	b.ReportMetric(rawTime.Seconds()/shareTime.Seconds(), "share/raw")
	b.ReportMetric(shareCPU.Seconds()/gib, "share-CPU-s/GiB")
	b.ReportMetric(rawCPU.Seconds()/gib, "raw-CPU-s/GiB")
}

// cpuTime is the CPU time this process used so far (user + system): both
// peers run in it, so it is the cost of a transfer on both ends.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func rawStream(b *testing.B, from, to *Node, size uint64) {
	s, err := from.host.NewStream(context.Background(), to.ID(), rawProtocol)
	if err != nil {
		b.Fatal(err)
	}
	binary.Write(s, binary.BigEndian, size)
	s.CloseWrite()
	n, err := io.CopyBuffer(io.Discard, s, make([]byte, 256<<10))
	if err != nil || uint64(n) < size {
		b.Fatalf("raw stream: %d bytes, %v", n, err)
	}
	s.Close()
}

// waitCompleteFast waits for completion on the share's change notifications.
func waitCompleteFast(b *testing.B, n *Node, id transfer.ID) {
	sh, err := n.Get(id)
	if err != nil {
		b.Fatal(err)
	}
	for !sh.Complete() {
		select {
		case <-sh.Changed():
		case <-time.After(time.Minute):
			b.Fatal("download did not finish")
		}
	}
}

// BenchmarkRawStream moves 256 MiB over one raw libp2p stream between two
// hosts, for each transport and security choice, in the same run: the
// figures behind tcpFirst's order (TCP before QUIC, TLS before Noise) and
// behind batchedTLS (tcp-tls against tcp-tls-batched).
func BenchmarkRawStream(b *testing.B) {
	const size = 256 << 20
	for _, tc := range []struct {
		name string
		opts []libp2p.Option
	}{
		{"tcp-tls", []libp2p.Option{libp2p.Transport(tcp.NewTCPTransport), libp2p.Security(libp2ptls.ID, libp2ptls.New), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0")}},
		{"tcp-tls-batched", []libp2p.Option{libp2p.Transport(tcp.NewTCPTransport), libp2p.Security(libp2ptls.ID, newBatchedTLS), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0")}},
		{"tcp-noise", []libp2p.Option{libp2p.Transport(tcp.NewTCPTransport), libp2p.Security(noise.ID, noise.New), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0")}},
		{"quic", []libp2p.Option{libp2p.Transport(libp2pquic.NewTransport), libp2p.ListenAddrStrings("/ip4/127.0.0.1/udp/0/quic-v1")}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			mk := func() host.Host {
				h, err := libp2p.New(append([]libp2p.Option{libp2p.NoTransports, libp2p.DisableMetrics()}, tc.opts...)...)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { h.Close() })
				return h
			}
			src, dst := mk(), mk()
			src.SetStreamHandler(rawProtocol, func(s network.Stream) {
				buf := make([]byte, 256<<10)
				for sent := 0; sent < size; sent += len(buf) {
					if _, err := s.Write(buf); err != nil {
						s.Reset()
						return
					}
				}
				s.Close()
			})
			if err := dst.Connect(context.Background(), peer.AddrInfo{ID: src.ID(), Addrs: src.Addrs()}); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(size)
			var cpu time.Duration
			for b.Loop() {
				c0 := cpuTime()
				s, err := dst.NewStream(context.Background(), src.ID(), rawProtocol)
				if err != nil {
					b.Fatal(err)
				}
				s.CloseWrite()
				if n, err := io.CopyBuffer(io.Discard, s, make([]byte, 256<<10)); err != nil || n != size {
					b.Fatalf("%d bytes, %v", n, err)
				}
				s.Close()
				cpu += cpuTime() - c0
			}
			b.ReportMetric(cpu.Seconds()/(float64(b.N)*size/(1<<30)), "CPU-s/GiB")
		})
	}
}

// BenchmarkRoundTrip measures what one chunk-protocol message costs between
// two peers on loopback, in CPU time of both ends together: a have request
// answered at once (the cost of one offer, one long-poll answer or one busy
// answer), and a whole 64 KiB chunk request.
func BenchmarkRoundTrip(b *testing.B) {
	tcpOnly := func(o *Options) { o.Listen = []string{"/ip4/127.0.0.1/tcp/0"} }
	provider := testNode(b, "", tcpOnly)
	downloader := testNode(b, "", tcpOnly, provider)
	var key [32]byte
	sh, err := provider.Import(context.Background(), "rt.bin", io.LimitReader(rand.NewChaCha8(key), 4<<20), transfer.ImportOptions{ChunkSize: 64 << 10})
	if err != nil {
		b.Fatal(err)
	}
	src := downloader.peerSource(provider.ID())
	defer src.Close()
	n := sh.Manifest().NumChunks()
	buf := make([]byte, 64<<10)
	for _, tc := range []struct {
		name string
		do   func(i int) error
	}{
		{"have", func(int) error { _, err := src.Have(context.Background(), sh.ID(), n); return err }},
		{"chunk-64KiB", func(i int) error {
			rc, err := src.OpenChunk(context.Background(), sh.ID(), i%n)
			if err != nil {
				return err
			}
			_, err = io.ReadFull(rc, buf)
			rc.Close()
			return err
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var cpu time.Duration
			i := 0
			for b.Loop() {
				c0 := cpuTime()
				if err := tc.do(i); err != nil {
					b.Fatal(err)
				}
				cpu += cpuTime() - c0
				i++
			}
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "CPU-µs/op")
		})
	}
}
