package transfer

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// shareFromTree builds the manifest of the tree at src and stores it in st
// as a complete share, fed chunk by chunk from src.
func shareFromTree(t testing.TB, st *Store, src string, cs int64) *Share {
	t.Helper()
	m, err := BuildManifest(context.Background(), src, BuildOptions{ChunkSize: cs})
	if err != nil {
		t.Fatal(err)
	}
	sh, _, err := st.Create(m)
	if err != nil {
		t.Fatal(err)
	}
	feed(t, sh, filepath.Dir(src))
	return sh
}

// feed puts every chunk of sh, read from the share's files under dir.
func feed(t testing.TB, sh *Share, dir string) {
	t.Helper()
	m := sh.Manifest()
	srcTree, err := openTree(dir, m)
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
}

// TestTopDirMode: the top directory of a received tree gets the mode the
// manifest records for it, as every subdirectory does, and the tar says the
// same; a manifest from before the top mode was recorded means 0755.
func TestTopDirMode(t *testing.T) {
	for _, mode := range []fs.FileMode{0o750, 0o700, 0o755, 0o555, 0o777} {
		src := filepath.Join(t.TempDir(), "top")
		writeTree(t, src, map[string]string{"sub/f": "x"})
		os.Chmod(filepath.Join(src, "sub"), 0o711)
		os.Chmod(src, mode)
		st := openStore(t)
		sh := shareFromTree(t, st, src, MinChunkSize)
		os.Chmod(src, 0o755) // so TempDir's cleanup can remove it
		want := mode&modeMask | 0o700
		if got := sh.Manifest().Mode(); got != mode {
			t.Fatalf("manifest records %#o, want %#o", got, mode)
		}
		if !strings.Contains(string(sh.Manifest().Bytes()), `"type":"dir","mode":`) {
			t.Fatalf("manifest does not record the top mode: %s", sh.Manifest().Bytes())
		}
		for dir, want := range map[string]fs.FileMode{"": want, "sub": 0o711 | 0o700} {
			fi, err := os.Stat(filepath.Join(sh.DataPath(), dir))
			if err != nil || fi.Mode().Perm() != want {
				t.Errorf("source %#o: received %q is %v, want %#o", mode, dir, fi.Mode().Perm(), want)
			}
		}
		var buf bytes.Buffer
		if err := sh.WriteTar(&buf); err != nil {
			t.Fatal(err)
		}
		h, err := tar.NewReader(&buf).Next()
		if err != nil || h.Name != "top/" || fs.FileMode(h.Mode) != want {
			t.Errorf("source %#o: tar's first entry %q mode %#o, want top/ %#o", mode, h.Name, h.Mode, want)
		}
	}
	// A manifest without "mode" (made before it was recorded): 0755.
	m, err := NewManifest("old", true, MinChunkSize, []File{{Path: "f", Size: 1, Mode: 0o644}}, nil, []Hash{HashChunk([]byte("x"))})
	if err != nil {
		t.Fatal(err)
	}
	if m.Mode() != 0o755 || strings.Contains(string(m.Bytes()), `"mode":493,"chunk_size"`) {
		t.Fatalf("legacy manifest: mode %#o, %s", m.Mode(), m.Bytes())
	}
	// A file share has no top mode; a mode beyond permission bits is refused.
	for _, raw := range []string{
		`{"version":1,"name":"f","type":"file","mode":420,"chunk_size":65536,"chunk_hash":"blake3","size":0,"files":[{"path":"f","size":0,"mode":420}],"chunks":[]}`,
		`{"version":1,"name":"d","type":"dir","mode":2541,"chunk_size":65536,"chunk_hash":"blake3","size":0,"files":[],"chunks":[]}`,
	} {
		if _, err := DecodeManifest([]byte(raw)); err == nil {
			t.Errorf("accepted %s", raw)
		}
	}
}

// longTree writes a tree whose names reach the limits: a 255-byte name of
// CJK characters (85 of 3 bytes), a path of several such elements, and a
// name with spaces and quotes; it returns its files.
func longTree(t testing.TB, dir string) map[string]string {
	cjk := strings.Repeat("漢", 85)
	files := map[string]string{
		cjk:                                "long name",
		"a/" + cjk + "/" + cjk + "/" + cjk: strings.Repeat("deep ", 1000),
		`with "quotes" and spaces.txt`:     "q",
		"empty":                            "",
		strings.Repeat("b", 255):           string(randomBytes(1, 3*MinChunkSize+17)),
	}
	writeTree(t, dir, files)
	return files
}

// TestTarReader checks the tar stream against archive/tar, against GNU tar
// extracting it, and its seeks and reads against the whole stream.
func TestTarReader(t *testing.T) {
	src := filepath.Join(t.TempDir(), "tree")
	files := longTree(t, src)
	os.Mkdir(filepath.Join(src, "emptydir"), 0o750)
	st := openStore(t)
	sh := shareFromTree(t, st, src, MinChunkSize)
	r, err := sh.OpenTar()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var whole bytes.Buffer
	if n, err := r.WriteTo(&whole); err != nil || n != r.Size() || int64(whole.Len()) != r.Size() {
		t.Fatalf("WriteTo: %d of %d bytes, %v", n, r.Size(), err)
	}
	// archive/tar's Writer, given the same headers and contents, writes the
	// same bytes: the layout (pax headers, padding, end blocks) is right.
	var ref bytes.Buffer
	tw := tar.NewWriter(&ref)
	for k := range r.ents {
		h := r.header(k)
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			b, err := os.ReadFile(filepath.Join(filepath.Dir(sh.DataPath()), h.Name))
			if err != nil {
				t.Fatal(err)
			}
			tw.Write(b)
		}
	}
	tw.Close()
	if !bytes.Equal(ref.Bytes(), whole.Bytes()) {
		t.Fatalf("stream differs from archive/tar's (%d and %d bytes)", whole.Len(), ref.Len())
	}
	// archive/tar reads it back: every file, in path order, parents first.
	tr := tar.NewReader(bytes.NewReader(whole.Bytes()))
	got := map[string]string{}
	seen := map[string]bool{}
	prev := ""
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name < prev {
			t.Fatalf("%q after %q", h.Name, prev)
		}
		prev = h.Name
		if parent := filepath.Dir(strings.TrimSuffix(h.Name, "/")); parent != "." && !seen[parent] {
			t.Fatalf("%q before its parent", h.Name)
		}
		seen[strings.TrimSuffix(h.Name, "/")] = true
		if h.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			got[strings.TrimPrefix(h.Name, "tree/")] = string(b)
		}
	}
	for p, want := range files {
		if got[p] != want {
			t.Fatalf("tar %q: %d bytes, want %d", p, len(got[p]), len(want))
		}
	}
	// Read and WriteTo from anywhere give the stream's bytes.
	rnd := rand.New(rand.NewPCG(1, 2))
	offsets := []int64{0, 1, 511, 512, 513, r.Size() - 1025, r.Size() - 1024, r.Size() - 1, r.Size()}
	for range 200 {
		offsets = append(offsets, rnd.Int64N(r.Size()+1))
	}
	for _, off := range offsets {
		if _, err := r.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		n := rnd.IntN(5000)
		p := make([]byte, n)
		m, err := io.ReadFull(r, p)
		want := whole.Bytes()[off:min(off+int64(n), r.Size())]
		if !bytes.Equal(p[:m], want) || (m < n && err == nil) {
			t.Fatalf("read %d at %d: got %d bytes (%v), differ: %v", n, off, m, err, !bytes.Equal(p[:m], want))
		}
		if r.Remaining() != r.Size()-min(off+int64(m), r.Size()) {
			t.Fatalf("Remaining %d after reading to %d of %d", r.Remaining(), off+int64(m), r.Size())
		}
		var rest bytes.Buffer
		if _, err := r.WriteTo(&rest); err != nil || !bytes.Equal(rest.Bytes(), whole.Bytes()[off+int64(m):]) {
			t.Fatalf("WriteTo from %d: %v", off+int64(m), err)
		}
	}
	if end, _ := r.Seek(0, io.SeekEnd); end != r.Size() {
		t.Fatalf("SeekEnd: %d", end)
	}
	// GNU tar extracts the same tree, long names and all.
	gnutar, err := exec.LookPath("tar")
	if err != nil {
		t.Skip("no tar installed")
	}
	out := t.TempDir()
	cmd := exec.Command(gnutar, "-x", "-C", out)
	cmd.Stdin = bytes.NewReader(whole.Bytes())
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tar -x: %v\n%s", err, b)
	}
	for p, want := range files {
		b, err := os.ReadFile(filepath.Join(out, "tree", p))
		if err != nil || string(b) != want {
			t.Fatalf("GNU tar extracted %q: %v", p, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(out, "tree", "emptydir")); err != nil || fi.Mode().Perm() != 0o750 {
		t.Fatalf("emptydir: %v", err)
	}
}

// TestTarBytesAreStable pins the tar stream of a fixed share: the server
// serves it with a strong ETag made of the share's ID and creation time, so
// the bytes may depend on nothing else (not on the Go version either). If
// this fails, the encoding changed: change the ETag's form too (server's
// tarETag), so no client resumes across the change.
func TestTarBytesAreStable(t *testing.T) {
	src := filepath.Join(t.TempDir(), "stable")
	writeTree(t, src, map[string]string{"a.txt": "hello\n", "sub/" + strings.Repeat("長", 60): "x", "sub/z": ""})
	for _, p := range []string{src, filepath.Join(src, "sub")} {
		os.Chmod(p, 0o755) // whatever the umask
	}
	for _, p := range []string{"a.txt", "sub/" + strings.Repeat("長", 60), "sub/z"} {
		os.Chmod(filepath.Join(src, p), 0o644)
	}
	st := openStore(t)
	sh := shareFromTree(t, st, src, MinChunkSize)
	r, err := newTarReader(sh.tree, time.Unix(1700000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h := sha256.New()
	if _, err := r.WriteTo(h); err != nil {
		t.Fatal(err)
	}
	const want = "4f1384c8a16fb9b7ecad4b52c979a08bde392ee137c52331a7b5ff04d2eaff71"
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		t.Fatalf("tar stream of a fixed share hashes to %s, want %s (size %d)", got, want, r.Size())
	}
}

// TestChunkReaderSeeks: a chunk reader (OpenChunk) is an io.ReadSeeker over
// the chunk, also across file boundaries, and WriteTo writes what remains.
func TestChunkReaderSeeks(t *testing.T) {
	src := filepath.Join(t.TempDir(), "tree")
	writeTree(t, src, map[string]string{"a": "0123456789", "b": "", "c": string(randomBytes(3, MinChunkSize+100))})
	st := openStore(t)
	sh := shareFromTree(t, st, src, MinChunkSize)
	stream := append([]byte("0123456789"), randomBytes(3, MinChunkSize+100)...)
	rnd := rand.New(rand.NewPCG(3, 4))
	for i := range sh.Manifest().NumChunks() {
		off, n := sh.Manifest().ChunkRange(i)
		chunk := stream[off : off+n]
		rc, err := sh.OpenChunk(i)
		if err != nil {
			t.Fatal(err)
		}
		rs := rc.(interface {
			io.ReadSeeker
			io.WriterTo
			Remaining() int64
		})
		for range 50 {
			at := rnd.Int64N(n + 1)
			if _, err := rs.Seek(at, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			p := make([]byte, rnd.IntN(200))
			m, _ := io.ReadFull(rs, p)
			if !bytes.Equal(p[:m], chunk[at:min(at+int64(len(p)), n)]) {
				t.Fatalf("chunk %d: read at %d differs", i, at)
			}
			if rs.Remaining() != n-at-int64(m) {
				t.Fatalf("chunk %d: Remaining %d, want %d", i, rs.Remaining(), n-at-int64(m))
			}
			var rest bytes.Buffer
			if _, err := rs.WriteTo(&rest); err != nil || !bytes.Equal(rest.Bytes(), chunk[at+int64(m):]) {
				t.Fatalf("chunk %d: WriteTo from %d: %v", i, at+int64(m), err)
			}
		}
		rc.Close()
	}
}
