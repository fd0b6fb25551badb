package transfer

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// daemonStore is a store as the daemon of a local API serves it: a Source
// and HaveWaiter (the Store itself) that also tells where its copy of a
// share is. lie, if set, edits the answer (a daemon on another machine, a
// hostile one).
type daemonStore struct {
	*Store
	lie     func(*LocalCopy)
	answers atomic.Int32
}

func (d *daemonStore) LocalCopy(_ context.Context, id ID) (LocalCopy, error) {
	d.answers.Add(1)
	sh, err := d.Get(id)
	if err != nil {
		return LocalCopy{}, err
	}
	lc, err := sh.LocalCopy()
	if err == nil && d.lie != nil {
		d.lie(&lc)
	}
	return lc, err
}

var _ LocalSource = (*daemonStore)(nil)

func inode(t testing.TB, path string) (dev, ino uint64, nlink uint64) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Dev, st.Ino, uint64(st.Nlink)
}

// sameTree fails unless the file or tree at got has want's files and modes.
func sameTree(t testing.TB, m *Manifest, want map[string][]byte, got string) {
	t.Helper()
	for _, f := range m.Files() {
		p := got
		if m.IsDir() {
			p = filepath.Join(got, filepath.FromSlash(f.Path))
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, want[f.Path]) {
			t.Fatalf("%s: %d bytes differ from the %d of the share", p, len(b), len(want[f.Path]))
		}
		fi, _ := os.Stat(p)
		if fi.Mode().Perm() != f.Mode&modeMask {
			t.Fatalf("%s: mode %v, want %v", p, fi.Mode().Perm(), f.Mode&modeMask)
		}
	}
}

// localFixture is a share in a daemon's store: a single file or a tree.
func localFixture(t testing.TB, st *Store, dir bool) (*Manifest, map[string][]byte) {
	t.Helper()
	const cs = 64 << 10
	if !dir {
		content := randomBytes(7, 5*cs+123)
		sh := seedStore(t, st, "one.bin", content, cs)
		return sh.Manifest(), map[string][]byte{"one.bin": content}
	}
	files := map[string]string{
		"a.bin":       string(randomBytes(1, 3*cs+5)),
		"empty":       "",
		"sub/b.bin":   string(randomBytes(2, cs/3)),
		"sub/c/d.txt": "hello",
	}
	src := filepath.Join(t.TempDir(), "tree")
	writeTree(t, src, files)
	os.Chmod(filepath.Join(src, "sub", "c", "d.txt"), 0o600)
	m, err := BuildManifest(context.Background(), src, BuildOptions{ChunkSize: cs})
	if err != nil {
		t.Fatal(err)
	}
	sh, _, err := st.Create(m)
	if err != nil {
		t.Fatal(err)
	}
	local, err := OpenLocal(src, m)
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	for i := range m.NumChunks() {
		p := make([]byte, m.ChunkLen(i))
		if err := local.ReadChunk(i, p); err != nil {
			t.Fatal(err)
		}
		if err := sh.PutChunk(i, p); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string][]byte{}
	for k, v := range files {
		want[k] = []byte(v)
	}
	return m, want
}

func TestGetFromLocalCopy(t *testing.T) {
	for _, dir := range []bool{false, true} {
		t.Run(map[bool]string{false: "file", true: "dir"}[dir], func(t *testing.T) {
			st := openStore(t)
			m, want := localFixture(t, st, dir)
			d := &daemonStore{Store: st}
			out := filepath.Join(t.TempDir(), "out")
			path, stats, err := Get(context.Background(), m.ID(), GetOptions{Out: out, Local: d}, d)
			if err != nil {
				t.Fatal(err)
			}
			if path != out || stats.Local != CloneHardlink {
				t.Fatalf("Get = %q, %v; want %q by hard link (same file system, same user)", path, stats.Local, out)
			}
			sameTree(t, m, want, out)
			sh, _ := st.Get(m.ID())
			for k, f := range m.Files() {
				if f.Size == 0 {
					continue
				}
				store := sh.tree.path(k)
				o := out
				if m.IsDir() {
					o = filepath.Join(out, filepath.FromSlash(f.Path))
				}
				_, sino, nl := inode(t, filepath.Join(sh.Dir(), dataDir, filepath.FromSlash(store)))
				_, oino, _ := inode(t, o)
				if sino != oino || nl != 2 {
					t.Fatalf("%s: inode %d (store %d), %d links", f.Path, oino, sino, nl)
				}
			}
			if left, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".*")); len(left) > 0 {
				t.Fatalf("left behind: %v", left)
			}
		})
	}
}

// TestGetFollowsTheDaemonsDownload: the daemon's copy fills while Get
// waits; each method still ends with the verified share.
func TestGetFollowsTheDaemonsDownload(t *testing.T) {
	type setup struct {
		name  string
		out   func(t *testing.T) string // the output's directory
		chown bool                      // the store's files belong to another user
		want  []CloneMethod
	}
	cases := []setup{
		{"same file system", func(t *testing.T) string { return t.TempDir() }, false, []CloneMethod{CloneHardlink}},
		{"another user's store", func(t *testing.T) string { return t.TempDir() }, true, []CloneMethod{CloneCopyRange}},
		{"another file system", shmDir, false, []CloneMethod{CloneCopyRange, CloneCopy}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.chown && os.Geteuid() != 0 {
				t.Skip("needs root to give the store's files to another user")
			}
			outDir := tc.out(t)
			st := openStore(t)
			full := openStore(t)
			m, want := localFixture(t, full, true)
			sh, _, err := st.Create(m)
			if err != nil {
				t.Fatal(err)
			}
			if tc.chown {
				filepath.Walk(sh.DataPath(), func(p string, _ os.FileInfo, _ error) error { return os.Lchown(p, 65534, 65534) })
			}
			d := &daemonStore{Store: st}
			// The daemon's download: a chunk every few milliseconds, out of order.
			fed := make(chan error, 1)
			go func() {
				src, _ := full.Get(m.ID())
				for k := range m.NumChunks() {
					i := (k*7 + 3) % m.NumChunks()
					p := make([]byte, m.ChunkLen(i))
					if err := src.ReadChunk(i, p); err != nil {
						fed <- err
						return
					}
					time.Sleep(5 * time.Millisecond)
					if err := sh.PutChunk(i, p); err != nil {
						fed <- err
						return
					}
				}
				fed <- nil
			}()
			var progress []int64
			out := filepath.Join(outDir, "tree")
			_, stats, err := Get(context.Background(), m.ID(), GetOptions{
				Out: out, Local: d,
				Download: DownloadOptions{Progress: func(p Progress) { progress = append(progress, p.Bytes) }},
			}, d)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-fed; err != nil {
				t.Fatal(err)
			}
			t.Logf("made by %v", stats.Local)
			if !contains(tc.want, stats.Local) {
				t.Fatalf("made by %v, want one of %v", stats.Local, tc.want)
			}
			sameTree(t, m, want, out)
			if len(progress) < 2 || progress[len(progress)-1] != m.Size() {
				t.Fatalf("progress %v, want it to rise to %d", progress, m.Size())
			}
		})
	}
}

func contains[T comparable](s []T, v T) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// shmDir is a directory on another file system than t.TempDir (tmpfs).
func shmDir(t *testing.T) string {
	fi, err := os.Stat("/dev/shm")
	if err != nil || !fi.IsDir() {
		t.Skip("no /dev/shm")
	}
	dir, err := os.MkdirTemp("/dev/shm", "share-test-")
	if err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if a, b := devOf(t, dir), devOf(t, t.TempDir()); a == b {
		t.Skip("/dev/shm is on the same file system as the temp dir")
	}
	return dir
}

func devOf(t *testing.T, p string) uint64 {
	d, _, _ := inode(t, p)
	return d
}

// TestLocalCopyNotUsable: Get downloads as usual, and leaves nothing of the
// local attempt, when the daemon's answer does not lead to its copy.
func TestLocalCopyNotUsable(t *testing.T) {
	for _, tc := range []struct {
		name string
		lie  func(*LocalCopy)
	}{
		{"another machine", func(lc *LocalCopy) { lc.Ino++ }},
		{"not a store path", func(lc *LocalCopy) { lc.Data = "/etc/passwd" }},
		{"relative", func(lc *LocalCopy) { lc.Data = "shares/x/data/one.bin" }},
		{"dot dot", func(lc *LocalCopy) { lc.Data = filepath.Dir(lc.Data) + "/../data/one.bin" }},
		{"another share", func(lc *LocalCopy) {
			lc.Data = filepath.Join(filepath.Dir(filepath.Dir(lc.Data))+"x", dataDir, "one.bin")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := openStore(t)
			m, want := localFixture(t, st, false)
			d := &daemonStore{Store: st, lie: tc.lie}
			out := filepath.Join(t.TempDir(), "one.bin")
			_, stats, err := Get(context.Background(), m.ID(), GetOptions{Out: out, Local: d}, d)
			if err != nil {
				t.Fatal(err)
			}
			if stats.Local != CloneNone || d.answers.Load() != 1 {
				t.Fatalf("made by %v after %d answers; want a download", stats.Local, d.answers.Load())
			}
			sameTree(t, m, want, out)
			if _, _, nl := inode(t, out); nl != 1 {
				t.Fatalf("downloaded output has %d links", nl)
			}
		})
	}
}

// TestLocalCopyKeepsADownloadUnderWay: a download over the network that
// already holds chunks in the work directory resumes there; a directory a
// killed local copy left is replaced.
func TestLocalCopyKeepsADownloadUnderWay(t *testing.T) {
	st := openStore(t)
	m, want := localFixture(t, st, false)
	d := &daemonStore{Store: st}
	out := filepath.Join(t.TempDir(), "one.bin")
	work := filepath.Join(filepath.Dir(out), ".one.bin.share-partial")

	part, err := CreateShare(work, m)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, m.ChunkLen(0))
	copy(p, want["one.bin"])
	if err := part.PutChunk(0, p); err != nil {
		t.Fatal(err)
	}
	part.Close()
	_, stats, err := Get(context.Background(), m.ID(), GetOptions{Out: out, Local: d}, d)
	if err != nil || stats.Local != CloneNone || stats.Chunks != m.NumChunks()-1 {
		t.Fatalf("resume: %v, %v, %d chunks fetched", err, stats.Local, stats.Chunks)
	}
	sameTree(t, m, want, out)

	// What a local copy killed midway leaves: a work directory without a
	// manifest. A download without the daemon starts afresh.
	os.Remove(out)
	if err := os.MkdirAll(filepath.Join(work, "one.bin"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, stats, err = Get(context.Background(), m.ID(), GetOptions{Out: out}, st)
	if err != nil || stats.Local != CloneNone {
		t.Fatalf("after a killed local copy: %v, %v", err, stats.Local)
	}
	sameTree(t, m, want, out)
}

// TestLocalCopySymlinkOut: a symlink in the daemon's store that leads
// outside it is not followed: the output never holds the file it names.
func TestLocalCopySymlinkOut(t *testing.T) {
	st := openStore(t)
	m, want := localFixture(t, st, true)
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, bytes.Repeat([]byte("secret"), 1<<14), 0o600)
	sh, _ := st.Get(m.ID())
	a := filepath.Join(sh.DataPath(), "a.bin")
	os.Remove(a)
	if err := os.Symlink(secret, a); err != nil {
		t.Fatal(err)
	}
	d := &daemonStore{Store: st}
	out := filepath.Join(t.TempDir(), "tree")
	_, _, err := Get(context.Background(), m.ID(), GetOptions{Out: out, Local: d}, d)
	if b, rerr := os.ReadFile(filepath.Join(out, "a.bin")); rerr == nil && !bytes.Equal(b, want["a.bin"]) {
		t.Fatalf("output holds %d other bytes (err %v)", len(b), err)
	}
	if err == nil {
		sameTree(t, m, want, out)
	}
	t.Logf("Get: %v", err)
}

// TestStoreNeverWritesIntoALinkedFile: a store file with another name (a
// hard-linked output) gets an inode of its own before the store writes into
// it (a chunk fetched again): the user's file does not change.
func TestStoreNeverWritesIntoALinkedFile(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenStore(dir, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	full := openStore(t)
	m, want := localFixture(t, full, false)
	sh, _, err := st.Create(m)
	if err != nil {
		t.Fatal(err)
	}
	src, _ := full.Get(m.ID())
	put := func(i int) {
		t.Helper()
		p := make([]byte, m.ChunkLen(i))
		src.ReadChunk(i, p)
		if err := sh.PutChunk(i, p); err != nil {
			t.Fatalf("PutChunk %d: %v", i, err)
		}
	}
	put(0)
	// The file gets another name while the store is closed (a restart):
	// the next write opens it anew.
	st.Close()
	user := filepath.Join(t.TempDir(), "users-file")
	if err := os.Link(sh.DataPath(), user); err != nil {
		t.Fatal(err)
	}
	if st, err = OpenStore(dir, StoreOptions{}); err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if sh, err = st.Get(m.ID()); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(user)
	_, uino, _ := inode(t, user)
	for i := 1; i < m.NumChunks(); i++ {
		put(i)
	}
	after, _ := os.ReadFile(user)
	if !bytes.Equal(before, after) {
		t.Fatal("the linked file changed")
	}
	_, sino, nl := inode(t, sh.DataPath())
	if sino == uino || nl != 1 {
		t.Fatalf("store file: inode %d (user's %d), %d links; want an inode of its own", sino, uino, nl)
	}
	if !sh.Complete() {
		t.Fatal("share not complete")
	}
	sameTree(t, m, want, sh.DataPath())
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(sh.DataPath()), ".unshare-*")); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// TestReflinkOnXFS: on a file system with shared extents the output is an
// independent file. It mounts an XFS image on a loop device: root only.
func TestReflinkOnXFS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount an XFS image")
	}
	if _, err := exec.LookPath("mkfs.xfs"); err != nil {
		t.Skip("no mkfs.xfs (apt-get install xfsprogs)")
	}
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "xfs.img"), filepath.Join(dir, "mnt")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 320<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.xfs", "-q", "-m", "reflink=1", img).CombinedOutput(); err != nil {
		t.Skipf("mkfs.xfs: %v: %s", err, out)
	}
	os.Mkdir(mnt, 0o700)
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v: %s", err, out)
			exec.Command("umount", "-l", mnt).Run()
		}
	})
	st, err := OpenStore(filepath.Join(mnt, "daemon"), StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m, want := localFixture(t, st, true)
	d := &daemonStore{Store: st}
	out := filepath.Join(mnt, "home", "tree")
	os.Mkdir(filepath.Dir(out), 0o755)
	_, stats, err := Get(context.Background(), m.ID(), GetOptions{Out: out, Local: d}, d)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Local != CloneReflink {
		t.Fatalf("made by %v, want reflink", stats.Local)
	}
	sameTree(t, m, want, out)
	if _, _, nl := inode(t, filepath.Join(out, "a.bin")); nl != 1 {
		t.Fatalf("a reflinked output has %d links", nl)
	}
	// Independent: writing the output leaves the store's copy as it was.
	if err := os.WriteFile(filepath.Join(out, "a.bin"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	sh, _ := st.Get(m.ID())
	if b, _ := os.ReadFile(filepath.Join(sh.DataPath(), "a.bin")); !bytes.Equal(b, want["a.bin"]) {
		t.Fatal("the store's copy changed with the output")
	}
}

// TestRepairOfALinkedShare: a user who edits a hard-linked output in place
// edits the store's copy too; the store finds the chunk damaged and fetches
// it again into a file of its own, and the user's file keeps their edit
// and its mode.
func TestRepairOfALinkedShare(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenStore(dir, StoreOptions{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	content := randomBytes(33, 10*MinChunkSize+99)
	sh, err := st.Import(context.Background(), "ro.bin", bytes.NewReader(content), ImportOptions{ChunkSize: MinChunkSize, Mode: 0o444})
	if err != nil {
		t.Fatal(err)
	}
	d := &daemonStore{Store: st}
	out := filepath.Join(t.TempDir(), "ro.bin")
	if _, stats, err := Get(context.Background(), sh.ID(), GetOptions{Out: out, Local: d}, d); err != nil || stats.Local != CloneHardlink {
		t.Fatalf("get: %v, %v", err, stats.Local)
	}
	id := sh.ID()
	st.Close()
	os.Chmod(out, 0o644) // the user edits their file in place
	off, _ := sh.Manifest().ChunkRange(4)
	flip(t, out, off+7)
	os.Chmod(out, 0o444)
	edited, _ := os.ReadFile(out)

	// A new process of the daemon verifies the chunk on its first read.
	if st, err = OpenStore(dir, StoreOptions{Logger: quietLog}); err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if sh, err = st.Get(id); err != nil {
		t.Fatal(err)
	}
	if _, err := sh.OpenChunk(4); !errors.Is(err, ErrChunkNotHeld) {
		t.Fatalf("OpenChunk of the edited chunk: %v, want ErrChunkNotHeld", err)
	}
	off, n := sh.Manifest().ChunkRange(4)
	if err := sh.PutChunk(4, content[off:off+n]); err != nil {
		t.Fatal(err)
	}
	if !sh.Complete() {
		t.Fatal("repaired share not complete")
	}
	if got, _ := os.ReadFile(sh.DataPath()); !bytes.Equal(got, content) {
		t.Fatal("the store's repaired copy differs from the share")
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, edited) {
		t.Fatal("the repair changed the user's file")
	}
	fi, _ := os.Stat(out)
	_, _, nl := inode(t, out)
	if fi.Mode().Perm() != 0o444 || nl != 1 {
		t.Fatalf("the user's file: mode %v, %d links; want 0444 and its own inode", fi.Mode().Perm(), nl)
	}
}
