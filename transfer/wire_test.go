package transfer_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
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

// countOpens makes src count the streams it opens.
func countOpens(src *transfer.StreamSource) *atomic.Int32 {
	var n atomic.Int32
	open := src.Open
	src.Open = func(ctx context.Context) (transfer.Stream, error) {
		n.Add(1)
		return open(ctx)
	}
	return &n
}

// TestPipelinedChunks: chunk requests share a lane, answered in order, each
// reader getting its own chunk; an error answer in between leaves the lane
// working; a reader closed early, or a request whose ctx ends while it
// waits its turn, has its response dropped in the background, and the
// lane goes on.
func TestPipelinedChunks(t *testing.T) {
	st, f := transfertest.NewStore(t)
	src := serveTCP(t, st, transfer.ServeOptions{})
	src.Lanes = 1
	opens := countOpens(src)
	m := f.Complete.Manifest()
	ctx := context.Background()
	want := func(i int) []byte { off, n := m.ChunkRange(i); return f.Content[off : off+n] }

	// Chunk 0 holds the lane's turn while the others queue behind it.
	first, err := src.OpenChunk(ctx, m.ID(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	got := make([][]byte, m.NumChunks())
	for i := 1; i < m.NumChunks(); i++ {
		wg.Go(func() {
			rc, err := src.OpenChunk(ctx, m.ID(), i)
			if err != nil {
				t.Error(err)
				return
			}
			got[i], _ = io.ReadAll(rc)
			rc.Close()
		})
	}
	time.Sleep(50 * time.Millisecond)
	got[0], _ = io.ReadAll(first)
	first.Close()
	wg.Wait()
	for i := range got {
		if !bytes.Equal(got[i], want(i)) {
			t.Fatalf("chunk %d: %d bytes, not the chunk's %d", i, len(got[i]), len(want(i)))
		}
	}

	// An error answer, a reader closed after one byte, a request given up
	// while queued: the next request on the lane still gets its chunk.
	if _, err := src.OpenChunk(ctx, f.Partial.ID(), 1); !errors.Is(err, transfer.ErrChunkNotHeld) {
		t.Fatalf("odd chunk of the partial share: %v", err)
	}
	rc, err := src.OpenChunk(ctx, m.ID(), 0)
	if err != nil {
		t.Fatal(err)
	}
	rc.Read(make([]byte, 1))
	qctx, cancel := context.WithCancel(ctx)
	queued := make(chan error, 1)
	go func() {
		_, err := src.OpenChunk(qctx, m.ID(), 1)
		queued <- err
	}()
	time.Sleep(50 * time.Millisecond) // queued behind chunk 0
	cancel()
	if err := <-queued; !errors.Is(err, context.Canceled) {
		t.Fatalf("a queued request whose ctx ended: %v", err)
	}
	rc.Close()
	last := m.NumChunks() - 1
	rc, err = src.OpenChunk(ctx, m.ID(), last)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(b, want(last)) {
		t.Fatalf("after dropped responses: %d bytes, not chunk %d", len(b), last)
	}
	if n := opens.Load(); n != 1 {
		t.Fatalf("%d streams opened, want one lane", n)
	}
}

// TestPipelinedChunksCancelMidChunk: a reader whose ctx ends in the middle
// of a chunk returns at once; its lane survives for the next request.
func TestPipelinedChunksCancelMidChunk(t *testing.T) {
	st, f := transfertest.NewStore(t)
	// 16 KiB chunks at 16 KiB/s, once two chunks took the limiter's burst.
	src := serveTCP(t, st, transfer.ServeOptions{Limiter: transfer.NewLimiter(transfer.MinChunkSize)})
	src.Lanes = 1
	opens := countOpens(src)
	m := f.Complete.Manifest()
	read := func(ctx context.Context, i int) ([]byte, error) {
		rc, err := src.OpenChunk(ctx, m.ID(), i)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return io.ReadAll(rc)
	}
	for i := range 2 {
		if _, err := read(context.Background(), i); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := read(ctx, 2); err == nil || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("read of a chunk whose ctx ended: %v after %v", err, time.Since(start))
	}
	b, err := read(context.Background(), 3)
	off, n := m.ChunkRange(3)
	if err != nil || !bytes.Equal(b, f.Content[off:off+n]) || opens.Load() != 1 {
		t.Fatalf("next chunk: %d bytes, %v, %d streams opened; want it on the same lane", len(b), err, opens.Load())
	}
}

// TestPipelinedChunksServerClosesLane: a server that answers one request
// per stream closes a lane under queued requests: each is asked again once
// on a new lane.
func TestPipelinedChunksServerClosesLane(t *testing.T) {
	st, f := transfertest.NewStore(t)
	src := serveTCP(t, st, transfer.ServeOptions{MaxRequests: 1})
	src.Lanes = 1
	m := f.Complete.Manifest()
	var wg sync.WaitGroup
	for i := range m.NumChunks() {
		wg.Go(func() {
			rc, err := src.OpenChunk(context.Background(), m.ID(), i)
			if err != nil {
				return // a request whose retry met a closed lane too: the download retries it
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			off, n := m.ChunkRange(i)
			if err == nil && !bytes.Equal(b, f.Content[off:off+n]) {
				t.Errorf("chunk %d: wrong bytes", i)
			}
		})
	}
	wg.Wait()
	rc, err := src.OpenChunk(context.Background(), m.ID(), 2)
	if err != nil {
		t.Fatalf("after the server closed lanes: %v", err)
	}
	rc.Close()
}

// TestPipelinedChunksCancelMidPayload: a reader whose ctx ends in the
// middle of a chunk's payload returns at once; the rest is dropped in the
// background and the lane serves the next request.
func TestPipelinedChunksCancelMidPayload(t *testing.T) {
	st, err := transfer.OpenStore(t.TempDir(), transfer.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const cs = 1 << 20
	content := transfertest.Bytes(5, 3*cs)
	sh, err := st.Import(context.Background(), "big.bin", bytes.NewReader(content), transfer.ImportOptions{ChunkSize: cs})
	if err != nil {
		t.Fatal(err)
	}
	// A chunk leaves in four buckets of 256 KiB, one every 250 ms.
	src := serveTCP(t, st, transfer.ServeOptions{Limiter: transfer.NewLimiter(cs)})
	src.Lanes = 1
	opens := countOpens(src)
	ctx, cancel := context.WithCancel(context.Background())
	rc, err := src.OpenChunk(ctx, sh.ID(), 0)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 16<<10)
	if _, err := io.ReadFull(rc, first); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	if _, err := io.ReadAll(rc); !errors.Is(err, context.Canceled) || time.Since(start) > 400*time.Millisecond {
		t.Fatalf("read of a chunk whose ctx ended mid-way: %v after %v", err, time.Since(start))
	}
	rc.Close()
	rc, err = src.OpenChunk(context.Background(), sh.ID(), 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(b, content[cs:2*cs]) || opens.Load() != 1 {
		t.Fatalf("next chunk: %d bytes, %v, %d streams opened; want it on the same lane", len(b), err, opens.Load())
	}
}
