package transfer

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestImportAndReadBack(t *testing.T) {
	st := openStore(t)
	content := randomBytes(3, 5*MinChunkSize+123)
	sh := seedStore(t, st, "file.bin", content, MinChunkSize)
	if !sh.Complete() || sh.HaveCount() != 6 {
		t.Fatalf("complete=%v have=%d", sh.Complete(), sh.HaveCount())
	}
	// The share is an ordinary file a person can open.
	got, err := os.ReadFile(sh.DataPath())
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("data file: %v, equal=%v", err, bytes.Equal(got, content))
	}
	for i := range sh.Manifest().NumChunks() {
		off, n := sh.Manifest().ChunkRange(i)
		p := make([]byte, n)
		if err := sh.ReadChunk(i, p); err != nil || !bytes.Equal(p, content[off:off+n]) {
			t.Fatalf("chunk %d: %v", i, err)
		}
		rc, err := sh.OpenChunk(i)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		buf.ReadFrom(rc)
		rc.Close()
		if !bytes.Equal(buf.Bytes(), content[off:off+n]) {
			t.Fatalf("OpenChunk %d returned other bytes", i)
		}
	}
	// Importing the same bytes again gives the same share.
	again := seedStore(t, st, "file.bin", content, MinChunkSize)
	if again != sh {
		t.Fatal("re-import made a second share")
	}
	// A second process cannot open the same store; a reopened one finds it.
	if _, err := OpenStore(st.Dir(), StoreOptions{}); !errors.Is(err, ErrInUse) {
		t.Fatalf("second open of a store in use: %v", err)
	}
	st.Close()
	st2, err := OpenStore(st.Dir(), StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	if s2, err := st2.Get(sh.ID()); err != nil || !s2.Complete() {
		t.Fatalf("reopened store: %v", err)
	}
}

// TestImportBlockEdges: Import writes whole aligned blocks directly and the
// rest through the page cache; the file holds the stream's bytes whatever
// its size against those blocks, and whatever size the reader's reads are.
func TestImportBlockEdges(t *testing.T) {
	st := openStore(t)
	for i, size := range []int{1, directAlign - 1, directAlign, importBufSize - 1, importBufSize, importBufSize + 1, 3*importBufSize + 12345} {
		content := randomBytes(uint64(40+i), size)
		for _, r := range []io.Reader{bytes.NewReader(content), iotest.HalfReader(bytes.NewReader(content))} {
			sh, err := st.Import(context.Background(), "edge.bin", r, ImportOptions{SizeHint: int64(size)})
			if err != nil {
				t.Fatalf("%d bytes: %v", size, err)
			}
			if got, err := os.ReadFile(sh.DataPath()); err != nil || !bytes.Equal(got, content) {
				t.Fatalf("%d bytes: %v, equal=%v", size, err, bytes.Equal(got, content))
			}
			for c := range sh.Manifest().NumChunks() { // the hashes are of these bytes
				_, n := sh.Manifest().ChunkRange(c)
				if err := sh.ReadChunk(c, make([]byte, n)); err != nil {
					t.Fatalf("%d bytes, chunk %d: %v", size, c, err)
				}
			}
			if err := st.Remove(sh.ID()); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestImportFailuresLeaveNothing(t *testing.T) {
	st := openStore(t)
	tests := []struct {
		name string
		r    io.Reader
		opts ImportOptions
		want error
	}{
		{"read error", io.MultiReader(strings.NewReader("partial"), iotest.ErrReader(io.ErrUnexpectedEOF)), ImportOptions{}, io.ErrUnexpectedEOF},
		{"too large", strings.NewReader(strings.Repeat("x", 1000)), ImportOptions{MaxSize: 999}, ErrTooLarge},
		{"bad name", strings.NewReader("x"), ImportOptions{}, ErrBadName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := "f"
			if tt.name == "bad name" {
				name = "../f"
			}
			_, err := st.Import(context.Background(), name, tt.r, tt.opts)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Import = %v, want %v", err, tt.want)
			}
			if n := len(st.List()); n != 0 {
				t.Fatalf("%d shares after a failed import", n)
			}
			if ents, _ := os.ReadDir(filepath.Join(st.Dir(), "tmp")); len(ents) != 0 {
				t.Fatalf("tmp holds %d entries after a failed import", len(ents))
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := st.Import(ctx, "f", strings.NewReader("abc"), ImportOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled import: %v", err)
	}
}

func TestPartialShareResumesAfterCrash(t *testing.T) {
	content := randomBytes(4, 8*MinChunkSize)
	m := mustManifest(t, "f", false, MinChunkSize, map[string]string{"f": string(content)})
	dir := filepath.Join(t.TempDir(), "share")
	sh, err := CreateShare(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	chunk := func(i int) []byte { off, n := m.ChunkRange(i); return content[off : off+n] }

	// A corrupt chunk is refused and not recorded.
	bad := append([]byte(nil), chunk(1)...)
	bad[0] ^= 0xff
	if err := sh.PutChunk(1, bad); !errors.Is(err, ErrBadChunk) {
		t.Fatalf("corrupt chunk: %v", err)
	}
	if sh.HasChunk(1) {
		t.Fatal("corrupt chunk recorded as held")
	}
	if _, err := sh.OpenChunk(1); !errors.Is(err, ErrChunkNotHeld) {
		t.Fatalf("OpenChunk of a missing chunk: %v", err)
	}
	for _, i := range []int{0, 2, 5} {
		if err := sh.PutChunk(i, chunk(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := sh.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{3, 7} { // journaled after the checkpoint
		if err := sh.PutChunk(i, chunk(i)); err != nil {
			t.Fatal(err)
		}
	}
	// "kill -9": no Close. Reopen from disk.
	sh2, err := OpenShare(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := sh2.Have(); got.Count() != 5 || !got.Has(7) || got.Has(1) {
		t.Fatalf("after crash: have %08b, want chunks 0 2 3 5 7", got.Bytes())
	}
	sh2.Close()

	// Data of a chunk journaled after the last checkpoint is re-verified: if
	// it is damaged (a machine crash lost it), it is dropped.
	sh.Close()
	f, err := os.OpenFile(filepath.Join(dir, dataDir, "f"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	sh3, err := OpenShare(dir) // rewrites the journal with 0 2 3 5 7 vouched for
	if err != nil {
		t.Fatal(err)
	}
	if err := sh3.PutChunk(6, chunk(6)); err != nil { // unvouched
		t.Fatal(err)
	}
	off, _ := m.ChunkRange(6)
	f.WriteAt(make([]byte, 10), off)
	f.Close()
	sh4, err := OpenShare(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := sh4.Have(); got.Has(6) || got.Count() != 5 {
		t.Fatalf("damaged unvouched chunk kept: have %08b", got.Bytes())
	}
	// Finish it: the share becomes complete and survives reopening.
	for _, i := range []int{1, 4, 6} {
		if err := sh4.PutChunk(i, chunk(i)); err != nil {
			t.Fatal(err)
		}
	}
	if !sh4.Complete() {
		t.Fatal("all chunks held but not complete")
	}
	if _, err := os.Stat(filepath.Join(dir, haveFile)); !os.IsNotExist(err) {
		t.Fatalf("journal left behind after completion: %v", err)
	}
	sh4.Close()
	sh5, err := OpenShare(dir)
	if err != nil || !sh5.Complete() {
		t.Fatalf("reopened complete share: %v", err)
	}
	defer sh5.Close()
	got, _ := os.ReadFile(sh5.DataPath())
	if !bytes.Equal(got, content) {
		t.Fatal("completed file differs from the original")
	}
	// MoveTo hands the file to its user and removes the share directory.
	dst := filepath.Join(t.TempDir(), "out")
	if err := sh5.MoveTo(dst); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, content) {
		t.Fatal("moved file differs")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatal("share directory left after MoveTo")
	}
}

func TestJournalUnreadableMeansRecheck(t *testing.T) {
	content := randomBytes(5, 4*MinChunkSize)
	m := mustManifest(t, "f", false, MinChunkSize, map[string]string{"f": string(content)})
	dir := filepath.Join(t.TempDir(), "share")
	sh, err := CreateShare(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 3} {
		off, n := m.ChunkRange(i)
		if err := sh.PutChunk(i, content[off:off+n]); err != nil {
			t.Fatal(err)
		}
	}
	sh.Close()
	if err := os.WriteFile(filepath.Join(dir, haveFile), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	sh2, err := OpenShare(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer sh2.Close()
	if got := sh2.Have(); got.Count() != 2 || !got.Has(0) || !got.Has(3) {
		t.Fatalf("recheck found %08b, want chunks 0 and 3", got.Bytes())
	}
}

func TestParseJournal(t *testing.T) {
	rec := func(tag, v uint32) string { return string(encodeRecord(tag, v)) }
	tests := []struct {
		name            string
		raw             string
		trusted, unsure []int
		err             bool
	}{
		{"bad magic", "xxxxxxxx", nil, nil, true},
		{"empty", journalMagic, nil, nil, false},
		{"vouched", journalMagic + rec(1, 2) + rec(1, 0) + rec(2, 2) + rec(1, 1), []int{2, 0}, []int{1}, false},
		{"torn tail", journalMagic + rec(1, 2) + rec(2, 1) + rec(1, 3)[:5], []int{2}, nil, false},
		{"out of range ends it", journalMagic + rec(1, 9) + rec(1, 1), nil, nil, false},
		{"unknown tag ends it", journalMagic + rec(1, 1) + rec(7, 0) + rec(2, 3), nil, []int{1}, false},
		{"checkpoint from the future ignored", journalMagic + rec(1, 1) + rec(2, 5), nil, []int{1}, false},
		{"duplicates", journalMagic + rec(1, 1) + rec(1, 1) + rec(2, 2), []int{1}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			trusted, unsure, err := parseJournal([]byte(tt.raw), 4)
			if (err != nil) != tt.err {
				t.Fatalf("err = %v", err)
			}
			if !equalInts(trusted, tt.trusted) || !equalInts(unsure, tt.unsure) {
				t.Fatalf("trusted %v unsure %v, want %v %v", trusted, unsure, tt.trusted, tt.unsure)
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func FuzzParseJournal(f *testing.F) {
	f.Add([]byte(journalMagic+string(encodeRecord(1, 1))+string(encodeRecord(2, 1))), 4)
	f.Add([]byte("sharehv1"), 0)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		if n < 0 || n > 1<<20 {
			return
		}
		trusted, unsure, err := parseJournal(b, n)
		if err != nil {
			return
		}
		seen := map[int]bool{}
		for _, i := range append(trusted, unsure...) {
			if i < 0 || i >= n || seen[i] {
				t.Fatalf("chunk %d out of range or repeated", i)
			}
			seen[i] = true
		}
	})
}

func TestDirectoryShareAndTar(t *testing.T) {
	files := map[string]string{"a.txt": "hello", "sub/b.txt": strings.Repeat("b", 3*MinChunkSize), "sub/empty": "", "z": "last"}
	src := filepath.Join(t.TempDir(), "tree")
	writeTree(t, src, files)
	os.Mkdir(filepath.Join(src, "emptydir"), 0o750)
	m, err := BuildManifest(context.Background(), src, BuildOptions{ChunkSize: MinChunkSize})
	if err != nil {
		t.Fatal(err)
	}
	st := openStore(t)
	sh, created, err := st.Create(m)
	if err != nil || !created {
		t.Fatalf("Create: %v %v", created, err)
	}
	if _, created, _ := st.Create(m); created {
		t.Fatal("second Create created again")
	}
	if err := sh.WriteTar(io.Discard); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("tar of a partial share: %v", err)
	}
	// Feed it chunk by chunk from the source tree.
	srcTree, err := openTree(filepath.Dir(src), m)
	if err != nil {
		t.Fatal(err)
	}
	defer srcTree.close()
	for i := range m.NumChunks() {
		off, n := m.ChunkRange(i)
		p := make([]byte, n)
		if err := srcTree.readAt(p, off); err != nil {
			t.Fatal(err)
		}
		if err := sh.PutChunk(i, p); err != nil {
			t.Fatal(err)
		}
	}
	if !sh.Complete() {
		t.Fatal("not complete")
	}
	for p, want := range files {
		got, err := os.ReadFile(filepath.Join(sh.DataPath(), p))
		if err != nil || string(got) != want {
			t.Fatalf("%s: %v", p, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(sh.DataPath(), "emptydir")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o750 {
		t.Fatalf("empty dir: %v %v", fi, err)
	}
	var buf bytes.Buffer
	if err := sh.WriteTar(&buf); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	got := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			got[strings.TrimPrefix(h.Name, "tree/")] = string(b)
		}
	}
	if len(got) != len(files) {
		t.Fatalf("tar has %d files, want %d", len(got), len(files))
	}
	for p, want := range files {
		if got[p] != want {
			t.Fatalf("tar %s differs", p)
		}
	}
	if err := st.Remove(sh.ID()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(sh.ID()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removed share still there: %v", err)
	}
	if _, err := os.Stat(sh.Dir()); !os.IsNotExist(err) {
		t.Fatal("removed share's directory still there")
	}
	if err := st.Remove(sh.ID()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second remove: %v", err)
	}
}

func TestOpenStoreCleansTmp(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "tmp", "import-123"), 0o700)
	os.WriteFile(filepath.Join(dir, "tmp", "import-123", "half"), []byte("x"), 0o600)
	st, err := OpenStore(dir, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Fatal("leftovers in tmp survived OpenStore")
	}
}

func TestBitfield(t *testing.T) {
	bf := NewBitfield(10)
	bf.Set(0)
	bf.Set(9)
	if !bf.Has(0) || !bf.Has(9) || bf.Has(5) || bf.Has(10) || bf.Has(-1) || bf.Count() != 2 {
		t.Fatal("Set/Has")
	}
	if got := bf.Bytes(); got[0] != 0x80 || got[1] != 0x40 {
		t.Fatalf("wire form %08b", got)
	}
	back, err := ParseBitfield(10, bf.Bytes())
	if err != nil || back.Count() != 2 {
		t.Fatal(err)
	}
	if _, err := ParseBitfield(10, []byte{0, 1}); err == nil {
		t.Fatal("spare bits accepted")
	}
	if _, err := ParseBitfield(10, []byte{0}); err == nil {
		t.Fatal("short bitfield accepted")
	}
	if full := FullBitfield(10); !full.Full() || full.Count() != 10 {
		t.Fatal("FullBitfield")
	}
}

func FuzzParseBitfield(f *testing.F) {
	f.Add(10, []byte{0x80, 0x40})
	f.Add(0, []byte{})
	f.Fuzz(func(t *testing.T, n int, b []byte) {
		bf, err := ParseBitfield(n, b)
		if err != nil {
			return
		}
		if bf.Count() > n || !bytes.Equal(bf.Bytes(), b) {
			t.Fatal("bitfield round trip")
		}
	})
}

func TestPutChunkRacesCloseAndRemove(t *testing.T) {
	// Chunks are put from many goroutines while the share is closed (a
	// daemon shutting down) and removed: every put either stores its chunk
	// or fails with the share's state, and -race finds no unsynchronized
	// access to that state.
	content := randomBytes(9, 64*MinChunkSize)
	m := mustManifest(t, "f", false, MinChunkSize, map[string]string{"f": string(content)})
	for round := range 20 {
		st := openStore(t)
		sh, _, err := st.Create(m)
		if err != nil {
			t.Fatal(err)
		}
		start := make(chan struct{})
		errs := make(chan error, m.NumChunks())
		for i := range m.NumChunks() {
			go func() {
				<-start
				off, n := m.ChunkRange(i)
				errs <- sh.PutChunk(i, content[off:off+n])
			}()
		}
		close(start)
		if round%2 == 0 {
			sh.Close()
			time.Sleep(time.Millisecond) // puts in flight see a closed share, then a removed one
		}
		if err := st.Remove(m.ID()); err != nil {
			t.Fatal(err)
		}
		for range m.NumChunks() {
			if err := <-errs; err != nil && !errors.Is(err, ErrRemoved) && !errors.Is(err, errClosed) {
				t.Fatalf("round %d: PutChunk during removal: %v, want nil, ErrRemoved or closed", round, err)
			}
		}
	}
}
