package transfer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func openUploads(t testing.TB, st *Store, opts UploadsOptions) *Uploads {
	t.Helper()
	u, err := OpenUploads(st, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

// specOf declares the tree at root (as BuildManifest reads it).
func specOf(t testing.TB, root string, chunkSize int64) (UploadSpec, []byte) {
	t.Helper()
	m, err := BuildManifest(context.Background(), root, BuildOptions{ChunkSize: chunkSize})
	if err != nil {
		t.Fatal(err)
	}
	var stream bytes.Buffer
	for k, f := range m.Files() {
		p := root
		if m.IsDir() {
			p = filepath.Join(root, filepath.FromSlash(f.Path))
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		_ = k
		stream.Write(b)
	}
	dirs := m.Dirs()
	if m.IsDir() {
		dirs = append(slices.Clone(dirs), Dir{Path: ".", Mode: m.Mode()})
	}
	return UploadSpec{Name: m.Name(), Dir: m.IsDir(), ChunkSize: chunkSize, Files: m.Files(), Dirs: dirs, Key: "k-" + m.Name()}, stream.Bytes()
}

// sendChunks writes chunks idx of stream to up, in batches of up to batch
// consecutive chunks where idx is consecutive.
func sendChunks(t testing.TB, up *Upload, stream []byte, idx []int) {
	t.Helper()
	l := up.Layout()
	for _, i := range idx {
		off, n := l.ChunkRange(i)
		k, err := up.Write(context.Background(), i, bytes.NewReader(stream[off:off+n]))
		if err != nil || k != 1 {
			t.Fatalf("write chunk %d: stored %d, %v", i, k, err)
		}
	}
}

// TestUploadSameIDAsPut: a session fed the chunks in any order, in single
// chunks or runs, commits to the share `share put` makes of the same tree.
func TestUploadSameIDAsPut(t *testing.T) {
	const cs = MinChunkSize
	big := string(randomBytes(1, 5*cs+123))
	tests := []struct {
		name  string
		dir   bool
		files map[string]string
	}{
		{"one.bin", false, map[string]string{"one.bin": big}},
		{"small.txt", false, map[string]string{"small.txt": "hello"}},
		{"empty.txt", false, map[string]string{"empty.txt": ""}},
		{"tree", true, map[string]string{
			"a/b.bin": string(randomBytes(2, cs+7)), "a/empty": "", "c.bin": string(randomBytes(3, 3*cs-5)),
			"d/e/f.txt": "x", "z": string(randomBytes(4, cs)),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := openStore(t)
			u := openUploads(t, st, UploadsOptions{})
			root := filepath.Join(t.TempDir(), tc.name)
			if tc.dir {
				writeTree(t, root, tc.files)
				os.MkdirAll(filepath.Join(root, "emptydir"), 0o750)
				os.Chmod(root, 0o750) // the top directory's mode is in the manifest too
			} else {
				writeTree(t, filepath.Dir(root), tc.files)
			}
			want, _ := BuildManifest(context.Background(), root, BuildOptions{ChunkSize: cs})
			spec, stream := specOf(t, root, cs)
			up, resumed, err := u.Create(spec)
			if err != nil || resumed {
				t.Fatalf("create: %v resumed %v", err, resumed)
			}
			n := up.Layout().NumChunks()
			order := rand.Perm(n)
			// The first half one chunk per request, the rest as one run.
			sendChunks(t, up, stream, order[:n/2])
			rest := NewBitfield(n)
			for _, i := range order[n/2:] {
				rest.Set(i)
			}
			for i := 0; i < n; {
				if !rest.Has(i) {
					i++
					continue
				}
				j := i
				for j < n && rest.Has(j) {
					j++
				}
				off, _ := up.Layout().ChunkRange(i)
				end, l := up.Layout().ChunkRange(j - 1)
				k, err := up.Write(context.Background(), i, bytes.NewReader(stream[off:end+l]))
				if err != nil || k != j-i {
					t.Fatalf("write run %d-%d: stored %d, %v", i, j, k, err)
				}
				i = j
			}
			if info := up.Info(); info.Have != n || info.Received != int64(len(stream)) {
				t.Fatalf("info %+v, want %d chunks, %d bytes", info, n, len(stream))
			}
			sh, err := up.Commit()
			if err != nil {
				t.Fatal(err)
			}
			if sh.ID() != want.ID() || !sh.Complete() {
				t.Fatalf("committed %s (complete %v), share put gives %s", sh.ID(), sh.Complete(), want.ID())
			}
			var got bytes.Buffer
			for i := range n {
				rc, err := sh.OpenChunk(i)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(&got, rc)
				rc.Close()
			}
			if !bytes.Equal(got.Bytes(), stream) {
				t.Fatal("committed bytes differ")
			}
			if len(u.List()) != 0 {
				t.Fatal("session still listed after commit")
			}
			if _, err := os.Stat(filepath.Join(st.Dir(), uploadsDir, up.ID())); !os.IsNotExist(err) {
				t.Fatalf("session directory left behind: %v", err)
			}
			// Reopened, the store has the share complete.
			if _, err := st.Get(want.ID()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestUploadResume: a session survives a restart (store and uploads closed
// and reopened): Create with the same key finds it, with the chunks it had.
func TestUploadResume(t *testing.T) {
	const cs = MinChunkSize
	dir := t.TempDir()
	root := filepath.Join(t.TempDir(), "r.bin")
	os.WriteFile(root, randomBytes(5, 10*cs), 0o600)
	spec, stream := specOf(t, root, cs)

	st, err := OpenStore(dir, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u, err := OpenUploads(st, UploadsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	up, _, err := u.Create(spec)
	if err != nil {
		t.Fatal(err)
	}
	sendChunks(t, up, stream, []int{0, 3, 9})
	id := up.ID()
	u.Close()
	st.Close()

	st = openStore2(t, dir)
	u = openUploads(t, st, UploadsOptions{})
	other := spec
	other.Key = "another file"
	if up2, resumed, err := u.Create(other); err != nil || resumed || up2.ID() == id {
		t.Fatalf("a different key resumed %v (%v)", resumed, err)
	}
	up, resumed, err := u.Create(spec)
	if err != nil || !resumed || up.ID() != id {
		t.Fatalf("create again: id %s resumed %v err %v, want %s resumed", up.ID(), resumed, err, id)
	}
	info := up.Info()
	bf, _ := ParseBitfield(info.Chunks, info.Bitfield)
	if info.Have != 3 || !bf.Has(0) || !bf.Has(3) || !bf.Has(9) {
		t.Fatalf("resumed with %d chunks %x, want 0, 3, 9", info.Have, info.Bitfield)
	}
	var missing []int
	for i := range info.Chunks {
		if !bf.Has(i) {
			missing = append(missing, i)
		}
	}
	sendChunks(t, up, stream, missing)
	sh, err := up.Commit()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := BuildManifest(context.Background(), root, BuildOptions{ChunkSize: cs})
	if sh.ID() != want.ID() {
		t.Fatalf("got %s, want %s", sh.ID(), want.ID())
	}
}

func openStore2(t testing.TB, dir string) *Store {
	t.Helper()
	st, err := OpenStore(dir, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestUploadCrashRecheck: chunks journaled after the last checkpoint are
// re-hashed on open; one whose data did not reach the disk is dropped.
func TestUploadCrashRecheck(t *testing.T) {
	const cs = MinChunkSize
	dir := t.TempDir()
	root := filepath.Join(t.TempDir(), "c.bin")
	os.WriteFile(root, randomBytes(6, 4*cs), 0o600)
	spec, stream := specOf(t, root, cs)
	st, _ := OpenStore(dir, StoreOptions{})
	u, _ := OpenUploads(st, UploadsOptions{})
	up, _, err := u.Create(spec)
	if err != nil {
		t.Fatal(err)
	}
	sendChunks(t, up, stream, []int{1, 2})
	// What a machine crash can leave: the journal names chunk 2, its data
	// never reached the disk.
	f, _ := os.OpenFile(filepath.Join(up.dir, dataDir, spec.Name), os.O_WRONLY, 0)
	f.WriteAt(make([]byte, cs), 2*cs)
	f.Close()
	up.mu.Lock()
	up.journal.Close()
	up.journal = nil
	up.done = true
	up.mu.Unlock()
	u.Close()
	st.Close()

	st = openStore2(t, dir)
	u = openUploads(t, st, UploadsOptions{})
	up, resumed, err := u.Create(spec)
	if err != nil || !resumed {
		t.Fatalf("resumed %v, %v", resumed, err)
	}
	bf, _ := ParseBitfield(4, up.Info().Bitfield)
	if !bf.Has(1) || bf.Has(2) || bf.Count() != 1 {
		t.Fatalf("after recovery holds %x, want chunk 1 only", bf.Bytes())
	}
}

// TestUploadWriteErrors: what a body can do wrong, and what is kept.
func TestUploadWriteErrors(t *testing.T) {
	const cs = MinChunkSize
	root := filepath.Join(t.TempDir(), "e.bin")
	os.WriteFile(root, randomBytes(7, 3*cs+10), 0o600)
	spec, stream := specOf(t, root, cs)
	tests := []struct {
		name      string
		first     int
		body      []byte
		wantN     int
		wantErr   error
		wantAfter int // chunks held after
	}{
		{"empty body", 0, nil, 0, io.ErrUnexpectedEOF, 0},
		{"cut inside the second chunk", 0, stream[:cs+5], 1, io.ErrUnexpectedEOF, 1},
		{"bytes beyond the share", 2, append(bytes.Clone(stream[2*cs:]), 'x'), 2, ErrTooLarge, 2},
		{"chunk index out of range", 4, stream[:10], 0, ErrChunkRange, 0},
		{"last chunk alone", 3, stream[3*cs:], 1, nil, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := openStore(t)
			u := openUploads(t, st, UploadsOptions{})
			up, _, err := u.Create(spec)
			if err != nil {
				t.Fatal(err)
			}
			n, err := up.Write(context.Background(), tc.first, bytes.NewReader(tc.body))
			if n != tc.wantN || !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("stored %d, %v; want %d, %v", n, err, tc.wantN, tc.wantErr)
			}
			if h := up.Info().Have; h != tc.wantAfter {
				t.Fatalf("holds %d chunks, want %d", h, tc.wantAfter)
			}
			if _, err := up.Commit(); !errors.Is(err, ErrIncomplete) {
				t.Fatalf("commit of an incomplete session: %v", err)
			}
		})
	}

	t.Run("file changed between sends", func(t *testing.T) {
		u := openUploads(t, openStore(t), UploadsOptions{})
		up, _, _ := u.Create(spec)
		sendChunks(t, up, stream, []int{0})
		changed := bytes.Clone(stream[:cs])
		changed[0] ^= 1
		if _, err := up.Write(context.Background(), 0, bytes.NewReader(changed)); !errors.Is(err, ErrBadChunk) {
			t.Fatalf("a changed chunk: %v, want ErrBadChunk", err)
		}
	})
}

// TestUploadExpire: an idle session is deleted after the TTL, with its data.
func TestUploadExpire(t *testing.T) {
	st := openStore(t)
	now := time.Now()
	u := openUploads(t, st, UploadsOptions{TTL: time.Hour, now: func() time.Time { return now }})
	up, _, err := u.Create(UploadSpec{Name: "x", Files: []File{{Path: "x", Size: 100}}})
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(59 * time.Minute)
	if len(u.List()) != 1 {
		t.Fatal("expired too early")
	}
	if _, err := up.Write(context.Background(), 0, bytes.NewReader(make([]byte, 100))); err != nil {
		t.Fatal(err)
	}
	now = now.Add(59 * time.Minute) // idle 59 minutes since the chunk
	if len(u.List()) != 1 {
		t.Fatal("a chunk did not renew the session")
	}
	now = now.Add(2 * time.Minute)
	if len(u.List()) != 0 {
		t.Fatal("not expired after the TTL")
	}
	if _, err := os.Stat(up.dir); !os.IsNotExist(err) {
		t.Fatalf("expired session's files left: %v", err)
	}
	if _, err := up.Write(context.Background(), 0, bytes.NewReader(make([]byte, 100))); !errors.Is(err, ErrNotFound) {
		t.Fatalf("write to an expired session: %v", err)
	}
}

func TestUploadLimitAndRemove(t *testing.T) {
	u := openUploads(t, openStore(t), UploadsOptions{})
	var ups []*Upload
	for i := range MaxUploadSessions {
		up, _, err := u.Create(UploadSpec{Name: "f", Files: []File{{Path: "f", Size: int64(i)}}})
		if err != nil {
			t.Fatal(err)
		}
		ups = append(ups, up)
	}
	if _, _, err := u.Create(UploadSpec{Name: "g", Files: []File{{Path: "g", Size: 1}}}); !errors.Is(err, ErrBusy) {
		t.Fatalf("session beyond the limit: %v", err)
	}
	if err := u.Remove(ups[0].ID()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ups[0].dir); !os.IsNotExist(err) {
		t.Fatal("cancelled session's files left")
	}
	if _, _, err := u.Create(UploadSpec{Name: "g", Files: []File{{Path: "g", Size: 1}}}); err != nil {
		t.Fatal(err)
	}
	if err := u.Remove(ups[0].ID()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remove twice: %v", err)
	}
}

// TestUploadCommitExisting: committing a share the store already holds
// complete returns that share; a partial copy is replaced.
func TestUploadCommitExisting(t *testing.T) {
	const cs = MinChunkSize
	content := randomBytes(8, 2*cs)
	for _, partial := range []bool{false, true} {
		st := openStore(t)
		u := openUploads(t, st, UploadsOptions{})
		m := mustManifest(t, "dup.bin", false, cs, map[string]string{"dup.bin": string(content)})
		var before *Share
		if partial {
			before, _, _ = st.Create(m)
		} else {
			before = seedStore(t, st, "dup.bin", content, cs)
		}
		up, _, _ := u.Create(UploadSpec{Name: "dup.bin", ChunkSize: cs, Files: []File{{Path: "dup.bin", Size: int64(len(content)), Mode: 0o644}}})
		if _, err := up.Write(context.Background(), 0, bytes.NewReader(content)); err != nil {
			t.Fatal(err)
		}
		sh, err := up.Commit()
		if err != nil || sh.ID() != m.ID() || !sh.Complete() {
			t.Fatalf("partial=%v: %v %v", partial, sh, err)
		}
		if (sh == before) == partial {
			t.Fatalf("partial=%v: got the share before %v", partial, sh == before)
		}
	}
}

func TestDecodeUploadSpec(t *testing.T) {
	tests := []struct {
		name, json string
		ok         bool
	}{
		{"file", `{"name":"a.txt","type":"file","files":[{"size":3}]}`, true},
		{"file with path", `{"name":"a.txt","type":"file","files":[{"path":"a.txt","size":3,"mode":420}]}`, true},
		{"dir", `{"name":"d","type":"dir","chunk_size":65536,"files":[{"path":"x/y","size":3}],"dirs":[{"path":"x"}],"key":"k"}`, true},
		{"dir unsorted is sorted", `{"name":"d","type":"dir","files":[{"path":"b","size":1},{"path":"a","size":1}]}`, true},
		{"empty dir", `{"name":"d","type":"dir","files":[]}`, true},
		{"dotdot", `{"name":"d","type":"dir","files":[{"path":"../x","size":1}]}`, false},
		{"absolute", `{"name":"d","type":"dir","files":[{"path":"/etc/passwd","size":1}]}`, false},
		{"backslash", `{"name":"d","type":"dir","files":[{"path":"a\\b","size":1}]}`, false},
		{"name with slash", `{"name":"a/b","type":"file","files":[{"size":1}]}`, false},
		{"empty name", `{"name":"","type":"file","files":[{"size":1}]}`, false},
		{"duplicate", `{"name":"d","type":"dir","files":[{"path":"a","size":1},{"path":"a","size":2}]}`, false},
		{"file below a file", `{"name":"d","type":"dir","files":[{"path":"a","size":1},{"path":"a/b","size":2}]}`, false},
		{"negative size", `{"name":"a","type":"file","files":[{"size":-1}]}`, false},
		{"no size", `{"name":"a","type":"file","files":[{}]}`, false},
		{"huge size", `{"name":"a","type":"file","files":[{"size":9000000000000000000}]}`, false},
		{"two files for a file share", `{"name":"a","type":"file","files":[{"size":1},{"path":"b","size":1}]}`, false},
		{"chunk size too small", `{"name":"a","type":"file","chunk_size":100,"files":[{"size":1}]}`, false},
		{"setuid mode", `{"name":"a","type":"file","files":[{"size":1,"mode":2541}]}`, false},
		{"unknown field", `{"name":"a","type":"file","files":[{"size":1}],"evil":1}`, false},
		{"unknown type", `{"name":"a","type":"link","files":[{"size":1}]}`, false},
		{"trailing data", `{"name":"a","type":"file","files":[{"size":1}]} {}`, false},
		{"key too long", `{"name":"a","type":"file","files":[{"size":1}],"key":"` + strings.Repeat("k", MaxUploadKey+1) + `"}`, false},
		{"not json", `name=a`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeUploadSpec([]byte(tc.json))
			if (err == nil) != tc.ok {
				t.Fatalf("err %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrBadManifest) && !errors.Is(err, ErrBadName) {
				t.Fatalf("err %v is neither ErrBadManifest nor ErrBadName", err)
			}
		})
	}
}

func FuzzDecodeUploadSpec(f *testing.F) {
	f.Add([]byte(`{"name":"d","type":"dir","chunk_size":65536,"files":[{"path":"x/y","size":3}],"dirs":[{"path":"x"}],"key":"k"}`))
	f.Add([]byte(`{"name":"a.txt","type":"file","files":[{"size":3}]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		spec, err := DecodeUploadSpec(raw)
		if err != nil {
			return
		}
		l, err := spec.Layout()
		if err != nil {
			t.Fatalf("decoded spec has no layout: %v", err)
		}
		for _, f := range l.Files() {
			if l.IsDir() && ValidPath(f.Path) != nil {
				t.Fatalf("accepted path %q", f.Path)
			}
		}
	})
}

func FuzzParseUploadJournal(f *testing.F) {
	var seed bytes.Buffer
	seed.WriteString(uploadMagic)
	seed.Write(encodeUploadRecord(tagHave, 3, Hash{1}))
	seed.Write(encodeUploadRecord(tagCheckpoint, 1, Hash{}))
	seed.Write(encodeUploadRecord(tagHave, 1, Hash{2}))
	f.Add(seed.Bytes(), 4)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		if n < 0 || n > 1<<20 {
			return
		}
		trusted, unsure, err := parseUploadJournal(b, n)
		if err != nil {
			return
		}
		seen := map[int]bool{}
		for _, r := range append(trusted, unsure...) {
			if r.chunk < 0 || r.chunk >= n || seen[r.chunk] {
				t.Fatalf("chunk %d of %d (seen %v)", r.chunk, n, seen[r.chunk])
			}
			seen[r.chunk] = true
		}
	})
}
