package transfer

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"
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
	read     map[int]*os.File // read handles shared by every reader (ReadAt), likewise
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
	return &tree{m: m, root: root, top: m.Name(), open: map[int]*os.File{}, direct: map[int]*os.File{}, read: map[int]*os.File{}, dirty: map[int]bool{}}, nil
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
		if h, err = unshare(t.root, p, h); err != nil {
			return err
		}
		err = allocate(h, f.Size)
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
// first, then directories deepest first, the top directory last; directories
// keep owner rwx so the share stays removable (dirMode).
func (t *tree) applyModes() error {
	for k, f := range t.m.Files() {
		if err := t.root.Chmod(t.path(k), f.Mode&modeMask); err != nil {
			return err
		}
	}
	if !t.m.IsDir() {
		return nil
	}
	dirs := t.m.Dirs()
	for k := len(dirs) - 1; k >= 0; k-- {
		if err := t.root.Chmod(t.top+"/"+dirs[k].Path, dirMode(dirs[k].Mode)); err != nil {
			return err
		}
	}
	return t.root.Chmod(t.top, dirMode(t.m.Mode()))
}

// dirMode is the mode a received directory gets: modeMask applied, owner
// rwx kept.
func dirMode(m fs.FileMode) fs.FileMode { return m&modeMask | 0o700 }

// makeWritable gives the files that hold chunk i their owner's write bit
// back (applyModes may have taken it), so the chunk can be written again.
func (t *tree) makeWritable(i int) error {
	off, n := t.m.ChunkRange(i)
	for _, s := range t.m.segments(off, n) {
		// A file hard-linked to a user's output gets an inode of its own
		// first: the chmod and the repair must not reach the user's file.
		if err := t.unshareFile(s.file); err != nil {
			return err
		}
		if err := t.root.Chmod(t.path(s.file), t.m.files[s.file].Mode&modeMask|0o600); err != nil {
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
	if h, err = unshare(t.root, t.path(k), h); err != nil {
		return nil, err
	}
	if r, ok := t.read[k]; ok { // it may be the old inode
		r.Close()
		delete(t.read, k)
	}
	t.open[k] = h
	return h, nil
}

// readHandle returns a read handle of file k, shared by every reader: open
// once, not once per chunk read (an open, a close and their bookkeeping are
// several system calls, as many as the read itself for small chunks). It may
// be closed under a reader, which then gets os.ErrClosed and asks again
// (readFileAt).
func (t *tree) readHandle(k int) (*os.File, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if h, ok := t.read[k]; ok {
		return h, nil
	}
	if len(t.read) >= maxOpenFiles {
		for j, h := range t.read {
			h.Close()
			delete(t.read, j)
			break
		}
	}
	h, err := t.root.Open(t.path(k))
	if err != nil {
		return nil, err
	}
	t.read[k] = h
	return h, nil
}

// readFileAt fills p from offset off of file k.
func (t *tree) readFileAt(k int, p []byte, off int64) (int, error) {
	for attempt := 0; ; attempt++ {
		h, err := t.readHandle(k)
		if err != nil {
			return 0, err
		}
		n, err := h.ReadAt(p, off)
		if errors.Is(err, os.ErrClosed) && attempt == 0 {
			continue // evicted or dropped meanwhile
		}
		return n, err
	}
}

// unshareFile gives file k an inode of its own if it has other hard links
// (see unshare), and drops the handles open on the old one.
func (t *tree) unshareFile(k int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	h, err := t.root.Open(t.path(k))
	if err != nil {
		return err
	}
	n, err := unshare(t.root, t.path(k), h)
	if err != nil {
		return err
	}
	if n != h {
		for _, m := range []map[int]*os.File{t.open, t.direct, t.read} {
			if old, ok := m[k]; ok {
				old.Close()
				delete(m, k)
			}
		}
	}
	return n.Close()
}

// linked reports whether h has other hard links.
func linked(h *os.File) (bool, error) {
	fi, err := h.Stat()
	if err != nil {
		return false, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Nlink > 1, nil
}

// unshare returns a read-write handle of path in root that no other name
// shares: h itself if the file has no other hard links. Otherwise (a `share
// get` output was hard-linked to it, see LocalSource) it copies the file to
// a new one beside it, in the kernel where it can, syncs it and renames it
// over path, so that writes (a chunk fetched again after it was found
// damaged on disk) never reach the user's file, which keeps the old inode
// as it is. It closes h in that case.
func unshare(root *os.Root, path string, h *os.File) (*os.File, error) {
	shared, err := linked(h)
	if err != nil || !shared {
		return h, err
	}
	defer h.Close()
	fi, err := h.Stat()
	if err != nil {
		return nil, err
	}
	tmp := parentOf(path) + "/.unshare-" + fi.Name()
	if parentOf(path) == "." {
		tmp = ".unshare-" + fi.Name()
	}
	n, err := root.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			n.Close()
			root.Remove(tmp)
		}
	}()
	if err := allocate(n, fi.Size()); err != nil {
		return nil, err
	}
	if err := copyRange(n, h, 0, fi.Size()); errors.Is(err, errNoCopyRange) {
		_, err = io.Copy(io.NewOffsetWriter(n, 0), io.NewSectionReader(h, 0, fi.Size()))
		if err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	if err := n.Chmod(fi.Mode().Perm()); err != nil {
		return nil, err
	}
	if err := n.Sync(); err != nil {
		return nil, err
	}
	if err := root.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("unshare %s: %w", path, err)
	}
	ok = true
	return n, syncDir(filepath.Join(root.Name(), filepath.FromSlash(parentOf(path))))
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
	if shared, err := linked(h); err != nil || shared {
		h.Close()
		return nil // handle gives the file an inode of its own first
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
		_, err := t.readFileAt(s.file, p[:s.n], s.off)
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
	return &rangeReader{t: t, base: off, size: n, segs: t.m.segments(off, n)}
}

// rangeReader reads a byte range of a tree; it is an io.ReadSeeker within
// the range. Read goes through the tree's shared read handles (pread),
// WriteTo through files of its own (sendfile needs a file offset). It is not
// safe for concurrent use.
type rangeReader struct {
	t          *tree
	base, size int64 // the range in the byte stream
	pos        int64 // the position in the range
	segs       []segment
	done       int64    // bytes of segs[0] read
	cur        *os.File // WriteTo: open on segs[0] at done; nil until needed
}

// Size returns the length of the range.
func (r *rangeReader) Size() int64 { return r.size }

// Remaining returns the bytes from the position to the end of the range:
// what WriteTo writes.
func (r *rangeReader) Remaining() int64 { return max(0, r.size-r.pos) }

func (r *rangeReader) openSeg() error {
	s := r.segs[0]
	h, err := r.t.root.Open(r.t.path(s.file))
	if err != nil {
		return err
	}
	if _, err := h.Seek(s.off+r.done, io.SeekStart); err != nil {
		h.Close()
		return err
	}
	r.cur = h
	return nil
}

func (r *rangeReader) nextSeg() {
	if r.cur != nil {
		r.cur.Close()
		r.cur = nil
	}
	r.segs, r.done = r.segs[1:], 0
}

func (r *rangeReader) Read(p []byte) (int, error) {
	for len(r.segs) > 0 {
		s := r.segs[0]
		if r.done == s.n {
			r.nextSeg()
			continue
		}
		want := min(int64(len(p)), s.n-r.done)
		n, err := r.t.readFileAt(s.file, p[:want], s.off+r.done)
		r.done += int64(n)
		r.pos += int64(n)
		if err == io.EOF {
			if int64(n) == want {
				err = nil
			} else {
				err = io.ErrUnexpectedEOF // the file is shorter than the manifest says
			}
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
		n, err := io.CopyN(w, r.cur, r.segs[0].n-r.done)
		total += n
		r.done += n
		r.pos += n
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

// Seek implements io.Seeker within the range.
func (r *rangeReader) Seek(offset int64, whence int) (int64, error) {
	pos, err := seekPos(r.pos, r.size, offset, whence)
	if err != nil {
		return r.pos, err
	}
	if r.cur != nil {
		r.cur.Close()
		r.cur = nil
	}
	r.pos, r.segs, r.done = pos, nil, 0
	if pos < r.size {
		r.segs = r.t.m.segments(r.base+pos, r.size-pos)
	}
	return pos, nil
}

// seekPos computes a new position as io.Seeker does, for a reader of size
// bytes now at pos. A position past the end is allowed: reads there end.
func seekPos(pos, size, offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += pos
	case io.SeekEnd:
		offset += size
	default:
		return 0, errors.New("seek: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("seek: negative position")
	}
	return offset, nil
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
	for _, m := range []map[int]*os.File{t.open, t.direct, t.read} {
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

// tarBlock is the tar format's block: headers take whole blocks, contents
// are padded to one, and two zero blocks end the archive (POSIX pax, ustar).
const tarBlock = 512

// TarReader reads a complete share as a tar stream: its directories (the top
// one first) and files, each below the share's name, in path order, so a
// parent comes before its children. Entries carry the manifest's modes
// (as a download applies them) and an mtime of the share's creation in its
// store, and use the pax format (archive/tar's FormatPAX: a pax extended
// header holds what ustar cannot, such as long or non-ASCII paths), with the
// real names. The stream's bytes depend only on the manifest and the
// creation time; its size is known before a byte is read.
//
// A TarReader is an io.ReadSeeker; its WriteTo copies file contents with
// io.CopyN, so a writer that can sendfile does. Every chunk is checked
// before its bytes leave (see verify.go): a damaged one ends the stream with
// an error wrapping ErrChunkNotHeld. It is not safe for concurrent use; the
// caller closes it.
type TarReader struct {
	t     *tree
	mtime time.Time
	ents  []tarEntry
	size  int64
	pos   int64

	hdrFor int    // the entry hdr was encoded for, or -1
	hdr    []byte // its encoded header blocks
	fileK  int    // the file f is open on, or -1
	f      *os.File

	// check, if set, is called before content bytes [off, off+n) of the
	// share's byte stream are read: the share checks their chunks (see
	// verify.go).
	check func(off, n int64) error
}

// tarEntry is one member of the stream.
type tarEntry struct {
	off  int64 // where its header starts
	hdr  int64 // bytes of its header blocks
	file int   // index in Files, or -1 for a directory
	dir  int   // index in Dirs, or -1 for the top directory; directories only
}

func (e tarEntry) isDir() bool { return e.file < 0 }

// OpenTar returns a reader of a complete share as a tar stream.
func (s *Share) OpenTar() (*TarReader, error) {
	if !s.Complete() {
		return nil, fmt.Errorf("%w: %s", ErrIncomplete, s.m.id)
	}
	r, err := newTarReader(s.tree, s.created.Truncate(time.Second))
	if err == nil {
		r.check = s.checkRange
	}
	return r, err
}

// WriteTar writes a complete share as a tar stream (see TarReader).
func (s *Share) WriteTar(w io.Writer) error {
	r, err := s.OpenTar()
	if err != nil {
		return err
	}
	defer r.Close()
	_, err = r.WriteTo(w)
	return err
}

func newTarReader(t *tree, mtime time.Time) (*TarReader, error) {
	m := t.m
	r := &TarReader{t: t, mtime: mtime, hdrFor: -1, fileK: -1}
	r.ents = make([]tarEntry, 0, 1+len(m.dirs)+len(m.files))
	if m.IsDir() {
		// Dirs and Files are each sorted by path: merge them.
		r.ents = append(r.ents, tarEntry{file: -1, dir: -1})
		d, f := 0, 0
		for d < len(m.dirs) || f < len(m.files) {
			if f == len(m.files) || (d < len(m.dirs) && m.dirs[d].Path < m.files[f].Path) {
				r.ents = append(r.ents, tarEntry{file: -1, dir: d})
				d++
			} else {
				r.ents = append(r.ents, tarEntry{file: f})
				f++
			}
		}
	} else {
		r.ents = append(r.ents, tarEntry{file: 0})
	}
	var off int64
	for k := range r.ents {
		h, err := encodeTarHeader(r.header(k))
		if err != nil {
			return nil, fmt.Errorf("tar %s: %w", m.id, err)
		}
		r.ents[k].off, r.ents[k].hdr = off, int64(len(h))
		off += int64(len(h)) + padded(r.fileSize(k))
	}
	r.size = off + 2*tarBlock
	return r, nil
}

// padded rounds n up to whole tar blocks.
func padded(n int64) int64 { return (n + tarBlock - 1) / tarBlock * tarBlock }

func (r *TarReader) fileSize(k int) int64 {
	if e := r.ents[k]; !e.isDir() {
		return r.t.m.files[e.file].Size
	}
	return 0
}

// header returns entry k's tar header.
func (r *TarReader) header(k int) *tar.Header {
	m, e := r.t.m, r.ents[k]
	switch {
	case !e.isDir():
		f := m.files[e.file]
		return &tar.Header{Typeflag: tar.TypeReg, Name: m.filePath(e.file), Size: f.Size, Mode: int64(f.Mode & modeMask),
			ModTime: r.mtime, Format: tar.FormatPAX}
	case e.dir < 0:
		return &tar.Header{Typeflag: tar.TypeDir, Name: m.name + "/", Mode: int64(dirMode(m.Mode())), ModTime: r.mtime, Format: tar.FormatPAX}
	default:
		d := m.dirs[e.dir]
		return &tar.Header{Typeflag: tar.TypeDir, Name: m.name + "/" + d.Path + "/", Mode: int64(dirMode(d.Mode)), ModTime: r.mtime, Format: tar.FormatPAX}
	}
}

// encodeTarHeader returns the blocks archive/tar writes for h: a pax
// extended header if one is needed, then the header block.
func encodeTarHeader(h *tar.Header) ([]byte, error) {
	var buf bytes.Buffer
	if err := tar.NewWriter(&buf).WriteHeader(h); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Size returns the stream's length in bytes.
func (r *TarReader) Size() int64 { return r.size }

// Remaining returns the bytes from the position to the end: what WriteTo
// writes.
func (r *TarReader) Remaining() int64 { return max(0, r.size-r.pos) }

// at finds where pos lies: entry k (-1: in the end blocks) and the offset in
// that entry.
func (r *TarReader) at(pos int64) (k int, rel int64) {
	k = sort.Search(len(r.ents), func(k int) bool { return r.ents[k].off > pos }) - 1
	last := r.ents[len(r.ents)-1]
	if k == len(r.ents)-1 && pos >= last.off+last.hdr+padded(r.fileSize(k)) {
		return -1, 0
	}
	return k, pos - r.ents[k].off
}

// headerOf returns entry k's encoded header, encoding it once.
func (r *TarReader) headerOf(k int) ([]byte, error) {
	if r.hdrFor != k {
		h, err := encodeTarHeader(r.header(k))
		if err != nil {
			return nil, err
		}
		r.hdr, r.hdrFor = h, k
	}
	return r.hdr, nil
}

// fileOf returns a handle on entry k's file.
func (r *TarReader) fileOf(k int) (*os.File, error) {
	if r.fileK != k {
		r.closeFile()
		f, err := r.t.root.Open(r.t.path(r.ents[k].file))
		if err != nil {
			return nil, err
		}
		r.f, r.fileK = f, k
	}
	return r.f, nil
}

func (r *TarReader) closeFile() {
	if r.f != nil {
		r.f.Close()
		r.f, r.fileK = nil, -1
	}
}

var tarZeros [tarBlock]byte

// Read implements io.Reader.
func (r *TarReader) Read(p []byte) (int, error) {
	if r.pos >= r.size {
		return 0, io.EOF
	}
	k, rel := r.at(r.pos)
	var n int
	switch {
	case k < 0: // the end blocks
		n = copy(p, tarZeros[:min(int64(len(tarZeros)), r.size-r.pos)])
	case rel < r.ents[k].hdr:
		h, err := r.headerOf(k)
		if err != nil {
			return 0, err
		}
		n = copy(p, h[rel:])
	case rel-r.ents[k].hdr < r.fileSize(k):
		in := rel - r.ents[k].hdr
		want := min(int64(len(p)), r.fileSize(k)-in)
		if err := r.checkContent(k, in, want); err != nil {
			return 0, err
		}
		f, err := r.fileOf(k)
		if err != nil {
			return 0, err
		}
		n, err = f.ReadAt(p[:want], in)
		if err == io.EOF && n == 0 {
			return 0, fmt.Errorf("%s: %w (file is shorter than the manifest says)", r.t.path(r.ents[k].file), io.ErrUnexpectedEOF)
		}
		if err != nil && err != io.EOF {
			return n, err
		}
	default: // padding after the content
		end := r.ents[k].hdr + padded(r.fileSize(k))
		n = copy(p, tarZeros[:end-rel])
	}
	r.pos += int64(n)
	return n, nil
}

// WriteTo implements io.WriterTo: it writes from the position to the end.
func (r *TarReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for r.pos < r.size {
		k, rel := r.at(r.pos)
		var n int64
		var err error
		switch {
		case k < 0 || rel >= r.ents[k].hdr+r.fileSize(k): // zeros: padding or end blocks
			end := r.size
			if k >= 0 {
				end = r.ents[k].off + r.ents[k].hdr + padded(r.fileSize(k))
			}
			var m int
			m, err = w.Write(tarZeros[:min(int64(len(tarZeros)), end-r.pos)])
			n = int64(m)
		case rel < r.ents[k].hdr:
			var h []byte
			if h, err = r.headerOf(k); err == nil {
				var m int
				m, err = w.Write(h[rel:])
				n = int64(m)
			}
		default:
			in := rel - r.ents[k].hdr
			// At most a checked piece at a time: the loop comes back for
			// the rest of the file.
			piece := min(r.fileSize(k)-in, tarCheckPiece)
			var f *os.File
			if err = r.checkContent(k, in, piece); err == nil {
				f, err = r.fileOf(k)
			}
			if err == nil {
				if _, err = f.Seek(in, io.SeekStart); err == nil {
					n, err = io.CopyN(w, f, piece)
					if err == io.EOF {
						err = fmt.Errorf("%s: %w (file is shorter than the manifest says)", r.t.path(r.ents[k].file), io.ErrUnexpectedEOF)
					}
				}
			}
		}
		r.pos += n
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// tarCheckPiece is how much of a file WriteTo checks, then sends, at a time.
const tarCheckPiece = verifyPiece

// checkContent checks bytes [in, in+n) of entry k's file (see check).
func (r *TarReader) checkContent(k int, in, n int64) error {
	if r.check == nil {
		return nil
	}
	return r.check(r.t.m.offsets[r.ents[k].file]+in, n)
}

// Seek implements io.Seeker.
func (r *TarReader) Seek(offset int64, whence int) (int64, error) {
	pos, err := seekPos(r.pos, r.size, offset, whence)
	if err != nil {
		return r.pos, err
	}
	r.pos = pos
	return pos, nil
}

// Close releases the open file.
func (r *TarReader) Close() error {
	r.closeFile()
	return nil
}
