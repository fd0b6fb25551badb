package transfer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/zeebo/blake3"
)

// Manifest limits.
const (
	ManifestVersion = 1
	MaxManifestSize = 64 << 20 // bytes; ~1M chunk hashes, i.e. 1 TiB at 1 MiB chunks
	MaxFiles        = 1 << 20  // file entries, and separately dir entries, per share
	MaxShareSize    = 1 << 50  // bytes in one share (1 PiB); keeps offsets far from overflow
)

// File is one regular file of a share.
type File struct {
	Path string      // relative to the share (a single-file share: the name)
	Size int64       // bytes
	Mode fs.FileMode // permission bits only
}

// Dir is one directory inside a directory share. The top directory itself is
// not listed in Dirs; given to NewManifest as the Path ".", it records the
// top directory's mode (see Manifest.Mode).
type Dir struct {
	Path string
	Mode fs.FileMode // permission bits only
}

// Manifest describes a share: its files, chunk size and chunk hashes. A
// Manifest is immutable and safe for concurrent use; get one from
// DecodeManifest, VerifyManifest, BuildManifest or NewManifest.
type Manifest struct {
	name      string
	dir       bool
	mode      fs.FileMode // a directory share's top directory
	chunkSize int64
	files     []File
	dirs      []Dir
	chunks    []Hash

	size    int64
	offsets []int64 // offsets[k]: where files[k] starts in the share's byte stream
	raw     []byte  // canonical encoding; the ID is its hash
	id      ID
}

// Name returns the share's name: the file's or the top directory's name.
func (m *Manifest) Name() string { return m.name }

// IsDir reports whether the share is a directory tree.
func (m *Manifest) IsDir() bool { return m.dir }

// Mode returns the permission bits of the share's top entry: the file of a
// single-file share, the top directory of a directory share (0o755 for a
// manifest that does not record it: those made before it was recorded).
func (m *Manifest) Mode() fs.FileMode {
	if !m.dir {
		return m.files[0].Mode
	}
	return m.mode
}

// ChunkSize returns the chunk size in bytes.
func (m *Manifest) ChunkSize() int64 { return m.chunkSize }

// Size returns the total size of the share's files, in bytes.
func (m *Manifest) Size() int64 { return m.size }

// Files returns the files in stream order; the caller must not modify them.
func (m *Manifest) Files() []File { return m.files }

// Dirs returns the subdirectories of a directory share, sorted.
func (m *Manifest) Dirs() []Dir { return m.dirs }

// NumChunks returns the number of chunks.
func (m *Manifest) NumChunks() int { return len(m.chunks) }

// ChunkHash returns chunk i's hash.
func (m *Manifest) ChunkHash(i int) Hash { return m.chunks[i] }

// ID returns the share's ID.
func (m *Manifest) ID() ID { return m.id }

// Bytes returns the manifest's encoding, the bytes its ID addresses. The
// caller must not modify them.
func (m *Manifest) Bytes() []byte { return m.raw }

// ChunkRange returns where chunk i lies in the share's byte stream.
func (m *Manifest) ChunkRange(i int) (off, n int64) {
	off = int64(i) * m.chunkSize
	return off, min(m.chunkSize, m.size-off)
}

// ChunkLen returns chunk i's length in bytes.
func (m *Manifest) ChunkLen(i int) int {
	_, n := m.ChunkRange(i)
	return int(n)
}

// checkIndex returns ErrChunkRange unless 0 <= i < NumChunks.
func (m *Manifest) checkIndex(i int) error {
	if i < 0 || i >= len(m.chunks) {
		return fmt.Errorf("%w: %d of %d", ErrChunkRange, i, len(m.chunks))
	}
	return nil
}

// filePath returns file k's path relative to the directory holding the share.
func (m *Manifest) filePath(k int) string {
	if !m.dir {
		return m.name
	}
	return m.name + "/" + m.files[k].Path
}

// allFiles returns the indexes of every file.
func (m *Manifest) allFiles() []int {
	all := make([]int, len(m.files))
	for k := range all {
		all[k] = k
	}
	return all
}

// segment is the part of one file that a byte range of the stream covers.
type segment struct {
	file int   // index into Files
	off  int64 // offset in the file
	n    int64
}

// segments maps [off, off+n) of the byte stream onto files, skipping empty
// files. The range must lie within the share.
func (m *Manifest) segments(off, n int64) []segment {
	// The first file that ends after off.
	k := sort.Search(len(m.files), func(k int) bool { return m.offsets[k]+m.files[k].Size > off })
	var segs []segment
	for ; n > 0 && k < len(m.files); k++ {
		f := m.files[k]
		if f.Size == 0 {
			continue
		}
		in := off - m.offsets[k]
		take := min(n, f.Size-in)
		segs = append(segs, segment{file: k, off: in, n: take})
		off += take
		n -= take
	}
	return segs
}

// wireManifest is the JSON form. Field order here is the encoding's order.
type wireManifest struct {
	Version   int        `json:"version"`
	Name      string     `json:"name"`
	Type      string     `json:"type"`
	Mode      *uint32    `json:"mode,omitempty"` // a directory share's top directory
	ChunkSize int64      `json:"chunk_size"`
	ChunkHash string     `json:"chunk_hash"`
	Size      int64      `json:"size"`
	Files     []wireFile `json:"files"`
	Dirs      []wireFile `json:"dirs,omitempty"`
	Chunks    []string   `json:"chunks"`
}

type wireFile struct {
	Path string `json:"path"`
	Size *int64 `json:"size,omitempty"` // files only
	Mode uint32 `json:"mode"`
}

const (
	typeFile  = "file"
	typeDir   = "dir"
	hashBLAKE = "blake3"
)

// NewManifest validates a share's description and encodes it. Files and dirs
// may come in any order; they are sorted. Used by BuildManifest and
// Store.Import, and by tests that need a manifest without files on disk.
func NewManifest(name string, isDir bool, chunkSize int64, files []File, dirs []Dir, chunks []Hash) (*Manifest, error) {
	files = slices.Clone(files)
	dirs = slices.Clone(dirs)
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	slices.SortFunc(dirs, func(a, b Dir) int { return strings.Compare(a.Path, b.Path) })
	w := wireManifest{
		Version:   ManifestVersion,
		Name:      name,
		Type:      typeFile,
		ChunkSize: chunkSize,
		ChunkHash: hashBLAKE,
		Files:     make([]wireFile, len(files)),
		Chunks:    make([]string, len(chunks)),
	}
	if isDir {
		w.Type = typeDir
	}
	for k, f := range files {
		size := f.Size
		w.Files[k] = wireFile{Path: f.Path, Size: &size, Mode: uint32(f.Mode)}
		w.Size += f.Size
	}
	for _, d := range dirs {
		if d.Path == "." {
			mode := uint32(d.Mode)
			w.Mode = &mode
			continue
		}
		w.Dirs = append(w.Dirs, wireFile{Path: d.Path, Mode: uint32(d.Mode)})
	}
	for i, h := range chunks {
		w.Chunks[i] = h.String()
	}
	raw, err := encodeWire(&w)
	if err != nil {
		return nil, err
	}
	return DecodeManifest(raw)
}

func encodeWire(w *wireManifest) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(w); err != nil {
		return nil, fmt.Errorf("%w: encode: %v", ErrBadManifest, err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// VerifyManifest decodes raw and checks that it is the manifest of id.
func VerifyManifest(id ID, raw []byte) (*Manifest, error) {
	if len(raw) > MaxManifestSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrBadManifest, len(raw), MaxManifestSize)
	}
	if got := idOf(raw); got != id {
		return nil, fmt.Errorf("%w: bytes hash to %s, not %s", ErrBadManifest, got, id)
	}
	return DecodeManifest(raw)
}

// DecodeManifest decodes and validates a manifest from untrusted bytes. It
// accepts only the canonical encoding (what NewManifest produces), so one
// share has exactly one ID.
func DecodeManifest(raw []byte) (*Manifest, error) {
	if len(raw) > MaxManifestSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrBadManifest, len(raw), MaxManifestSize)
	}
	var w wireManifest
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadManifest, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data", ErrBadManifest)
	}
	m, err := fromWire(&w)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadManifest, err)
	}
	canon, err := encodeWire(&w)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(canon, raw) {
		return nil, fmt.Errorf("%w: not in canonical form", ErrBadManifest)
	}
	m.raw = bytes.Clone(raw)
	m.id = idOf(m.raw)
	return m, nil
}

func fromWire(w *wireManifest) (*Manifest, error) {
	if w.Version != ManifestVersion {
		return nil, fmt.Errorf("version %d, want %d", w.Version, ManifestVersion)
	}
	if w.ChunkHash != hashBLAKE {
		return nil, fmt.Errorf("chunk hash %q, want %q", w.ChunkHash, hashBLAKE)
	}
	if err := ValidName(w.Name); err != nil {
		return nil, fmt.Errorf("name: %w", err)
	}
	m := &Manifest{name: w.Name, chunkSize: w.ChunkSize}
	switch w.Type {
	case typeFile:
	case typeDir:
		m.dir = true
	default:
		return nil, fmt.Errorf("type %q, want %q or %q", w.Type, typeFile, typeDir)
	}
	if w.ChunkSize < MinChunkSize || w.ChunkSize > MaxChunkSize {
		return nil, fmt.Errorf("chunk size %d outside [%d, %d]", w.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	if len(w.Files) > MaxFiles || len(w.Dirs) > MaxFiles {
		return nil, fmt.Errorf("more than %d entries", MaxFiles)
	}
	if w.Files == nil || w.Chunks == nil {
		return nil, fmt.Errorf("files and chunks must be arrays")
	}
	if !m.dir && (len(w.Files) != 1 || w.Files[0].Path != w.Name || len(w.Dirs) != 0 || w.Mode != nil) {
		return nil, fmt.Errorf("a file share has exactly one file, named as the share, and no dirs or mode")
	}
	m.mode = 0o755
	if w.Mode != nil {
		if *w.Mode&^uint32(fs.ModePerm) != 0 {
			return nil, fmt.Errorf("mode %#o has bits beyond permissions", *w.Mode)
		}
		m.mode = fs.FileMode(*w.Mode)
	}

	m.files = make([]File, len(w.Files))
	m.offsets = make([]int64, len(w.Files))
	filePaths := make(map[string]bool, len(w.Files))
	var total int64
	for k, f := range w.Files {
		if m.dir {
			if err := ValidPath(f.Path); err != nil {
				return nil, err
			}
		}
		if k > 0 && f.Path <= w.Files[k-1].Path {
			return nil, fmt.Errorf("files not sorted or not unique at %q", f.Path)
		}
		if f.Size == nil || *f.Size < 0 || *f.Size > MaxShareSize {
			return nil, fmt.Errorf("file %q: size missing or out of range", f.Path)
		}
		if f.Mode&^uint32(fs.ModePerm) != 0 {
			return nil, fmt.Errorf("file %q: mode %#o has bits beyond permissions", f.Path, f.Mode)
		}
		m.files[k] = File{Path: f.Path, Size: *f.Size, Mode: fs.FileMode(f.Mode)}
		m.offsets[k] = total
		total += *f.Size
		if total > MaxShareSize {
			return nil, fmt.Errorf("share larger than %d bytes", int64(MaxShareSize))
		}
		filePaths[f.Path] = true
	}
	if total != w.Size {
		return nil, fmt.Errorf("size %d, but files add up to %d", w.Size, total)
	}
	m.size = total

	dirPaths := make(map[string]bool, len(w.Dirs))
	for k, d := range w.Dirs {
		if err := ValidPath(d.Path); err != nil {
			return nil, err
		}
		if k > 0 && d.Path <= w.Dirs[k-1].Path {
			return nil, fmt.Errorf("dirs not sorted or not unique at %q", d.Path)
		}
		if d.Size != nil {
			return nil, fmt.Errorf("dir %q has a size", d.Path)
		}
		if d.Mode&^uint32(fs.ModePerm) != 0 {
			return nil, fmt.Errorf("dir %q: mode %#o has bits beyond permissions", d.Path, d.Mode)
		}
		if filePaths[d.Path] {
			return nil, fmt.Errorf("%q is both a file and a dir", d.Path)
		}
		m.dirs = append(m.dirs, Dir{Path: d.Path, Mode: fs.FileMode(d.Mode)})
		dirPaths[d.Path] = true
	}
	// No file or dir may sit below a file.
	for _, set := range []map[string]bool{filePaths, dirPaths} {
		for p := range set {
			for i := strings.LastIndexByte(p, '/'); i > 0; i = strings.LastIndexByte(p[:i], '/') {
				if filePaths[p[:i]] {
					return nil, fmt.Errorf("%q lies below the file %q", p, p[:i])
				}
			}
		}
	}

	want := (total + w.ChunkSize - 1) / w.ChunkSize
	if int64(len(w.Chunks)) != want {
		return nil, fmt.Errorf("%d chunk hashes for %d bytes in %d-byte chunks, want %d", len(w.Chunks), total, w.ChunkSize, want)
	}
	m.chunks = make([]Hash, len(w.Chunks))
	for i, s := range w.Chunks {
		h, err := ParseHash(s)
		if err != nil {
			return nil, fmt.Errorf("chunk %d: %v", i, err)
		}
		if h.String() != s { // upper-case hex is not canonical
			return nil, fmt.Errorf("chunk %d: hash not in lower-case hex", i)
		}
		m.chunks[i] = h
	}
	return m, nil
}

// VerifyChunk checks that data is chunk i of the share. On a mismatch it
// returns a *ChunkError; the caller fills in its Source.
func (m *Manifest) VerifyChunk(i int, data []byte) error {
	if err := m.checkIndex(i); err != nil {
		return err
	}
	return m.checkHash(i, len(data), HashChunk(data))
}

// checkHash checks that n bytes hashing to sum are chunk i.
func (m *Manifest) checkHash(i, n int, sum Hash) error {
	if err := m.checkIndex(i); err != nil {
		return err
	}
	if n != m.ChunkLen(i) || sum != m.chunks[i] {
		return &ChunkError{ID: m.id, Index: i, Want: m.chunks[i], Got: sum, Len: n}
	}
	return nil
}

// chunker hashes a byte stream into chunks as it is written.
type chunker struct {
	size   int64
	h      *blake3.Hasher
	n      int64 // bytes of the current chunk so far
	total  int64
	hashes []Hash
}

func newChunker(size int64) *chunker { return &chunker{size: size, h: blake3.New()} }

func (c *chunker) Write(p []byte) (int, error) {
	written := len(p)
	for len(p) > 0 {
		take := min(int64(len(p)), c.size-c.n)
		c.h.Write(p[:take])
		c.n += take
		c.total += take
		p = p[take:]
		if c.n == c.size {
			c.cut()
		}
	}
	return written, nil
}

func (c *chunker) cut() {
	var h Hash
	c.h.Sum(h[:0])
	c.hashes = append(c.hashes, h)
	c.h.Reset()
	c.n = 0
}

// finish returns the chunk hashes, cutting the last partial chunk.
func (c *chunker) finish() []Hash {
	if c.n > 0 {
		c.cut()
	}
	return c.hashes
}

// hashBufSize is the read buffer for hashing local files: large reads let
// BLAKE3 use its widest SIMD path.
const hashBufSize = 1 << 20

// BuildOptions configures BuildManifest. The zero value works.
type BuildOptions struct {
	ChunkSize int64 // 0: ChunkSizeFor the share's size
	// Skipped, if set, is called for each entry of a directory that is left
	// out because it is not a regular file or directory (symlinks, devices,
	// sockets, pipes).
	Skipped func(path string, mode fs.FileMode)
	// Progress, if set, is called with the bytes hashed so far.
	Progress func(hashed int64)
}

// BuildManifest reads the file or directory tree at path and returns its
// manifest. What path names is what gets shared, or an error that says why
// not:
//
//   - A symbolic link given as path is followed, through any chain of links,
//     as cp -r, tar -h and rsync -L treat their arguments; the share keeps
//     the name given (the link's). A dangling link, a loop of links, and a
//     link to anything but a regular file or directory are errors naming the
//     chain.
//   - Inside a directory, symbolic links and special files (devices, pipes,
//     sockets) are skipped and reported to BuildOptions.Skipped; links are
//     not followed, so a tree cannot reach outside itself or loop.
//   - A directory left without any regular file because every entry that
//     could hold one was skipped is an error: sharing it would send nothing
//     of what the user named. An empty directory, or one holding only empty
//     directories, is shared as it is (the caller may warn).
//
// A file that changes size while it is read is an error.
func BuildManifest(ctx context.Context, path string, opts BuildOptions) (*Manifest, error) {
	cs := opts.ChunkSize
	if cs != 0 && (cs < MinChunkSize || cs > MaxChunkSize) {
		return nil, fmt.Errorf("chunk size %d outside [%d, %d]", cs, MinChunkSize, MaxChunkSize)
	}
	path = filepath.Clean(path)
	resolved, fi, err := resolveTop(path)
	if err != nil {
		return nil, err
	}
	name := filepath.Base(path)
	if abs, err := filepath.Abs(path); err == nil {
		name = filepath.Base(abs) // "." becomes the directory's name
	}
	if err := ValidName(name); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var files []File
	var dirs []Dir
	switch {
	case fi.Mode().IsRegular():
		files = []File{{Path: name, Size: fi.Size(), Mode: fi.Mode().Perm()}}
	case fi.IsDir():
		var skipped int
		files, dirs, skipped, err = walkTree(ctx, resolved, func(rel string, mode fs.FileMode) {
			if opts.Skipped != nil {
				opts.Skipped(filepath.Join(path, filepath.FromSlash(rel)), mode)
			}
		})
		if err != nil {
			return nil, err
		}
		if len(files) == 0 && skipped > 0 {
			return nil, fmt.Errorf("%s: nothing to share: it holds no regular file, and its %d other %s, which share skips inside a directory (to share what a link points to, name the link itself: share put %s)",
				path, skipped, plural(skipped, "entry is a symbolic link or special file", "entries are symbolic links or special files"), filepath.Join(path, "LINK"))
		}
		dirs = append(dirs, Dir{Path: ".", Mode: fi.Mode().Perm()}) // the top directory
	default:
		return nil, fmt.Errorf("%s: %s: share shares regular files and directories only", describeTop(path), fileType(fi.Mode()))
	}

	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	if cs == 0 {
		var total int64
		for _, f := range files {
			total += f.Size
		}
		cs = ChunkSizeFor(total)
	}
	c := newChunker(cs)
	buf := make([]byte, hashBufSize)
	var hashed int64
	for _, f := range files {
		p := resolved
		if fi.IsDir() {
			p = filepath.Join(resolved, filepath.FromSlash(f.Path))
		}
		if err := hashFile(ctx, p, f.Size, c, buf, func(n int64) {
			hashed += n
			if opts.Progress != nil {
				opts.Progress(hashed)
			}
		}); err != nil {
			return nil, err
		}
	}
	return NewManifest(name, fi.IsDir(), cs, files, dirs, c.finish())
}

// maxLinkChain is how many symbolic links in a row resolveTop follows, as
// Linux's path resolution does (MAXSYMLINKS, 40) before it gives ELOOP.
const maxLinkChain = 40

// resolveTop follows path to what it names: the real path with every
// symbolic link resolved, and its FileInfo. A path that does not lead to an
// existing file is an error that shows the chain of links, if any.
func resolveTop(path string) (string, fs.FileInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		lfi, lerr := os.Lstat(path)
		if lerr != nil || lfi.Mode()&fs.ModeSymlink == 0 {
			return "", nil, err // not a link: the plain error ("no such file or directory")
		}
		chain, loop := linkChain(path)
		switch {
		case loop:
			return "", nil, fmt.Errorf("%s: a loop of symbolic links, nothing to share", strings.Join(chain, " -> "))
		case errors.Is(err, fs.ErrNotExist):
			return "", nil, fmt.Errorf("%s: a dangling symbolic link: %s does not exist", strings.Join(chain, " -> "), chain[len(chain)-1])
		}
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return "", nil, fmt.Errorf("%s: %w", strings.Join(chain, " -> "), err)
	}
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", nil, err
	}
	return resolved, fi, nil
}

// linkChain lists path and the targets of the chain of symbolic links that
// starts there, for messages: it stops at a name that is not a link (or does
// not exist), and reports a loop when a link comes back or the chain is
// longer than maxLinkChain.
func linkChain(path string) (chain []string, loop bool) {
	chain = []string{path}
	seen := map[string]bool{}
	cur := path
	for range maxLinkChain {
		abs, err := filepath.Abs(cur)
		if err != nil {
			return chain, false
		}
		if seen[abs] {
			return chain, true
		}
		seen[abs] = true
		target, err := os.Readlink(cur)
		if err != nil {
			return chain, false
		}
		chain = append(chain, target)
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(cur), target)
		}
		cur = target
	}
	return chain, true
}

// describeTop names path for a message: itself, or the chain of symbolic
// links that starts there.
func describeTop(path string) string {
	if chain, _ := linkChain(path); len(chain) > 1 {
		return strings.Join(chain, " -> ")
	}
	return path
}

// fileType names the type of a file that is not a regular file or directory.
func fileType(m fs.FileMode) string {
	switch {
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	}
	return "not a regular file or directory"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// hashFile feeds exactly size bytes of the file at p to c.
func hashFile(ctx context.Context, p string, size int64, c *chunker, buf []byte, progress func(int64)) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	var done int64
	for done < size {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := io.ReadFull(f, buf[:min(int64(len(buf)), size-done)])
		c.Write(buf[:n])
		done += int64(n)
		progress(int64(n))
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return fmt.Errorf("%s: changed while reading (shrank from %d to %d bytes)", p, size, done)
		}
		if err != nil {
			return err
		}
	}
	if n, _ := f.Read(buf[:1]); n > 0 {
		return fmt.Errorf("%s: changed while reading (grew past %d bytes)", p, size)
	}
	return nil
}

// walkTree lists the regular files and subdirectories under root, with paths
// relative to root in slash form, and counts the entries it skips (symbolic
// links and special files), reporting each to skipped with its relative path.
func walkTree(ctx context.Context, root string, skipped func(rel string, mode fs.FileMode)) ([]File, []Dir, int, error) {
	var files []File
	var dirs []Dir
	var nskipped int
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if err := ValidPath(rel); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case info.Mode().IsRegular():
			files = append(files, File{Path: rel, Size: info.Size(), Mode: info.Mode().Perm()})
		case info.IsDir():
			dirs = append(dirs, Dir{Path: rel, Mode: info.Mode().Perm()})
		default:
			nskipped++
			if skipped != nil {
				skipped(rel, info.Mode())
			}
		}
		if len(files) > MaxFiles || len(dirs) > MaxFiles {
			return fmt.Errorf("%s: more than %d entries", root, MaxFiles)
		}
		return nil
	})
	return files, dirs, nskipped, err
}
