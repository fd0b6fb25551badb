package transfer_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/sharefiles/share/transfer"
	"github.com/sharefiles/share/transfer/transfertest"
)

// tcpStream makes a loopback TCP connection a transfer.Stream.
type tcpStream struct{ *net.TCPConn }

func (s tcpStream) Reset() error {
	s.SetLinger(0)
	return s.Close()
}

// serveTCP answers the chunk protocol for src on a loopback listener, one
// request per connection, until the test ends.
func serveTCP(t *testing.T, src transfer.Source, opts transfer.ServeOptions) *transfer.StreamSource {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { transfer.ServeStream(ctx, tcpStream{c.(*net.TCPConn)}, src, opts) })
		}
	})
	t.Cleanup(func() { cancel(); ln.Close(); wg.Wait() })
	addr := ln.Addr().String()
	return &transfer.StreamSource{Name: "tcp " + addr, Open: func(ctx context.Context) (transfer.Stream, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return tcpStream{c.(*net.TCPConn)}, nil
	}}
}

func TestStreamSourceConformance(t *testing.T) {
	transfertest.Run(t, func(t *testing.T, st *transfer.Store) transfer.Source {
		return serveTCP(t, st, transfer.ServeOptions{})
	})
}

func TestStreamLongPollHave(t *testing.T) {
	st, f := transfertest.NewStore(t)
	src := serveTCP(t, st, transfer.ServeOptions{})
	m := f.Partial.Manifest()
	ctx := context.Background()
	held := f.Partial.HaveCount()

	got := make(chan transfer.Bitfield, 1)
	go func() {
		bf, err := src.WaitHave(ctx, m.ID(), m.NumChunks(), f.Partial.Have().Digest())
		if err != nil {
			t.Error(err)
		}
		got <- bf
	}()
	select {
	case <-got:
		t.Fatal("long poll answered before there was news")
	case <-time.After(200 * time.Millisecond):
	}
	// The partial share gains chunk 1: the poll answers.
	other := transfertest.Bytes(2, 4*transfer.MinChunkSize)
	off, n := m.ChunkRange(1)
	if err := f.Partial.PutChunk(1, other[off:off+n]); err != nil {
		t.Fatal(err)
	}
	select {
	case bf := <-got:
		if !bf.Has(1) || bf.Count() != held+1 {
			t.Fatalf("long poll returned %d chunks", bf.Count())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("long poll did not answer the news")
	}
}

func TestServeStreamLimitsChunkRate(t *testing.T) {
	st, f := transfertest.NewStore(t)
	const rate = 256 << 10
	var served int64
	var mu sync.Mutex
	src := serveTCP(t, st, transfer.ServeOptions{Limiter: transfer.NewLimiter(rate), Served: func(_ transfer.ID, _ int, n int64) {
		mu.Lock()
		served += n
		mu.Unlock()
	}})
	start := time.Now()
	for i := range f.Complete.Manifest().NumChunks() {
		rc, err := src.OpenChunk(context.Background(), f.Complete.ID(), i)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, rc)
		rc.Close()
	}
	size := f.Complete.Manifest().Size()
	floor := time.Duration(float64(size-64<<10) / rate * float64(time.Second))
	if el := time.Since(start); el < floor {
		t.Fatalf("%d bytes in %v: faster than the %d B/s cap allows (%v)", size, el, rate, floor)
	}
	// The server reports a chunk after its last write, which may be after
	// the client read it.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		mu.Lock()
		got := served
		mu.Unlock()
		if got == size {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Served reported %d bytes, want %d", got, size)
		}
	}
}

func TestDecodeRequest(t *testing.T) {
	st, f := transfertest.NewStore(t)
	_ = st
	good := transfer.EncodeRequest(transfer.Request{Op: 'C', ID: f.Complete.ID(), A: 3})
	r, err := transfer.DecodeRequest(good)
	if err != nil || r.Op != 'C' || r.ID != f.Complete.ID() || r.A != 3 {
		t.Fatalf("round trip: %+v %v", r, err)
	}
	mutate := func(fn func(b []byte) []byte) []byte { return fn(bytes.Clone(good)) }
	for name, b := range map[string][]byte{
		"short":    good[:47],
		"long":     append(bytes.Clone(good), 0),
		"op":       mutate(func(b []byte) []byte { b[0] = 'X'; return b }),
		"reserved": mutate(func(b []byte) []byte { b[2] = 1; return b }),
		"zero id":  mutate(func(b []byte) []byte { clear(b[4:36]); return b }),
	} {
		if _, err := transfer.DecodeRequest(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// memStream is an in-memory Stream that replays a canned response: for
// fuzzing the client's response parsing.
type memStream struct {
	r *bytes.Reader
	w bytes.Buffer
}

func (m *memStream) Read(p []byte) (int, error)       { return m.r.Read(p) }
func (m *memStream) Write(p []byte) (int, error)      { return m.w.Write(p) }
func (m *memStream) CloseWrite() error                { return nil }
func (m *memStream) Close() error                     { return nil }
func (m *memStream) Reset() error                     { return nil }
func (m *memStream) SetReadDeadline(time.Time) error  { return nil }
func (m *memStream) SetWriteDeadline(time.Time) error { return nil }

func FuzzDecodeRequest(f *testing.F) {
	var id [32]byte
	id[0] = 1
	f.Add(append([]byte{'C', 0, 0, 0}, append(id[:], 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0)...))
	f.Add(append([]byte{'H', 0, 0, 0}, append(id[:], 0, 0, 0, 9, 0, 0, 0, 2, 0, 0, 39, 16)...))
	f.Add([]byte("M"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := transfer.DecodeRequest(b)
		if err != nil {
			return
		}
		if !bytes.Equal(transfer.EncodeRequest(r), b) {
			t.Fatal("request does not round-trip")
		}
	})
}

// FuzzStreamResponse feeds arbitrary response bytes to each client call: it
// must return an error or bounded, well-formed data, never panic or hang.
func FuzzStreamResponse(f *testing.F) {
	f.Add(byte('C'), []byte{0, 0, 0, 0, 3, 'a', 'b', 'c'})
	f.Add(byte('H'), []byte{0, 0, 0, 0, 1, 0xff})
	f.Add(byte('M'), []byte{0, 0, 0, 0, 2, '{', '}'})
	f.Add(byte('C'), []byte{2, 0, 0, 0, 0})
	f.Add(byte('C'), []byte{0, 0xff, 0xff, 0xff, 0xff})
	var id transfer.ID
	if err := id.UnmarshalText([]byte("bagaaihrag4t5pu6ffzdive4t7izrgfpixqjkwkhw5yu45uaw2ajuke62t7uq")); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, op byte, resp []byte) {
		src := &transfer.StreamSource{Name: "fuzz", Open: func(context.Context) (transfer.Stream, error) {
			return &memStream{r: bytes.NewReader(resp)}, nil
		}}
		ctx := context.Background()
		switch op % 3 {
		case 0:
			b, err := src.Manifest(ctx, id)
			if err == nil && len(b) > transfer.MaxManifestSize {
				t.Fatal("manifest over the limit")
			}
		case 1:
			bf, err := src.Have(ctx, id, 9)
			if err == nil && bf.Len() != 9 {
				t.Fatal("bitfield of the wrong length")
			}
		case 2:
			rc, err := src.OpenChunk(ctx, id, 0)
			if err != nil {
				return
			}
			n, _ := io.Copy(io.Discard, io.LimitReader(rc, transfer.MaxChunkSize+1))
			rc.Close()
			if n > transfer.MaxChunkSize {
				t.Fatal("chunk over the limit")
			}
		}
	})
}
