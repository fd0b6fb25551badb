package transfer

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func TestBuildManifestDeterministic(t *testing.T) {
	files := map[string]string{
		"a.txt":       strings.Repeat("a", 40000),
		"b/c.txt":     strings.Repeat("c", 10),
		"b/empty":     "",
		"b-side.txt":  "sorts between b and b/",
		"z/y/x/w.bin": string(randomBytes(1, 70000)),
	}
	m1 := mustManifest(t, "tree", true, MinChunkSize, files)
	m2 := mustManifest(t, "tree", true, MinChunkSize, files)
	if m1.ID() != m2.ID() {
		t.Fatalf("same content, different IDs: %s vs %s", m1.ID(), m2.ID())
	}
	if string(m1.Bytes()) != string(m2.Bytes()) {
		t.Fatal("same content, different manifest bytes")
	}
	// Files come in byte order of their paths: "b-side.txt" < "b/c.txt".
	var paths []string
	for _, f := range m1.Files() {
		paths = append(paths, f.Path)
	}
	if want := sortedKeys(files); strings.Join(paths, ",") != strings.Join(want, ",") {
		t.Fatalf("files %v, want %v", paths, want)
	}
	var total int64
	for _, c := range files {
		total += int64(len(c))
	}
	if m1.Size() != total {
		t.Fatalf("size %d, want %d", m1.Size(), total)
	}
	if want := int((total + MinChunkSize - 1) / MinChunkSize); m1.NumChunks() != want {
		t.Fatalf("%d chunks, want %d", m1.NumChunks(), want)
	}

	// Changing one byte, a name, the chunk size or a mode changes the ID.
	files2 := map[string]string{}
	for k, v := range files {
		files2[k] = v
	}
	files2["b/c.txt"] = strings.Repeat("c", 9) + "d"
	if mustManifest(t, "tree", true, MinChunkSize, files2).ID() == m1.ID() {
		t.Fatal("content change kept the ID")
	}
	if mustManifest(t, "tree2", true, MinChunkSize, files).ID() == m1.ID() {
		t.Fatal("name change kept the ID")
	}
	if mustManifest(t, "tree", true, 2*MinChunkSize, files).ID() == m1.ID() {
		t.Fatal("chunk size change kept the ID")
	}
}

func TestManifestIDIsStable(t *testing.T) {
	// A fixed input must keep its ID across versions of this code: IDs are
	// announced and stored, so the encoding may never drift silently.
	m, err := NewManifest("hello.txt", false, DefaultChunkSize,
		[]File{{Path: "hello.txt", Size: 6, Mode: 0o644}}, nil, []Hash{HashChunk([]byte("hello\n"))})
	if err != nil {
		t.Fatal(err)
	}
	const wantJSON = `{"version":1,"name":"hello.txt","type":"file","chunk_size":1048576,"chunk_hash":"blake3","size":6,"files":[{"path":"hello.txt","size":6,"mode":420}],"chunks":["` //
	if !strings.HasPrefix(string(m.Bytes()), wantJSON) {
		t.Fatalf("encoding changed:\n%s", m.Bytes())
	}
	id, err := ParseID(m.ID().String())
	if err != nil || id != m.ID() {
		t.Fatalf("ParseID(String()) = %v, %v", id, err)
	}
	if !strings.HasPrefix(m.ID().String(), "b") {
		t.Fatalf("ID %s is not base32", m.ID())
	}
}

func TestSegments(t *testing.T) {
	m, err := NewManifest("d", true, MinChunkSize, []File{
		{Path: "a", Size: 10}, {Path: "b", Size: 0}, {Path: "c", Size: 2*MinChunkSize + 5}, {Path: "d", Size: 7},
	}, nil, make([]Hash, 3))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		off, n int64
		want   []segment
	}{
		{0, MinChunkSize, []segment{{0, 0, 10}, {2, 0, MinChunkSize - 10}}},
		{MinChunkSize, MinChunkSize, []segment{{2, MinChunkSize - 10, MinChunkSize}}},
		{2 * MinChunkSize, 22, []segment{{2, 2*MinChunkSize - 10, 15}, {3, 0, 7}}},
	}
	for _, tt := range tests {
		got := m.segments(tt.off, tt.n)
		if len(got) != len(tt.want) {
			t.Fatalf("segments(%d,%d) = %v, want %v", tt.off, tt.n, got, tt.want)
		}
		for k := range got {
			if got[k] != tt.want[k] {
				t.Fatalf("segments(%d,%d) = %v, want %v", tt.off, tt.n, got, tt.want)
			}
		}
	}
}

func TestDecodeManifestRejects(t *testing.T) {
	good, err := NewManifest("d", true, MinChunkSize, []File{{Path: "a", Size: 5, Mode: 0o644}, {Path: "s/b", Size: 1, Mode: 0o600}},
		[]Dir{{Path: "s", Mode: 0o755}}, []Hash{{0xab}})
	if err != nil {
		t.Fatal(err)
	}
	base := string(good.Bytes())
	h := Hash{0xab}.String()
	tests := []struct {
		name, raw string
	}{
		{"empty", ""},
		{"not json", "hello"},
		{"trailing", base + " {}"},
		{"whitespace", " " + base},
		{"unknown field", strings.Replace(base, `"version":1,`, `"version":1,"x":2,`, 1)},
		{"version", strings.Replace(base, `"version":1`, `"version":2`, 1)},
		{"hash alg", strings.Replace(base, `"blake3"`, `"sha256"`, 1)},
		{"type", strings.Replace(base, `"type":"dir"`, `"type":"link"`, 1)},
		{"chunk size small", strings.Replace(base, `"chunk_size":16384`, `"chunk_size":1`, 1)},
		{"size mismatch", strings.Replace(base, `"size":6`, `"size":7`, 1)},
		{"traversal", strings.Replace(base, `"path":"a"`, `"path":"../a"`, 1)},
		{"absolute", strings.Replace(base, `"path":"a"`, `"path":"/a"`, 1)},
		{"backslash", strings.Replace(base, `"path":"a"`, `"path":"..\\\\a"`, 1)},
		{"nul", strings.Replace(base, `"path":"a"`, `"path":"a\u0000"`, 1)},
		{"unsorted", strings.Replace(base, `"path":"a"`, `"path":"t"`, 1)},
		{"file under file", strings.Replace(strings.Replace(base, `"path":"s/b"`, `"path":"a/b"`, 1), `"path":"s","mode":493`, `"path":"b","mode":493`, 1)},
		{"dir is file", strings.Replace(base, `"path":"s","mode":493`, `"path":"a","mode":493`, 1)},
		{"setuid", strings.Replace(base, `"mode":420`, `"mode":2468`, 1)},
		{"negative size", strings.Replace(base, `"size":5`, `"size":-5`, 1)},
		{"chunk count", strings.Replace(base, `"chunks":["`+h+`"]`, `"chunks":["`+h+`","`+h+`"]`, 1)},
		{"bad hex", strings.Replace(base, h, strings.Repeat("zz", 32), 1)},
		{"upper hex", strings.Replace(base, h, strings.ToUpper(h), 1)},
		{"null chunks", strings.Replace(base, `"chunks":["`+h+`"]`, `"chunks":null`, 1)},
		{"bad name", strings.Replace(base, `"name":"d"`, `"name":".."`, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.raw == base {
				t.Fatal("test case did not change the manifest")
			}
			if _, err := DecodeManifest([]byte(tt.raw)); !errors.Is(err, ErrBadManifest) {
				t.Fatalf("DecodeManifest = %v, want ErrBadManifest", err)
			}
		})
	}
	if _, err := DecodeManifest(good.Bytes()); err != nil {
		t.Fatalf("good manifest rejected: %v", err)
	}
}

func TestFileShareManifest(t *testing.T) {
	_, err := NewManifest("f", false, MinChunkSize, []File{{Path: "g", Size: 0}}, nil, nil)
	if !errors.Is(err, ErrBadManifest) {
		t.Fatalf("file share whose file is not named as the share: %v", err)
	}
	m, err := NewManifest("f", false, MinChunkSize, []File{{Path: "f", Size: 0}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.NumChunks() != 0 || m.Size() != 0 {
		t.Fatalf("empty file: %d chunks, %d bytes", m.NumChunks(), m.Size())
	}
}

func TestVerifyManifestAndChunk(t *testing.T) {
	m := mustManifest(t, "f", false, MinChunkSize, map[string]string{"f": string(randomBytes(2, 3*MinChunkSize+1))})
	other := mustManifest(t, "g", false, MinChunkSize, map[string]string{"g": "x"})
	if _, err := VerifyManifest(m.ID(), m.Bytes()); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyManifest(other.ID(), m.Bytes()); !errors.Is(err, ErrBadManifest) {
		t.Fatalf("manifest accepted for the wrong ID: %v", err)
	}
	data := randomBytes(2, 3*MinChunkSize+1)
	if err := m.VerifyChunk(3, data[3*MinChunkSize:]); err != nil {
		t.Fatalf("last chunk: %v", err)
	}
	bad := append([]byte(nil), data[:MinChunkSize]...)
	bad[100] ^= 1
	err := m.VerifyChunk(0, bad)
	var ce *ChunkError
	if !errors.As(err, &ce) || ce.Index != 0 || !errors.Is(err, ErrBadChunk) {
		t.Fatalf("corrupt chunk: %v", err)
	}
	if err := m.VerifyChunk(1, data[:MinChunkSize]); err == nil {
		t.Fatal("chunk 0's bytes accepted as chunk 1")
	}
	if err := m.VerifyChunk(4, nil); !errors.Is(err, ErrChunkRange) {
		t.Fatalf("index out of range: %v", err)
	}
}

func TestBuildManifestSkipsSymlinksAndDetectsChanges(t *testing.T) {
	root := filepath.Join(t.TempDir(), "d")
	writeTree(t, root, map[string]string{"a": "aaa"})
	if err := os.Symlink("/etc/passwd", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	var skipped []string
	m, err := BuildManifest(context.Background(), root, BuildOptions{Skipped: func(p string, _ os.FileMode) { skipped = append(skipped, filepath.Base(p)) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Files()) != 1 || len(skipped) != 1 || skipped[0] != "link" {
		t.Fatalf("files %v, skipped %v", m.Files(), skipped)
	}
	if err := hashFile(context.Background(), filepath.Join(root, "a"), 10, newChunker(MinChunkSize), make([]byte, 4), func(int64) {}); err == nil {
		t.Fatal("a file shorter than listed was hashed without error")
	}
	if err := hashFile(context.Background(), filepath.Join(root, "a"), 2, newChunker(MinChunkSize), make([]byte, 4), func(int64) {}); err == nil {
		t.Fatal("a file longer than listed was hashed without error")
	}
}

// What the user names is what gets shared, or an error that says why not:
// a symbolic link named as the top is followed (cp -r, tar -h, rsync -L),
// through chains; dangling links, loops, links to special files and
// directories with nothing shareable left are errors; an empty directory is
// shared empty.
func TestBuildManifestNamedPath(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, filepath.Join(dir, "real"), map[string]string{"f": "data\n", "sub/g": "gg"})
	for _, d := range []string{"empty", "emptytree/a/b", "onlylinks", "onlyspecial", "mixed"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeTree(t, filepath.Join(dir, "mixed"), map[string]string{"kept": "k"})
	links := [][2]string{
		{"real", "linkdir"},
		{"real/f", "linkfile"},
		{"linkdir", "link2"}, // a link to a link
		{filepath.Join(dir, "real"), "abslink"},
		{"nothere", "dangling"},
		{"dangling", "danglingchain"},
		{"loopb", "loopa"},
		{"loopa", "loopb"},
		{"self", "self"},
		{"fifo", "linkfifo"},
		{"/dev/null", "linknull"},
		{"../real", "onlylinks/l1"},
		{"../real/f", "onlylinks/l2"},
		{"../real", "mixed/l"},
	}
	for _, l := range links {
		if err := os.Symlink(l[0], filepath.Join(dir, l[1])); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"fifo", "onlyspecial/pipe"} {
		if err := syscall.Mkfifo(filepath.Join(dir, f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	realDir, err := BuildManifest(ctx, filepath.Join(dir, "real"), BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	realFile, err := BuildManifest(ctx, filepath.Join(dir, "real", "f"), BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		path    string
		like    *Manifest // same files and chunks as this one, under the name of path
		files   int       // else: how many files, dirs and skipped entries
		dirs    int
		skipped []string
		err     string // else: the error says this
	}{
		{path: "linkdir", like: realDir},
		{path: "linkdir/", like: realDir},
		{path: "linkfile", like: realFile},
		{path: "link2", like: realDir},
		{path: "abslink", like: realDir},
		{path: "empty"},
		{path: "emptytree", dirs: 2},
		{path: "mixed", files: 1, skipped: []string{"mixed/l"}},
		{path: "dangling", err: "dangling -> nothere: a dangling symbolic link: nothere does not exist"},
		{path: "danglingchain", err: "danglingchain -> dangling -> nothere: a dangling symbolic link"},
		{path: "loopa", err: "loopa -> loopb -> loopa: a loop of symbolic links"},
		{path: "self", err: "self -> self: a loop of symbolic links"},
		{path: "linkfifo", err: "linkfifo -> fifo: a named pipe (FIFO): share shares regular files and directories only"},
		{path: "linknull", err: "linknull -> /dev/null: a character device"},
		{path: "fifo", err: "fifo: a named pipe (FIFO)"},
		{path: "onlylinks", err: "onlylinks: nothing to share: it holds no regular file, and its 2 other entries are symbolic links or special files"},
		{path: "onlyspecial", err: "its 1 other entry is a symbolic link or special file, which share skips"},
		{path: "missing", err: "no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			var skipped []string
			m, err := BuildManifest(ctx, filepath.Join(dir, tt.path), BuildOptions{Skipped: func(p string, _ os.FileMode) {
				rel, _ := filepath.Rel(dir, p)
				skipped = append(skipped, filepath.ToSlash(rel))
			}})
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one saying %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Base(filepath.Clean(tt.path)); m.Name() != want {
				t.Errorf("name %q, want %q (the name given)", m.Name(), want)
			}
			if tt.like != nil {
				if m.IsDir() != tt.like.IsDir() || !slices.Equal(m.Dirs(), tt.like.Dirs()) || m.NumChunks() != tt.like.NumChunks() || m.Size() != tt.like.Size() {
					t.Fatalf("got %d files, %d dirs, %d bytes; want those of %s", len(m.Files()), len(m.Dirs()), m.Size(), tt.like.Name())
				}
				for k, f := range m.Files() {
					if want := tt.like.Files()[k]; f.Size != want.Size || f.Mode != want.Mode || (m.IsDir() && f.Path != want.Path) {
						t.Errorf("file %d: %+v, want %+v", k, f, want)
					}
				}
				for i := range m.NumChunks() {
					if m.ChunkHash(i) != tt.like.ChunkHash(i) {
						t.Errorf("chunk %d differs", i)
					}
				}
				return
			}
			if !m.IsDir() || len(m.Files()) != tt.files || len(m.Dirs()) != tt.dirs || !slices.Equal(skipped, tt.skipped) {
				t.Fatalf("dir %v, %d files, %d dirs, skipped %q; want %d files, %d dirs, skipped %q",
					m.IsDir(), len(m.Files()), len(m.Dirs()), skipped, tt.files, tt.dirs, tt.skipped)
			}
		})
	}

	// The link's chunks are read through it for upload too.
	l, err := OpenLocal(filepath.Join(dir, "linkdir"), mustBuild(t, filepath.Join(dir, "linkdir")))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p := make([]byte, realDir.ChunkLen(0))
	if err := l.ReadChunk(0, p); err != nil || HashChunk(p) != realDir.ChunkHash(0) {
		t.Fatalf("reading a chunk through the link: %v", err)
	}
}

func mustBuild(t *testing.T, path string) *Manifest {
	t.Helper()
	m, err := BuildManifest(context.Background(), path, BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestParseID(t *testing.T) {
	m := mustManifest(t, "f", false, MinChunkSize, map[string]string{"f": "x"})
	good := m.ID().String()
	// Every error says why the text is not a share ID, in words (never the
	// CID library's), and what one looks like.
	const looks = `a share ID is "bagaaihra" and then 52 letters a-z and digits 2-7, as 'share put' and 'share ls' print it`
	for _, tt := range []struct{ in, why string }{
		{"", "empty"},
		{"x", `"x": not a share ID`},
		{"bagaaihra123", `"bagaaihra123": cut short, 12 of 61 characters (copy it whole)`},
		{good[:40], "cut short, 40 of 61 characters"},
		{good[:60], "cut short, 60 of 61 characters"},
		{good + "a", "62 characters, 1 too many"},
		{good[:20] + "1" + good[21:], `'1' at position 21 cannot be in a share ID (mistyped?)`},
		{good[:20] + "é" + good[22:], `'é' at position 21 cannot be in a share ID`},
		{"bafkqaaa", "a content ID of another kind (of IPFS?), not of a share"},
		{"QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", "a content ID of another kind"},
		{strings.Repeat("b", 200), "too long"},
		{"a\x1b[31mb", `"a?[31mb": not a share ID`},
	} {
		_, err := ParseID(tt.in)
		if !errors.Is(err, ErrBadID) || !strings.Contains(err.Error(), tt.why) || !strings.HasSuffix(err.Error(), looks) || strings.Contains(err.Error(), "cid") {
			t.Errorf("ParseID(%q) = %v\nwant ErrBadID saying %q and %q", tt.in, err, tt.why, looks)
		}
	}
	if id, err := ParseID(strings.ToUpper(good)); err != nil || id != m.ID() {
		t.Errorf("the base32 upper-case form (multibase B) of an ID: %v", err)
	}
	var id ID
	if err := id.UnmarshalText([]byte(m.ID().String())); err != nil || id != m.ID() {
		t.Fatalf("UnmarshalText: %v", err)
	}
	seen := map[ID]bool{m.ID(): true}
	if !seen[id] {
		t.Fatal("ID does not work as a map key")
	}
	if c := m.ID().CID(); c.String() != m.ID().String() {
		t.Fatal("CID and ID strings differ")
	}
}

func FuzzDecodeManifest(f *testing.F) {
	m, _ := NewManifest("d", true, MinChunkSize, []File{{Path: "a", Size: 5, Mode: 0o644}, {Path: "s/b", Size: 1, Mode: 0o600}},
		[]Dir{{Path: "s", Mode: 0o755}, {Path: ".", Mode: 0o750}}, []Hash{{1}})
	f.Add(m.Bytes())
	m2, _ := NewManifest("f", false, MinChunkSize, []File{{Path: "f", Size: 0}}, nil, nil)
	f.Add(m2.Bytes())
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := DecodeManifest(raw)
		if err != nil {
			return
		}
		// Whatever decodes is canonical, consistent and safe to lay out.
		if string(m.Bytes()) != string(raw) {
			t.Fatal("decoded manifest's bytes differ from input")
		}
		var total int64
		for _, f := range m.Files() {
			if m.IsDir() {
				if ValidPath(f.Path) != nil {
					t.Fatalf("unsafe path %q accepted", f.Path)
				}
			}
			total += f.Size
		}
		if total != m.Size() {
			t.Fatal("size does not add up")
		}
		for i := range m.NumChunks() {
			off, n := m.ChunkRange(i)
			if n <= 0 || n > m.ChunkSize() {
				t.Fatalf("chunk %d has %d bytes", i, n)
			}
			var sum int64
			for _, s := range m.segments(off, n) {
				sum += s.n
			}
			if sum != n {
				t.Fatalf("chunk %d: segments cover %d of %d bytes", i, sum, n)
			}
		}
	})
}

func FuzzParseID(f *testing.F) {
	m, _ := NewManifest("f", false, MinChunkSize, []File{{Path: "f", Size: 0}}, nil, nil)
	f.Add(m.ID().String())
	f.Add("bafkqaaa")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err != nil {
			return
		}
		again, err := ParseID(id.String())
		if err != nil || again != id {
			t.Fatalf("round trip of %q failed: %v", s, err)
		}
	})
}

func TestChunkSizeFor(t *testing.T) {
	for _, tc := range []struct {
		size, want int64
	}{
		{0, MinChunkSize},
		{1, MinChunkSize},
		{1 << 20, MinChunkSize},
		{4 << 20, 64 << 10},
		{16<<20 - 1, 128 << 10},
		{16 << 20, 256 << 10},
		{32 << 20, 256 << 10},
		{64<<20 - 1, 256 << 10},
		{64 << 20, 512 << 10},
		{128<<20 - 1, 512 << 10},
		{128 << 20, DefaultChunkSize},
		{1 << 30, DefaultChunkSize},
		{MaxShareSize, DefaultChunkSize},
	} {
		got := ChunkSizeFor(tc.size)
		if got != tc.want {
			t.Errorf("ChunkSizeFor(%d) = %d, want %d", tc.size, got, tc.want)
		}
		if tc.size >= MinChunks*MinChunkSize && tc.size/got < MinChunks {
			t.Errorf("ChunkSizeFor(%d) = %d: %d chunks, fewer than %d", tc.size, got, tc.size/got, MinChunks)
		}
	}
}

// The default chunk size depends on the content's size alone: a file built
// into a manifest, and the same bytes imported with or without a size hint
// (right or wrong), get the same ID; an explicit chunk size another.
func TestDefaultChunkSizeGivesOneID(t *testing.T) {
	content := randomBytes(5, 3<<20+123)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"f.bin": string(content)})
	built, err := BuildManifest(context.Background(), filepath.Join(dir, "f.bin"), BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if built.ChunkSize() != ChunkSizeFor(int64(len(content))) {
		t.Fatalf("built with %d-byte chunks, want %d", built.ChunkSize(), ChunkSizeFor(int64(len(content))))
	}
	for _, tc := range []struct {
		name string
		opts ImportOptions
		same bool
	}{
		{"no hint", ImportOptions{}, true},
		{"right hint", ImportOptions{SizeHint: int64(len(content))}, true},
		{"hint too large", ImportOptions{SizeHint: 1 << 30}, true},
		{"hint too small", ImportOptions{SizeHint: 10}, true},
		{"explicit chunk size", ImportOptions{ChunkSize: DefaultChunkSize}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := openStore(t)
			sh, err := st.Import(context.Background(), "f.bin", bytes.NewReader(content), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if (sh.ID() == built.ID()) != tc.same {
				t.Fatalf("ID %s, built %s (chunks %d and %d)", sh.ID(), built.ID(), sh.Manifest().ChunkSize(), built.ChunkSize())
			}
			got, err := os.ReadFile(sh.DataPath())
			if err != nil || !bytes.Equal(got, content) {
				t.Fatalf("stored bytes differ (%v)", err)
			}
		})
	}
}
