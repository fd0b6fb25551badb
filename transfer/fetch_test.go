package transfer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// wrapSource lets a test change what a real Source (a Store) does.
type wrapSource struct {
	Source
	name    string
	corrupt func(i int) bool // flip a byte of these chunks
	fail    func(ctx context.Context, i int) error
	delay   time.Duration
	only    func(i int) bool // pretend to hold only these chunks
	trickle time.Duration    // each read returns at most 1 KiB, after this pause
	served  atomic.Int64
}

// trickleReader returns at most 1 KiB per read, each after a pause.
type trickleReader struct {
	io.ReadCloser
	pause time.Duration
}

func (r trickleReader) Read(p []byte) (int, error) {
	time.Sleep(r.pause)
	return r.ReadCloser.Read(p[:min(len(p), 1<<10)])
}

func (w *wrapSource) String() string { return w.name }

func (w *wrapSource) Have(ctx context.Context, id ID, n int) (Bitfield, error) {
	bf, err := w.Source.Have(ctx, id, n)
	if err != nil || w.only == nil {
		return bf, err
	}
	for i := range n {
		if !w.only(i) {
			bf.Clear(i)
		}
	}
	return bf, nil
}

func (w *wrapSource) OpenChunk(ctx context.Context, id ID, i int) (io.ReadCloser, error) {
	if w.fail != nil {
		if err := w.fail(ctx, i); err != nil {
			return nil, err
		}
	}
	if w.only != nil && !w.only(i) {
		return nil, ErrChunkNotHeld
	}
	if w.delay > 0 {
		select {
		case <-time.After(w.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	rc, err := w.Source.OpenChunk(ctx, id, i)
	if err != nil {
		return nil, err
	}
	w.served.Add(1)
	if w.trickle > 0 {
		return trickleReader{rc, w.trickle}, nil
	}
	if w.corrupt == nil || !w.corrupt(i) {
		return rc, nil
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	b[len(b)/2] ^= 0x01
	return io.NopCloser(bytes.NewReader(b)), nil
}

// swarmFixture is a share held by seed stores and a fresh share to fill.
type swarmFixture struct {
	content []byte
	m       *Manifest
	seeds   []*Store
	dst     *Share
}

func newFixture(t *testing.T, seeds, chunks int) *swarmFixture {
	t.Helper()
	f := &swarmFixture{content: randomBytes(uint64(chunks), chunks*MinChunkSize-77)}
	for range seeds {
		st := openStore(t)
		sh := seedStore(t, st, "data.bin", f.content, MinChunkSize)
		f.m = sh.Manifest()
		f.seeds = append(f.seeds, st)
	}
	dst, err := CreateShare(filepath.Join(t.TempDir(), "dst"), f.m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dst.Close() })
	f.dst = dst
	return f
}

func (f *swarmFixture) check(t *testing.T) {
	t.Helper()
	if !f.dst.Complete() {
		t.Fatalf("not complete: %d of %d chunks", f.dst.HaveCount(), f.m.NumChunks())
	}
	got, err := os.ReadFile(f.dst.DataPath())
	if err != nil || !bytes.Equal(got, f.content) {
		t.Fatalf("downloaded bytes differ (%v)", err)
	}
}

func TestDownloadFromManySources(t *testing.T) {
	f := newFixture(t, 3, 40)
	d := NewDownload(f.dst, DownloadOptions{PerSource: 2})
	var srcs []*wrapSource
	for k, st := range f.seeds {
		w := &wrapSource{Source: st, name: fmt.Sprintf("seed%d", k), delay: time.Millisecond}
		srcs = append(srcs, w)
		d.AddSource(w)
	}
	var calls atomic.Int32
	d.opts.Progress = func(p Progress) { calls.Add(1) }
	stats, err := d.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f.check(t)
	if stats.Chunks != 40 || int(calls.Load()) != 40 {
		t.Fatalf("stats %+v, progress calls %d", stats, calls.Load())
	}
	for _, w := range srcs {
		if w.served.Load() == 0 {
			t.Errorf("%s served nothing: load not spread", w.name)
		}
	}
}

func TestDownloadDropsCorruptingSource(t *testing.T) {
	f := newFixture(t, 2, 30)
	bad := &wrapSource{Source: f.seeds[0], name: "liar", corrupt: func(int) bool { return true }}
	good := &wrapSource{Source: f.seeds[1], name: "honest", delay: 2 * time.Millisecond}
	d := NewDownload(f.dst, DownloadOptions{})
	d.AddSource(bad)
	d.AddSource(good)
	stats, err := d.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f.check(t)
	if stats.BadChunks < 1 || !stats.Sources["liar"].Dropped || stats.Sources["liar"].Chunks != 0 {
		t.Fatalf("liar not caught: %+v", stats.Sources["liar"])
	}
	// Once dropped, it is asked no more than the requests already in flight.
	if n := bad.served.Load(); n > int64(DefaultPerSource) {
		t.Fatalf("liar served %d chunks after being dropped", n)
	}
}

func TestDownloadOnlyLiarFailsNamingChunkAndSource(t *testing.T) {
	f := newFixture(t, 1, 4)
	d := NewDownload(f.dst, DownloadOptions{})
	d.AddSource(&wrapSource{Source: f.seeds[0], name: "liar", corrupt: func(i int) bool { return i == 2 }})
	_, err := d.Run(context.Background())
	if !errors.Is(err, ErrNoSources) || !strings.Contains(err.Error(), "chunk 2") || !strings.Contains(err.Error(), "liar") {
		t.Fatalf("err = %v", err)
	}
	if f.dst.HasChunk(2) {
		t.Fatal("bad chunk stored")
	}
}

func TestDownloadRetriesTransientErrors(t *testing.T) {
	// A flaky link: every third request fails. Each failed chunk is asked
	// again after a short backoff, and the download completes.
	f := newFixture(t, 1, 10)
	var requests atomic.Int32
	flaky := &wrapSource{Source: f.seeds[0], name: "flaky", fail: func(context.Context, int) error {
		if requests.Add(1)%3 == 0 {
			return errors.New("connection reset")
		}
		return nil
	}}
	d := NewDownload(f.dst, DownloadOptions{})
	d.AddSource(flaky)
	stats, err := d.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f.check(t)
	if stats.Sources["flaky"].Errors < 3 {
		t.Fatalf("expected retries, stats %+v", stats.Sources["flaky"])
	}
}

func TestDownloadStallsOut(t *testing.T) {
	f := newFixture(t, 1, 3)
	d := NewDownload(f.dst, DownloadOptions{StallTimeout: 300 * time.Millisecond})
	d.AddSource(&wrapSource{Source: f.seeds[0], name: "down", fail: func(context.Context, int) error { return errors.New("connection refused") }})
	_, err := d.Run(context.Background())
	if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("err = %v", err)
	}
}

// A chunk that takes longer than the stall timeout to arrive, while its
// bytes keep coming (a server's uplink shared by many clients), is progress:
// the download waits for it instead of giving up.
func TestDownloadSlowChunksAreProgress(t *testing.T) {
	f := newFixture(t, 1, 2)
	d := NewDownload(f.dst, DownloadOptions{StallTimeout: 300 * time.Millisecond})
	d.AddSource(&wrapSource{Source: f.seeds[0], name: "slow", trickle: 40 * time.Millisecond}) // ~16 reads a chunk: 640 ms
	start := time.Now()
	if _, err := d.Run(context.Background()); err != nil {
		t.Fatalf("after %v: %v", time.Since(start), err)
	}
	f.check(t)
}

func TestDownloadPermanentErrorEndsAtOnce(t *testing.T) {
	f := newFixture(t, 1, 3)
	d := NewDownload(f.dst, DownloadOptions{})
	d.AddSource(&wrapSource{Source: f.seeds[0], name: "nope", fail: func(context.Context, int) error { return fmt.Errorf("401: %w", ErrSourceRefused) }})
	_, err := d.Run(context.Background())
	if !errors.Is(err, ErrNoSources) || !strings.Contains(err.Error(), "401") {
		t.Fatalf("err = %v", err)
	}
}

func TestDownloadSplitAvailability(t *testing.T) {
	// Each source holds half; together they hold all. The downloader learns
	// availability through Have and asks each for what it has.
	f := newFixture(t, 2, 20)
	even := &wrapSource{Source: f.seeds[0], name: "even", only: func(i int) bool { return i%2 == 0 }}
	odd := &wrapSource{Source: f.seeds[1], name: "odd", only: func(i int) bool { return i%2 == 1 }}
	d := NewDownload(f.dst, DownloadOptions{})
	d.AddSource(even)
	d.AddSource(odd)
	stats, err := d.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f.check(t)
	if stats.Sources["even"].Chunks != 10 || stats.Sources["odd"].Chunks != 10 {
		t.Fatalf("stats %+v", stats.Sources)
	}
}

func TestDownloadResumesWithoutRefetching(t *testing.T) {
	f := newFixture(t, 1, 20)
	src := &wrapSource{Source: f.seeds[0], name: "seed"}
	ctx, cancel := context.WithCancel(context.Background())
	d := NewDownload(f.dst, DownloadOptions{MaxInFlight: 1, PerSource: 1, Progress: func(p Progress) {
		if p.Chunks == 7 {
			cancel()
		}
	}})
	d.AddSource(src)
	if _, err := d.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("first run: %v", err)
	}
	held := f.dst.HaveCount()
	if held < 7 {
		t.Fatalf("held %d after cancel", held)
	}
	// Reopen from disk, as a new process would.
	f.dst.Close()
	sh, err := OpenShare(f.dst.Dir())
	if err != nil {
		t.Fatal(err)
	}
	f.dst = sh
	d2 := NewDownload(sh, DownloadOptions{})
	d2.AddSource(src)
	stats, err := d2.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if stats.Chunks != 20-held {
		t.Fatalf("second run fetched %d chunks, want %d", stats.Chunks, 20-held)
	}
	f.check(t)
}

func TestDownloadEndgameBeatsSlowSource(t *testing.T) {
	// A source that hangs on a chunk must not hold up the end: a second
	// source gets the same request and the first answer wins.
	f := newFixture(t, 2, 6)
	slow := &wrapSource{Source: f.seeds[0], name: "slow", fail: func(ctx context.Context, i int) error {
		if i == 5 {
			<-ctx.Done() // hangs until cancelled
			return ctx.Err()
		}
		return nil
	}}
	var gained atomic.Bool
	fast := &wrapSource{Source: f.seeds[1], name: "fast", only: func(i int) bool { return i != 5 || gained.Load() }}
	d := NewDownload(f.dst, DownloadOptions{StallTimeout: 10 * time.Second})
	d.AddSource(slow)
	d.AddSource(fast)
	// Let "fast" learn it lacks chunk 5 then gain it: the endgame must pick
	// it up from "fast" after a Have refresh.
	go func() {
		time.Sleep(200 * time.Millisecond)
		gained.Store(true)
	}()
	done := make(chan error, 1)
	go func() { _, err := d.Run(context.Background()); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("download hung on the slow source")
	}
	f.check(t)
}

func TestDownloadWritesNothingUnverifiedOnDiskFull(t *testing.T) {
	// A local write error ends the download with that error; the chunk is
	// not recorded as held.
	f := newFixture(t, 1, 3)
	os.Chmod(filepath.Join(f.dst.DataPath()), 0o400)
	f.dst.tree.closeFiles()
	defer os.Chmod(f.dst.DataPath(), 0o600)
	if os.Getuid() == 0 {
		t.Skip("root ignores file permissions")
	}
	d := NewDownload(f.dst, DownloadOptions{})
	d.AddSource(f.seeds[0])
	if _, err := d.Run(context.Background()); err == nil {
		t.Fatal("download into a read-only file succeeded")
	}
	if f.dst.HaveCount() != 0 {
		t.Fatal("chunks recorded although writing failed")
	}
}

func TestFetchManifest(t *testing.T) {
	f := newFixture(t, 1, 2)
	liar := &lyingManifest{Source: f.seeds[0]}
	m, err := FetchManifest(context.Background(), f.m.ID(), liar, f.seeds[0])
	if err != nil || m.ID() != f.m.ID() {
		t.Fatalf("FetchManifest: %v", err)
	}
	if _, err := FetchManifest(context.Background(), f.m.ID(), liar); !errors.Is(err, ErrBadManifest) {
		t.Fatalf("lying manifest: %v", err)
	}
}

type lyingManifest struct{ Source }

func (l *lyingManifest) Manifest(ctx context.Context, id ID) ([]byte, error) {
	b, err := l.Source.Manifest(ctx, id)
	return append(bytes.Clone(b), ' '), err
}

func (l *lyingManifest) String() string { return "liar" }

// The long poll's waits stay within a stream's idle limit, so that a stream
// waiting on a poll is never cut as idle.
func TestLongPollWithinStreamIdle(t *testing.T) {
	if !(HaveWaitTime <= MaxHaveWait && MaxHaveWait < streamIdle && HaveWaitTime < maxStreamIdle) {
		t.Fatalf("HaveWaitTime %v, MaxHaveWait %v, streamIdle %v, maxStreamIdle %v", HaveWaitTime, MaxHaveWait, streamIdle, maxStreamIdle)
	}
}

func TestRemoveShareMidDownload(t *testing.T) {
	// A store's share is removed while a download fills it, with many chunks
	// being written at once: the download ends with ErrRemoved, soon, and
	// (under -race) without a data race between the writes and the removal.
	// The second case is a daemon shutting down (closing its shares) while
	// a removal comes in.
	for _, tt := range []struct {
		name  string
		close bool
	}{{"remove", false}, {"close then remove", true}} {
		t.Run(tt.name, func(t *testing.T) {
			for range 3 {
				removeMidDownload(t, tt.close)
			}
		})
	}
}

func removeMidDownload(t *testing.T, closeFirst bool) {
	f := newFixture(t, 2, 96)
	dst, err := OpenStore(t.TempDir(), StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	sh, _, err := dst.Create(f.m)
	if err != nil {
		t.Fatal(err)
	}
	// The sources offer chunks [0, 32) first, [32, 64) from just before the
	// removal, so that many are being written while it happens, and the rest
	// only after it, so that the download cannot finish first.
	var offer atomic.Int32
	offer.Store(32)
	only := func(i int) bool { return i < int(offer.Load()) }
	d := NewDownload(sh, DownloadOptions{MaxInFlight: 64, PerSource: 32, HaveInterval: 5 * time.Millisecond, StallTimeout: 10 * time.Second})
	for k, seed := range f.seeds {
		d.AddSource(&wrapSource{Source: seed, name: fmt.Sprint("seed", k), only: only})
	}
	removed := make(chan error, 1)
	// waitHeld waits until sh holds n chunks; it takes the change channel
	// before it looks, so that it cannot miss the last change.
	waitHeld := func(n int) {
		for {
			changed := sh.Changed()
			if sh.HaveCount() >= n {
				return
			}
			select {
			case <-changed:
			case <-time.After(5 * time.Second):
			}
		}
	}
	go func() {
		defer offer.Store(int32(f.m.NumChunks()))
		waitHeld(32)
		offer.Store(64)
		waitHeld(36)
		if closeFirst {
			sh.Close()
		}
		removed <- dst.Remove(f.m.ID())
	}()
	start := time.Now()
	_, err = d.Run(context.Background())
	if rerr := <-removed; rerr != nil {
		t.Fatal(rerr)
	}
	if want := ErrRemoved; !closeFirst && !errors.Is(err, want) {
		t.Fatalf("download of a removed share: %v, want %v", err, want)
	}
	if err == nil || !Permanent(err) {
		t.Fatalf("download of a removed share: %v, want a permanent error", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("download ended %v after the removal began, want at once", took)
	}
	if _, err := dst.Get(f.m.ID()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removed share still in the store: %v", err)
	}
	if err := sh.PutChunk(0, f.content[:f.m.ChunkLen(0)]); !errors.Is(err, ErrRemoved) {
		t.Fatalf("PutChunk on a removed share: %v", err)
	}
}

func TestBufferPool(t *testing.T) {
	const k = 64 << 10
	p := bufferPool{max: 3 * k, idle: 50 * time.Millisecond}
	same := func(a, b []byte) bool { return &a[0] == &b[0] }
	a := p.get(k)
	if len(a) != k || !canDirect(a, 0) {
		t.Fatalf("buffer of %d bytes, aligned %v", len(a), canDirect(a, 0))
	}
	p.put(a)
	if b := p.get(2 * k); same(a, b) || len(b) != 2*k {
		t.Fatal("a buffer of another size was reused")
	}
	if b := p.get(k); !same(a, b) {
		t.Fatal("the kept buffer was not reused")
	}
	for range 4 { // four offered, three kept
		p.put(AlignedBuffer(k))
	}
	if p.bytes != 3*k || len(p.free) != 3 {
		t.Fatalf("kept %d bytes in %d buffers, want the bound of %d", p.bytes, len(p.free), 3*k)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		p.mu.Lock()
		n := len(p.free)
		p.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an idle pool kept its buffers")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDownloadTrace: with Trace set, every chunk has a request, an open
// and a done record naming it and its source, and only the kept copies say
// won; a busy answer has a record of its own.
func TestDownloadTrace(t *testing.T) {
	f := newFixture(t, 1, 12)
	var busy atomic.Bool
	w := &wrapSource{Source: f.seeds[0], name: "seed0", fail: func(_ context.Context, i int) error {
		if i == 5 && !busy.Swap(true) {
			return ErrBusy
		}
		return nil
	}}
	var buf bytes.Buffer
	d := NewDownload(f.dst, DownloadOptions{PerSource: 2, Trace: slog.New(slog.NewJSONHandler(&buf, nil))})
	d.AddSource(w)
	if _, err := d.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.check(t)
	type record struct {
		Msg    string `json:"msg"`
		Chunk  int    `json:"chunk"`
		Source string `json:"source"`
		Won    bool   `json:"won"`
	}
	count := map[string]map[int]int{}
	won := map[int]bool{}
	dec := json.NewDecoder(&buf)
	for {
		var r record
		if err := dec.Decode(&r); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if r.Source != "seed0" {
			t.Fatalf("record %+v names source %q", r, r.Source)
		}
		if count[r.Msg] == nil {
			count[r.Msg] = map[int]int{}
		}
		count[r.Msg][r.Chunk]++
		if r.Msg == "done" && r.Won {
			won[r.Chunk] = true
		}
	}
	for i := range 12 {
		if count["request"][i] == 0 || count["open"][i] == 0 || count["done"][i] == 0 || !won[i] {
			t.Errorf("chunk %d: requests %d, opens %d, dones %d, won %v", i, count["request"][i], count["open"][i], count["done"][i], won[i])
		}
	}
	if count["busy"][5] != 1 || len(count["busy"]) != 1 {
		t.Errorf("busy records %v, want one for chunk 5", count["busy"])
	}
}
