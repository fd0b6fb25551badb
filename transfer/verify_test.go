package transfer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

var quietLog = slog.New(slog.DiscardHandler)

// flip inverts one byte of the file at path, at off, as rot would.
func flip(t testing.TB, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x55
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// rottenStore is a store holding one complete share whose chunk bad was
// changed on disk while the store was closed: reopened, nothing is verified.
func rottenStore(t *testing.T, content []byte, bad int) (*Store, *Share) {
	t.Helper()
	dir := t.TempDir()
	st, err := OpenStore(dir, StoreOptions{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	sh := seedStore(t, st, "f.bin", content, MinChunkSize)
	path, id := sh.DataPath(), sh.ID()
	st.Close()
	off, _ := sh.Manifest().ChunkRange(bad)
	flip(t, path, off+7)
	if st, err = OpenStore(dir, StoreOptions{Logger: quietLog}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if sh, err = st.Get(id); err != nil {
		t.Fatal(err)
	}
	return st, sh
}

func TestRotFoundOnFirstReadAndRepaired(t *testing.T) {
	content := randomBytes(31, 10*MinChunkSize+99)
	st, sh := rottenStore(t, content, 4)
	var hooked atomic.Int32
	st.OnDamaged(func(s *Share, i int) {
		if s == sh && i == 4 {
			hooked.Add(1)
		}
	})
	if sh.Verified() != 0 || !sh.Complete() {
		t.Fatalf("reopened share: verified %d, complete %v; want 0, true", sh.Verified(), sh.Complete())
	}
	// A good chunk is checked once, on its first read.
	for range 2 {
		rc, err := sh.OpenChunk(3)
		if err != nil {
			t.Fatal(err)
		}
		rc.Close()
	}
	if sh.Verified() != 1 {
		t.Fatalf("verified %d chunks after reading chunk 3, want 1", sh.Verified())
	}
	// The rotten one is refused as not held, and dropped everywhere.
	_, err := sh.OpenChunk(4)
	if !errors.Is(err, ErrChunkNotHeld) {
		t.Fatalf("OpenChunk of a damaged chunk: %v, want ErrChunkNotHeld", err)
	}
	if sh.HasChunk(4) || sh.Complete() || sh.Damaged() != 1 || st.DamagedChunks() != 1 || hooked.Load() != 1 {
		t.Fatalf("after the damage: held %v, complete %v, damaged %d, store count %d, hooks %d; want false, false, 1, 1, 1",
			sh.HasChunk(4), sh.Complete(), sh.Damaged(), st.DamagedChunks(), hooked.Load())
	}
	if _, err := sh.OpenChunk(4); !errors.Is(err, ErrChunkNotHeld) {
		t.Fatalf("second OpenChunk of a damaged chunk: %v", err)
	}
	if _, err := sh.OpenFile(); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("OpenFile of a damaged share: %v, want ErrIncomplete", err)
	}
	if st.DamagedChunks() != 1 {
		t.Fatalf("one damaged chunk counted %d times", st.DamagedChunks())
	}

	// The journal says so across a restart, and the share stays damaged.
	dir, id := st.Dir(), sh.ID()
	st.Close()
	st2, err := OpenStore(dir, StoreOptions{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	sh2, err := st2.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	if sh2.Complete() || sh2.HasChunk(4) || sh2.HaveCount() != sh2.Manifest().NumChunks()-1 || sh2.Damaged() != 1 {
		t.Fatalf("reopened: complete %v, chunk 4 held %v, %d held, damaged %d", sh2.Complete(), sh2.HasChunk(4), sh2.HaveCount(), sh2.Damaged())
	}
	// Damaged shares are not abandoned uploads.
	if gone := st2.ExpirePartial(0); len(gone) != 0 {
		t.Fatalf("ExpirePartial removed a damaged share: %v", gone)
	}
	// Putting the chunk again repairs it: complete, with the right bytes.
	off, n := sh2.Manifest().ChunkRange(4)
	if err := sh2.PutChunk(4, content[off:off+n]); err != nil {
		t.Fatal(err)
	}
	if !sh2.Complete() || sh2.Damaged() != 0 {
		t.Fatalf("repaired: complete %v, damaged %d", sh2.Complete(), sh2.Damaged())
	}
	if got, _ := os.ReadFile(sh2.DataPath()); !bytes.Equal(got, content) {
		t.Fatal("repaired file differs")
	}
}

func TestRotFoundByWholeFileReads(t *testing.T) {
	content := randomBytes(32, 40*MinChunkSize)
	for _, tt := range []struct {
		name string
		read func(f *FileReader) error
	}{
		{"Read", func(f *FileReader) error { _, err := io.Copy(io.Discard, struct{ io.Reader }{f}); return err }},
		{"Next", func(f *FileReader) error {
			for {
				r, err := f.Next(3 * MinChunkSize)
				if err != nil {
					return err
				}
				if n, err := io.Copy(io.Discard, r); err != nil || n == 0 {
					return err
				}
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, sh := rottenStore(t, content, 33)
			f, err := sh.OpenFile()
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := tt.read(f); !errors.Is(err, ErrChunkNotHeld) {
				t.Fatalf("reading a file with a damaged chunk: %v, want ErrChunkNotHeld", err)
			}
			if sh.HasChunk(33) || sh.Complete() || sh.Verified() != 33 {
				t.Fatalf("chunk 33 held %v, complete %v, verified %d; want false, false, 33", sh.HasChunk(33), sh.Complete(), sh.Verified())
			}
		})
	}
	// Without damage, every byte comes out, once checked.
	st := openStore(t)
	sh := seedStore(t, st, "g.bin", content, MinChunkSize)
	f, err := sh.OpenFile()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got bytes.Buffer
	if _, err := io.Copy(&got, struct{ io.Reader }{f}); err != nil || !bytes.Equal(got.Bytes(), content) {
		t.Fatalf("whole file: %v, equal %v", err, bytes.Equal(got.Bytes(), content))
	}
}

func TestRotFoundInTar(t *testing.T) {
	files := map[string]string{"a.txt": string(randomBytes(1, 3*MinChunkSize)), "b/c.bin": string(randomBytes(2, 5*MinChunkSize))}
	m := mustManifest(t, "d", true, MinChunkSize, files)
	st := openStore(t)
	sh, _, err := st.Create(m)
	if err != nil {
		t.Fatal(err)
	}
	all := files["a.txt"] + files["b/c.bin"]
	for i := range m.NumChunks() {
		off, n := m.ChunkRange(i)
		if err := sh.PutChunk(i, []byte(all[off:off+n])); err != nil {
			t.Fatal(err)
		}
	}
	dir, id := st.Dir(), m.ID()
	st.Close()
	flip(t, filepath.Join(sh.DataPath(), "b", "c.bin"), 4*MinChunkSize+1) // chunk 7
	st2, err := OpenStore(dir, StoreOptions{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	sh2, _ := st2.Get(id)
	if err := sh2.WriteTar(io.Discard); !errors.Is(err, ErrChunkNotHeld) {
		t.Fatalf("tar of a damaged share: %v, want ErrChunkNotHeld", err)
	}
	if sh2.HasChunk(7) || sh2.Damaged() != 1 {
		t.Fatalf("chunk 7 held %v, damaged %d", sh2.HasChunk(7), sh2.Damaged())
	}
}

func TestVerifyFindsRotAfterFirstRead(t *testing.T) {
	// A chunk verified once and changed later is served as it is until a
	// scrub reads it again: Store.Verify finds it, paced by its limiter.
	content := randomBytes(33, 64*MinChunkSize)
	st := openStore(t)
	sh := seedStore(t, st, "f.bin", content, MinChunkSize)
	flip(t, sh.DataPath(), 17*MinChunkSize+3)
	flip(t, sh.DataPath(), 50*MinChunkSize)
	if rc, err := sh.OpenChunk(17); err != nil { // verified when imported
		t.Fatalf("OpenChunk of an imported chunk: %v", err)
	} else {
		rc.Close()
	}
	const rate = 2 << 20 // 1 MiB of chunks in about half a second
	start := time.Now()
	res, err := st.Verify(context.Background(), nil, NewLimiter(rate))
	if err != nil {
		t.Fatal(err)
	}
	if took, min := time.Since(start), time.Duration(float64(len(content))/rate*0.8*float64(time.Second)); took < min {
		t.Fatalf("verify of %d bytes at %d B/s took %v, want at least %v", len(content), rate, took, min)
	}
	if len(res) != 1 || res[0].Checked != 64 || len(res[0].Damaged) != 2 || res[0].Damaged[0] != 17 || res[0].Damaged[1] != 50 {
		t.Fatalf("results %+v, want 64 checked and chunks 17 and 50 damaged", res)
	}
	if sh.HaveCount() != 62 || st.DamagedChunks() != 2 {
		t.Fatalf("after the scrub: %d held, %d counted damaged", sh.HaveCount(), st.DamagedChunks())
	}
	if _, err := st.Verify(context.Background(), []ID{{}}, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("verify of an unknown share: %v", err)
	}
}

func TestScrubRunsEachInterval(t *testing.T) {
	content := randomBytes(34, 8*MinChunkSize)
	st := openStore(t)
	sh := seedStore(t, st, "f.bin", content, MinChunkSize)
	flip(t, sh.DataPath(), 5*MinChunkSize)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.Scrub(ctx, 200*time.Millisecond, nil) }()
	deadline := time.Now().Add(20 * time.Second)
	for st.DamagedChunks() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Scrub = %v, want context.Canceled", err)
	}
	if sh.HasChunk(5) || st.DamagedChunks() != 1 {
		t.Fatalf("scrub: chunk 5 held %v, %d damaged", sh.HasChunk(5), st.DamagedChunks())
	}
	if _, err := os.Stat(filepath.Join(st.Dir(), scrubFile)); err != nil {
		t.Fatalf("the scrub's time is not kept: %v", err)
	}
}

func TestExpirePartial(t *testing.T) {
	content := randomBytes(35, 6*MinChunkSize)
	m := mustManifest(t, "f", false, MinChunkSize, map[string]string{"f": string(content)})
	other := mustManifest(t, "g", false, MinChunkSize, map[string]string{"g": string(content[:3*MinChunkSize])})
	st := openStore(t)
	idle, _, err := st.Create(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := idle.PutChunk(0, content[:MinChunkSize]); err != nil {
		t.Fatal(err)
	}
	complete := seedStore(t, st, "h", content, MinChunkSize)
	time.Sleep(300 * time.Millisecond)
	active, _, err := st.Create(other)
	if err != nil {
		t.Fatal(err)
	}
	if err := active.PutChunk(1, content[MinChunkSize:2*MinChunkSize]); err != nil {
		t.Fatal(err)
	}
	gone := st.ExpirePartial(200 * time.Millisecond)
	if len(gone) != 1 || gone[0] != m.ID() {
		t.Fatalf("expired %v, want only the idle upload %s", gone, m.ID())
	}
	for _, keep := range []ID{other.ID(), complete.ID()} {
		if _, err := st.Get(keep); err != nil {
			t.Fatalf("%s was expired: %v", keep, err)
		}
	}
	// After a restart, idleness is measured from the journal's last write.
	dir := st.Dir()
	st.Close()
	st2, err := OpenStore(dir, StoreOptions{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	if gone := st2.ExpirePartial(time.Hour); len(gone) != 0 {
		t.Fatalf("expired %v within the hour", gone)
	}
	time.Sleep(300 * time.Millisecond)
	if gone := st2.ExpirePartial(200 * time.Millisecond); len(gone) != 1 || gone[0] != other.ID() {
		t.Fatalf("expired %v after a restart, want %s", gone, other.ID())
	}
}
