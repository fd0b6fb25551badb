package transfer

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"sync"
	"syscall"
	"unsafe"
)

// maxOpenFiles bounds the write handles a tree keeps open, so a directory
// share of many files cannot exhaust file descriptors.
const maxOpenFiles = 64

// modeMask drops group and other write bits from received modes, as tar does
// for an ordinary user with the usual umask: a peer cannot make us create
// world-writable files.
const modeMask fs.FileMode = 0o755

// tree reads and writes a share's byte stream in ordinary files below one
// directory. Every path is opened through an os.Root, so neither a hostile
// manifest nor a symlink planted in the directory can reach outside it.
// A tree is safe for concurrent use.
type tree struct {
	m    *Manifest
	root *os.Root // the directory that holds the share's top entry
	top  string   // the top entry's name in root: m.Name(), unless opened through a symlink

	mu       sync.Mutex
	open     map[int]*os.File // write handles, by file index; at most maxOpenFiles
	direct   map[int]*os.File // O_DIRECT write handles, likewise
	noDirect bool             // the file system refused direct I/O
	dirty    map[int]bool     // files written since the last takeDirty
}

// Why direct I/O: a downloaded chunk is verified in memory and then written
// once; nothing reads it back soon but other peers, at a fraction of the
// write rate. Written through the page cache it costs a copy and, on the
// virtual machines this project is measured on, a fresh page per 4 KiB
// (0.3-1.8 CPU-s/GiB, varying with how recently memory was freed); with
// O_DIRECT the same writes cost 0.2 CPU-s/GiB at 2+ GB/s, steadily, and a
// large download does not evict everything else from the cache. Only whole
// aligned blocks go direct (every chunk of a single-file share but the last,
// when the chunk size is a multiple of 4 KiB and the buffer is aligned);
// the rest, and file systems without O_DIRECT, use ordinary writes.
//
// directMin is the smallest write worth it.
const directMin = 64 << 10

func openTree(dir string, m *Manifest) (*tree, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	return &tree{m: m, root: root, top: m.Name(), open: map[int]*os.File{}, direct: map[int]*os.File{}, dirty: map[int]bool{}}, nil
}

// path returns file k's path in root.
func (t *tree) path(k int) string {
	if !t.m.IsDir() {
		return t.top
	}
	return t.top + "/" + t.m.files[k].Path
}

// create makes the share's directories and files, each file allocated at
// its final length (see allocate). Existing files are reused.
func (t *tree) create() error {
	if t.m.IsDir() {
		if err := t.root.MkdirAll(t.top, 0o700); err != nil {
			return err
		}
		for _, d := range t.m.Dirs() {
			if err := t.root.MkdirAll(t.top+"/"+d.Path, 0o700); err != nil {
				return err
			}
		}
	}
	for k, f := range t.m.Files() {
		p := t.path(k)
		if t.m.IsDir() {
			if err := t.root.MkdirAll(parentOf(p), 0o700); err != nil {
				return err
			}
		}
		h, err := t.root.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return err
		}
		err = checkUnlinked(h)
		if err == nil {
			err = allocate(h, f.Size)
		}
		if cerr := h.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func parentOf(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[:i]
		}
	}
	return "."
}

// applyModes sets the manifest's permission bits (masked by modeMask), files
// first, then directories deepest first; directories keep owner rwx so the
// share stays removable.
func (t *tree) applyModes() error {
	for k, f := range t.m.Files() {
		if err := t.root.Chmod(t.path(k), f.Mode&modeMask); err != nil {
			return err
		}
	}
	dirs := t.m.Dirs()
	for k := len(dirs) - 1; k >= 0; k-- {
		if err := t.root.Chmod(t.top+"/"+dirs[k].Path, dirs[k].Mode&modeMask|0o700); err != nil {
			return err
		}
	}
	return nil
}

// handle returns an open read-write handle for file k.
func (t *tree) handle(k int) (*os.File, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if h, ok := t.open[k]; ok {
		return h, nil
	}
	if len(t.open) >= maxOpenFiles {
		// Close any one; a later sync reopens it if it is dirty.
		for j, h := range t.open {
			h.Close()
			delete(t.open, j)
			break
		}
	}
	h, err := t.root.OpenFile(t.path(k), os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	if err := checkUnlinked(h); err != nil {
		h.Close()
		return nil, err
	}
	t.open[k] = h
	return h, nil
}

// checkUnlinked returns ErrLinked if h, opened for writing, has other hard
// links: another name (a user's file) would see every write.
func checkUnlinked(h *os.File) error {
	fi, err := h.Stat()
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
		return fmt.Errorf("%s: %d links: %w", h.Name(), st.Nlink, ErrLinked)
	}
	return nil
}

// directHandle returns an O_DIRECT write handle for file k, or nil if the
// file system refuses them.
func (t *tree) directHandle(k int) *os.File {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.noDirect {
		return nil
	}
	if h, ok := t.direct[k]; ok {
		return h
	}
	if len(t.direct) >= maxOpenFiles {
		for j, h := range t.direct {
			h.Close()
			delete(t.direct, j)
			break
		}
	}
	h, err := openDirect(t.root, t.path(k))
	if err != nil {
		t.noDirect = true
		return nil
	}
	if checkUnlinked(h) != nil {
		h.Close()
		return nil // handle reports it
	}
	t.direct[k] = h
	return h
}

// canDirect reports whether a write of p at file offset off meets O_DIRECT's
// alignment rules.
func canDirect(p []byte, off int64) bool {
	return len(p) >= directMin && len(p)%directAlign == 0 && off%directAlign == 0 &&
		uintptr(unsafe.Pointer(unsafe.SliceData(p)))%directAlign == 0
}

// writeSegment writes p at offset off of file k, directly if it can.
func (t *tree) writeSegment(k int, p []byte, off int64) error {
	if canDirect(p, off) {
		if h := t.directHandle(k); h != nil {
			if _, err := h.WriteAt(p, off); err == nil {
				return nil
			} else if !errors.Is(err, syscall.EINVAL) && !errors.Is(err, os.ErrClosed) {
				return err
			}
			// EINVAL: the device wants other alignment; write it normally.
		}
	}
	h, err := t.handle(k)
	if err != nil {
		return err
	}
	if _, err := h.WriteAt(p, off); err != nil {
		if !errors.Is(err, os.ErrClosed) {
			return err
		}
		if h, err = t.handle(k); err != nil { // evicted meanwhile: retry once
			return err
		}
		_, err = h.WriteAt(p, off)
		return err
	}
	return nil
}

// writeAt writes p at offset off of the byte stream. The range must lie in
// the share.
func (t *tree) writeAt(p []byte, off int64) error {
	for _, s := range t.m.segments(off, int64(len(p))) {
		if err := t.writeSegment(s.file, p[:s.n], s.off); err != nil {
			return err
		}
		t.mu.Lock()
		t.dirty[s.file] = true
		t.mu.Unlock()
		p = p[s.n:]
	}
	return nil
}

// readAt fills p from offset off of the byte stream.
func (t *tree) readAt(p []byte, off int64) error {
	for _, s := range t.m.segments(off, int64(len(p))) {
		h, err := t.root.Open(t.path(s.file))
		if err != nil {
			return err
		}
		_, err = h.ReadAt(p[:s.n], s.off)
		h.Close()
		if err == io.EOF {
			return fmt.Errorf("%s: %w (file is shorter than the manifest says)", t.path(s.file), io.ErrUnexpectedEOF)
		}
		if err != nil {
			return err
		}
		p = p[s.n:]
	}
	return nil
}

// openRange returns a reader of [off, off+n) of the byte stream. Its WriteTo
// copies file by file with io.CopyN, so a writer that can sendfile (a TCP
// connection, an http.ResponseWriter) does.
func (t *tree) openRange(off, n int64) *rangeReader {
	return &rangeReader{t: t, size: n, segs: t.m.segments(off, n)}
}

// Size returns the length of the range.
func (r *rangeReader) Size() int64 { return r.size }

// rangeReader reads a byte range of a tree. It is not safe for concurrent use.
type rangeReader struct {
	t    *tree
	size int64
	segs []segment
	cur  *os.File // open on segs[0], positioned; nil until needed
	left int64    // bytes of segs[0] not yet read through cur
}

func (r *rangeReader) openSeg() error {
	s := r.segs[0]
	h, err := r.t.root.Open(r.t.path(s.file))
	if err != nil {
		return err
	}
	if _, err := h.Seek(s.off, io.SeekStart); err != nil {
		h.Close()
		return err
	}
	r.cur, r.left = h, s.n
	return nil
}

func (r *rangeReader) nextSeg() {
	r.cur.Close()
	r.cur = nil
	r.segs = r.segs[1:]
}

func (r *rangeReader) Read(p []byte) (int, error) {
	for len(r.segs) > 0 {
		if r.cur == nil {
			if err := r.openSeg(); err != nil {
				return 0, err
			}
		}
		if r.left == 0 {
			r.nextSeg()
			continue
		}
		n, err := r.cur.Read(p[:min(int64(len(p)), r.left)])
		r.left -= int64(n)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // the file is shorter than the manifest says
		}
		return n, err
	}
	return 0, io.EOF
}

// WriteTo implements io.WriterTo.
func (r *rangeReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for len(r.segs) > 0 {
		if r.cur == nil {
			if err := r.openSeg(); err != nil {
				return total, err
			}
		}
		n, err := io.CopyN(w, r.cur, r.left)
		total += n
		r.left -= n
		if err == io.EOF {
			return total, io.ErrUnexpectedEOF
		}
		if err != nil {
			return total, err
		}
		r.nextSeg()
	}
	return total, nil
}

func (r *rangeReader) Close() error {
	if r.cur != nil {
		r.cur.Close()
		r.cur = nil
	}
	r.segs = nil
	return nil
}

// takeDirty returns the files written since the last call, and forgets them.
func (t *tree) takeDirty() []int {
	t.mu.Lock()
	defer t.mu.Unlock()
	ks := make([]int, 0, len(t.dirty))
	for k := range t.dirty {
		ks = append(ks, k)
	}
	clear(t.dirty)
	slices.Sort(ks)
	return ks
}

// syncFiles fsyncs files ks. It opens its own handles: fsync flushes the
// file, whichever descriptor wrote it, and the cache may close one any time.
func (t *tree) syncFiles(ks []int) error {
	for _, k := range ks {
		h, err := t.root.Open(t.path(k))
		if err != nil {
			return err
		}
		err = h.Sync()
		h.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// closeFiles closes the write handles.
func (t *tree) closeFiles() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range []map[int]*os.File{t.open, t.direct} {
		for k, h := range m {
			h.Close()
			delete(m, k)
		}
	}
}

func (t *tree) close() error {
	t.closeFiles()
	return t.root.Close()
}
