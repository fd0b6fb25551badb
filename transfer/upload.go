package transfer

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Upload sessions let a client that cannot hash (a web page) upload a share
// resumably: it declares the share's layout (name, files with relative paths,
// sizes and modes, chunk size), gets a session, sends the chunks' bytes in
// any order and any number of requests, and commits. The receiver hashes each
// chunk as it arrives (chunks are independent BLAKE3 hashes, so order does
// not matter) and writes it in place; the commit builds the manifest from
// those hashes, so the share gets the same ID as `share put` of the same
// content with the same chunk size. After a cut connection or a reload the
// client asks which chunks the session holds and sends only the others.
//
// This is the idea of the IETF draft "Resumable Uploads for HTTP"
// (draft-ietf-httpbis-resumable-upload) and of tus.io (an upload resource
// created first, then appended to, its state queryable), adapted to chunks:
// a chunk is the unit of progress rather than a byte offset, so several
// requests can be in flight at once, and the session is found again by a key
// the client derives from its files (name, size, modification time, paths).
//
// On disk a session is DIR/uploads/ID/:
//
//	upload.json  the declaration (UploadSpec) and the creation time
//	journal      the chunks received, with their hashes (see below)
//	data/NAME    the share's file or tree, allocated at full size
//
// The journal starts with the magic uploadMagic, then 40-byte records: a
// big-endian uint32 tag, a uint32 value and a 32-byte hash. Tag 1: chunk
// `value` was received and written, with that hash. Tag 2: the first `value`
// records are durable (their data was fsynced before). Records after the last
// checkpoint are re-hashed from disk on open and dropped if the data does not
// match, as for a share's have journal. A torn or unknown record ends it.
const (
	uploadsDir        = "uploads"
	uploadSpecFile    = "upload.json"
	uploadJournalFile = "journal"
	uploadMagic       = "shareup1"
	uploadRecordSize  = 40

	// MaxUploadSessions bounds the sessions open at once; more are refused
	// with ErrBusy until some commit or expire.
	MaxUploadSessions = 64
	// MaxUploadKey bounds a session key, in bytes.
	MaxUploadKey = 1024
	// DefaultUploadTTL is how long a session may go without a chunk before
	// it is deleted: an abandoned upload does not keep its disk space.
	DefaultUploadTTL = 24 * time.Hour
)

// UploadSpec declares the share an upload session builds.
type UploadSpec struct {
	Name      string // the share's name
	Dir       bool   // a directory tree (Files' paths relative to it), else one file named Name
	ChunkSize int64  // bytes; 0: ChunkSizeFor the share's size
	Files     []File
	Dirs      []Dir
	// Key is the client's fingerprint of its files (at most MaxUploadKey
	// bytes): Create with the key of an open session of the same layout
	// resumes that session instead of starting another.
	Key string
}

// wireUploadSpec is UploadSpec's JSON form, as clients send it and as
// upload.json keeps it.
type wireUploadSpec struct {
	Name      string     `json:"name"`
	Type      string     `json:"type"` // "file" or "dir"
	ChunkSize int64      `json:"chunk_size,omitempty"`
	Files     []wireFile `json:"files"`
	Dirs      []wireFile `json:"dirs,omitempty"`
	Key       string     `json:"key,omitempty"`
	Created   time.Time  `json:"created,omitzero"` // upload.json only
}

// maxUploadSpecSize bounds a declaration: MaxFiles entries of MaxPathLen
// bytes would be larger, but a manifest is bounded the same way.
const maxUploadSpecSize = MaxManifestSize

// DecodeUploadSpec decodes a declaration from untrusted JSON, e.g.
//
//	{"name":"photos","type":"dir","chunk_size":1048576,"key":"...",
//	 "files":[{"path":"a/b.jpg","size":1234,"mode":420}],"dirs":[{"path":"a","mode":493}]}
//
// A file share has type "file" and one file whose path is the name (path may
// be left out). Modes default to 0644 (files) and 0755 (dirs); the dir "."
// is the top directory of a directory share (0755 if not declared). The
// layout is validated as a manifest's would be (Layout).
func DecodeUploadSpec(raw []byte) (UploadSpec, error) {
	if len(raw) > maxUploadSpecSize {
		return UploadSpec{}, fmt.Errorf("%w: upload declaration of %d bytes, limit %d", ErrBadManifest, len(raw), maxUploadSpecSize)
	}
	var w wireUploadSpec
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return UploadSpec{}, fmt.Errorf("%w: upload declaration: %v", ErrBadManifest, err)
	}
	if dec.More() {
		return UploadSpec{}, fmt.Errorf("%w: upload declaration: trailing data", ErrBadManifest)
	}
	spec, err := w.spec()
	if err != nil {
		return UploadSpec{}, err
	}
	if _, err := spec.Layout(); err != nil {
		return UploadSpec{}, err
	}
	return spec, nil
}

func (w *wireUploadSpec) spec() (UploadSpec, error) {
	s := UploadSpec{Name: w.Name, ChunkSize: w.ChunkSize, Key: w.Key}
	switch w.Type {
	case typeFile:
	case typeDir:
		s.Dir = true
	default:
		return s, fmt.Errorf("%w: upload declaration: type %q, want %q or %q", ErrBadManifest, w.Type, typeFile, typeDir)
	}
	if len(w.Files) > MaxFiles || len(w.Dirs) > MaxFiles {
		return s, fmt.Errorf("%w: upload declaration: more than %d entries", ErrBadManifest, MaxFiles)
	}
	for _, f := range w.Files {
		if f.Size == nil {
			return s, fmt.Errorf("%w: upload declaration: file %q has no size", ErrBadManifest, truncate(f.Path, 80))
		}
		if f.Path == "" && !s.Dir {
			f.Path = w.Name
		}
		s.Files = append(s.Files, File{Path: f.Path, Size: *f.Size, Mode: fs.FileMode(cmp.Or(f.Mode, 0o644))})
	}
	for _, d := range w.Dirs {
		if d.Size != nil {
			return s, fmt.Errorf("%w: upload declaration: dir %q has a size", ErrBadManifest, truncate(d.Path, 80))
		}
		s.Dirs = append(s.Dirs, Dir{Path: d.Path, Mode: fs.FileMode(cmp.Or(d.Mode, 0o755))})
	}
	return s, nil
}

func (s UploadSpec) wire(created time.Time) wireUploadSpec {
	w := wireUploadSpec{Name: s.Name, Type: typeFile, ChunkSize: s.ChunkSize, Key: s.Key, Created: created, Files: []wireFile{}}
	if s.Dir {
		w.Type = typeDir
	}
	for _, f := range s.Files {
		size := f.Size
		w.Files = append(w.Files, wireFile{Path: f.Path, Size: &size, Mode: uint32(f.Mode)})
	}
	for _, d := range s.Dirs {
		w.Dirs = append(w.Dirs, wireFile{Path: d.Path, Mode: uint32(d.Mode)})
	}
	return w
}

// Layout validates the declaration as a manifest (names, paths, order,
// sizes, modes, chunk size, key length) and returns a manifest of that
// layout whose chunk hashes are all zero: it places chunks in files, and is
// never stored or served as a share's manifest.
func (s UploadSpec) Layout() (*Manifest, error) {
	if len(s.Key) > MaxUploadKey {
		return nil, fmt.Errorf("%w: upload key longer than %d bytes", ErrBadManifest, MaxUploadKey)
	}
	var size int64
	for _, f := range s.Files {
		if f.Size < 0 || f.Size > MaxShareSize {
			return nil, fmt.Errorf("%w: file %q: size %d out of range", ErrBadManifest, truncate(f.Path, 80), f.Size)
		}
		size += f.Size
		if size > MaxShareSize {
			return nil, fmt.Errorf("%w: share larger than %d bytes", ErrBadManifest, int64(MaxShareSize))
		}
	}
	cs := cmp.Or(s.ChunkSize, ChunkSizeFor(size))
	if cs < MinChunkSize || cs > MaxChunkSize {
		return nil, fmt.Errorf("%w: chunk size %d outside [%d, %d]", ErrBadManifest, cs, MinChunkSize, MaxChunkSize)
	}
	m, err := NewManifest(s.Name, s.Dir, cs, s.Files, s.dirs(), make([]Hash, (size+cs-1)/cs))
	if err != nil {
		return nil, err
	}
	return m, nil
}

// dirs returns the declared directories, with the top directory's mode (the
// path ".") 0755 unless declared, as a directory usually is and as
// BuildManifest records it.
func (s UploadSpec) dirs() []Dir {
	if !s.Dir || slices.ContainsFunc(s.Dirs, func(d Dir) bool { return d.Path == "." }) {
		return s.Dirs
	}
	return append(slices.Clone(s.Dirs), Dir{Path: ".", Mode: 0o755})
}

// UploadsOptions configures Uploads. The zero value works.
type UploadsOptions struct {
	// TTL: a session that received no chunk for this long is deleted.
	// 0: DefaultUploadTTL.
	TTL time.Duration
	// Committed, if set, is called with each share an upload created (a peer
	// announces it).
	Committed func(*Share)
	Logger    *slog.Logger // nil: slog.Default()
	now       func() time.Time
}

// Uploads holds the upload sessions of a Store, in DIR/uploads. It is safe
// for concurrent use. Expired sessions are deleted whenever sessions are
// created, listed or looked up, and on open.
type Uploads struct {
	st   *Store
	dir  string
	opts UploadsOptions
	log  *slog.Logger

	mu       sync.Mutex
	sessions map[string]*Upload
	closed   bool
}

// OpenUploads opens the upload sessions kept beside st's shares, recovering
// the chunks each had received (see the journal format above). Sessions that
// fail to load are logged and deleted.
func OpenUploads(st *Store, opts UploadsOptions) (*Uploads, error) {
	opts.TTL = cmp.Or(opts.TTL, DefaultUploadTTL)
	if opts.now == nil {
		opts.now = time.Now
	}
	u := &Uploads{st: st, dir: filepath.Join(st.Dir(), uploadsDir), opts: opts, log: cmp.Or(opts.Logger, slog.Default()), sessions: map[string]*Upload{}}
	if err := os.MkdirAll(u.dir, 0o700); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(u.dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		p := filepath.Join(u.dir, e.Name())
		if !validUploadID(e.Name()) {
			os.RemoveAll(p) // a session that was being created or deleted
			continue
		}
		up, err := u.load(e.Name())
		if err != nil {
			u.log.Warn("upload session unreadable; deleting it", "upload", e.Name(), "err", err)
			os.RemoveAll(p)
			continue
		}
		u.sessions[up.id] = up
	}
	u.mu.Lock()
	u.expireLocked()
	u.mu.Unlock()
	return u, nil
}

// uploadIDLen is the length of a session ID: 128 random bits in hex.
const uploadIDLen = 32

func validUploadID(s string) bool {
	if len(s) != uploadIDLen {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// Upload is one upload session. Its methods are safe for concurrent use.
type Upload struct {
	u       *Uploads
	id      string
	spec    UploadSpec
	layout  *Manifest // zero chunk hashes
	dir     string
	created time.Time

	ckMu sync.Mutex // serializes checkpoints and the commit

	mu       sync.Mutex
	tree     *tree
	have     Bitfield
	hashes   []Hash
	journal  *os.File // nil once committed or removed
	records  int
	lastCk   time.Time
	lastUsed time.Time
	writers  int  // Write calls in progress
	done     bool // committed or removed
}

// UploadInfo describes a session.
type UploadInfo struct {
	ID        string    `json:"id"`
	Key       string    `json:"key,omitempty"`
	Name      string    `json:"name"`
	Display   string    `json:"display_name"` // Name as DisplayName shows it
	Type      string    `json:"type"`         // "file" or "dir"
	Size      int64     `json:"size"`         // bytes
	Files     int       `json:"files"`
	ChunkSize int64     `json:"chunk_size"`
	Chunks    int       `json:"chunks"`
	Have      int       `json:"have"`     // chunks received
	Received  int64     `json:"received"` // bytes of those chunks
	Bitfield  []byte    `json:"bitfield"` // chunks received, MSB first (base64 in JSON)
	Created   time.Time `json:"created"`
	Expires   time.Time `json:"expires"` // unless a chunk arrives before
}

// ID returns the session's ID: 32 lower-case hex digits.
func (up *Upload) ID() string { return up.id }

// Layout returns the layout manifest (zero chunk hashes).
func (up *Upload) Layout() *Manifest { return up.layout }

// Info describes the session.
func (up *Upload) Info() UploadInfo {
	up.mu.Lock()
	defer up.mu.Unlock()
	typ := typeFile
	if up.spec.Dir {
		typ = typeDir
	}
	var recv int64
	for i := range up.have.Len() {
		if up.have.Has(i) {
			recv += int64(up.layout.ChunkLen(i))
		}
	}
	return UploadInfo{
		ID: up.id, Key: up.spec.Key, Name: up.layout.Name(), Display: DisplayName(up.layout.Name()), Type: typ, Size: up.layout.Size(), Files: len(up.layout.Files()),
		ChunkSize: up.layout.ChunkSize(), Chunks: up.layout.NumChunks(), Have: up.have.Count(), Received: recv,
		Bitfield: bytes.Clone(up.have.Bytes()), Created: up.created, Expires: up.lastUsed.Add(up.u.opts.TTL),
	}
}

// Holds reports whether the session holds chunk i (false outside the layout).
func (up *Upload) Holds(i int) bool {
	up.mu.Lock()
	defer up.mu.Unlock()
	return i >= 0 && i < up.have.Len() && up.have.Has(i)
}

// Create starts a session for spec, or, if spec has a Key and an open
// session has the same key and layout, returns that one (resumed true).
func (u *Uploads) Create(spec UploadSpec) (up *Upload, resumed bool, err error) {
	layout, err := spec.Layout()
	if err != nil {
		return nil, false, err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil, false, errors.New("upload sessions closed")
	}
	u.expireLocked()
	if spec.Key != "" {
		for _, s := range u.sessions {
			if s.spec.Key == spec.Key && bytes.Equal(s.layout.Bytes(), layout.Bytes()) {
				s.touch()
				return s, true, nil
			}
		}
	}
	if len(u.sessions) >= MaxUploadSessions {
		return nil, false, fmt.Errorf("%w: %d upload sessions open (the most at once); finish or cancel one", ErrBusy, len(u.sessions))
	}
	var raw [uploadIDLen / 2]byte
	rand.Read(raw[:])
	id := hex.EncodeToString(raw[:])
	tmp, err := os.MkdirTemp(u.dir, ".new-*")
	if err != nil {
		return nil, false, err
	}
	defer os.RemoveAll(tmp) // gone after the rename; cleans up on failure
	created := u.opts.now().UTC()
	b, err := json.Marshal(spec.wire(created))
	if err != nil {
		return nil, false, err
	}
	if err := WriteFileAtomic(filepath.Join(tmp, uploadSpecFile), b, 0o600); err != nil {
		return nil, false, err
	}
	if err := os.Mkdir(filepath.Join(tmp, dataDir), 0o700); err != nil {
		return nil, false, err
	}
	t, err := openTree(filepath.Join(tmp, dataDir), layout)
	if err != nil {
		return nil, false, err
	}
	err = t.create()
	t.close()
	if err != nil {
		return nil, false, fmt.Errorf("upload %q: %w", spec.Name, err)
	}
	j, err := writeUploadJournal(filepath.Join(tmp, uploadJournalFile), nil, nil)
	if err != nil {
		return nil, false, err
	}
	j.Close()
	if err := os.Rename(tmp, filepath.Join(u.dir, id)); err != nil {
		return nil, false, err
	}
	if err := syncDir(u.dir); err != nil {
		return nil, false, err
	}
	up, err = u.load(id)
	if err != nil {
		os.RemoveAll(filepath.Join(u.dir, id))
		return nil, false, err
	}
	u.sessions[id] = up
	u.log.Info("upload session created", "upload", id, "name", spec.Name, "size", layout.Size(), "chunks", layout.NumChunks())
	return up, false, nil
}

// load opens the session in DIR/uploads/id.
func (u *Uploads) load(id string) (*Upload, error) {
	dir := filepath.Join(u.dir, id)
	b, err := os.ReadFile(filepath.Join(dir, uploadSpecFile))
	if err != nil {
		return nil, err
	}
	var w wireUploadSpec
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("%s: %v", uploadSpecFile, err)
	}
	spec, err := w.spec()
	if err != nil {
		return nil, err
	}
	layout, err := spec.Layout()
	if err != nil {
		return nil, err
	}
	t, err := openTree(filepath.Join(dir, dataDir), layout)
	if err != nil {
		return nil, err
	}
	up := &Upload{u: u, id: id, spec: spec, layout: layout, dir: dir, created: w.Created, tree: t, lastCk: time.Now()}
	if err := up.recover(); err != nil {
		t.close()
		return nil, err
	}
	return up, nil
}

// recover rebuilds the received set from the journal, re-hashing the chunks
// journaled after the last checkpoint, and rewrites the journal compactly.
func (up *Upload) recover() error {
	n := up.layout.NumChunks()
	path := filepath.Join(up.dir, uploadJournalFile)
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	up.lastUsed = fi.ModTime()
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	trusted, unsure, err := parseUploadJournal(b, n)
	if err != nil {
		trusted, unsure = nil, nil // nothing to trust: every chunk is sent again
	}
	up.have = NewBitfield(n)
	up.hashes = make([]Hash, n)
	for _, r := range trusted {
		up.have.Set(r.chunk)
		up.hashes[r.chunk] = r.hash
	}
	buf := make([]byte, up.layout.ChunkSize())
	for _, r := range unsure {
		if up.have.Has(r.chunk) {
			continue
		}
		off, l := up.layout.ChunkRange(r.chunk)
		if up.tree.readAt(buf[:l], off) == nil && HashChunk(buf[:l]) == r.hash {
			up.have.Set(r.chunk)
			up.hashes[r.chunk] = r.hash
		}
	}
	if len(unsure) > 0 {
		if err := up.tree.syncFiles(up.layout.allFiles()); err != nil {
			return err
		}
	}
	var held []int
	for i := range n {
		if up.have.Has(i) {
			held = append(held, i)
		}
	}
	j, err := writeUploadJournal(path, held, up.hashes)
	if err != nil {
		return err
	}
	up.journal, up.records = j, len(held)+1
	os.Chtimes(path, up.lastUsed, up.lastUsed) // keep the age across restarts
	return nil
}

// Get returns the open session id, or ErrNotFound.
func (u *Uploads) Get(id string) (*Upload, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.expireLocked()
	up, ok := u.sessions[id]
	if !ok {
		return nil, fmt.Errorf("%w: no upload session %q (finished, cancelled or expired)", ErrNotFound, truncate(id, 40))
	}
	return up, nil
}

// List returns the open sessions, oldest first.
func (u *Uploads) List() []*Upload {
	u.mu.Lock()
	u.expireLocked()
	list := make([]*Upload, 0, len(u.sessions))
	for _, up := range u.sessions {
		list = append(list, up)
	}
	u.mu.Unlock()
	slices.SortFunc(list, func(a, b *Upload) int {
		return cmp.Or(a.created.Compare(b.created), strings.Compare(a.id, b.id))
	})
	return list
}

// Remove cancels session id and deletes what it received.
func (u *Uploads) Remove(id string) error {
	u.mu.Lock()
	up, ok := u.sessions[id]
	delete(u.sessions, id)
	u.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: no upload session %q", ErrNotFound, truncate(id, 40))
	}
	up.discard()
	u.log.Info("upload session cancelled", "upload", id, "name", up.layout.Name())
	return nil
}

// expireLocked deletes sessions idle for longer than the TTL.
func (u *Uploads) expireLocked() {
	now := u.opts.now()
	for id, up := range u.sessions {
		up.mu.Lock()
		idle := up.writers == 0 && now.Sub(up.lastUsed) > u.opts.TTL
		up.mu.Unlock()
		if idle {
			delete(u.sessions, id)
			up.discard()
			u.log.Info("upload session expired", "upload", id, "name", up.layout.Name(), "ttl", u.opts.TTL)
		}
	}
}

// Close checkpoints and closes every session; they resume when opened again.
// Close is idempotent.
func (u *Uploads) Close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil
	}
	u.closed = true
	var errs []error
	for _, up := range u.sessions {
		errs = append(errs, up.checkpoint())
		up.mu.Lock()
		if up.journal != nil {
			up.journal.Close()
			up.journal = nil
		}
		up.done = true
		up.tree.close()
		up.mu.Unlock()
	}
	return errors.Join(errs...)
}

// discard closes the session and deletes its directory.
func (up *Upload) discard() {
	up.mu.Lock()
	if !up.done {
		up.done = true
		if up.journal != nil {
			up.journal.Close()
			up.journal = nil
		}
		up.tree.close()
	}
	up.mu.Unlock()
	os.RemoveAll(up.dir)
}

func (up *Upload) touch() {
	up.mu.Lock()
	up.lastUsed = up.u.opts.now()
	up.mu.Unlock()
}

// errUploadDone is returned by writes to a session that was committed,
// cancelled or expired meanwhile.
var errUploadDone = fmt.Errorf("%w: upload session finished, cancelled or expired", ErrNotFound)

// Write reads the bytes of chunks first, first+1, ... from r, each exactly
// its length, until r ends at a chunk boundary or the share's last chunk is
// read; it hashes and writes each chunk as it arrives and journals it. It
// returns how many chunks it stored: those stay stored whatever error
// follows (a body cut short, ctx done), so a retry sends only the rest. A
// chunk received before is compared with its first hash: a difference means
// the file changed since the upload started (ErrBadChunk). r ending inside a
// chunk is io.ErrUnexpectedEOF; bytes beyond the share are ErrTooLarge.
func (up *Upload) Write(ctx context.Context, first int, r io.Reader) (stored int, err error) {
	if err := up.layout.checkIndex(first); err != nil {
		return 0, err
	}
	up.mu.Lock()
	if up.done {
		up.mu.Unlock()
		return 0, errUploadDone
	}
	up.writers++
	up.lastUsed = up.u.opts.now()
	up.mu.Unlock()
	defer func() {
		up.mu.Lock()
		up.writers--
		up.lastUsed = up.u.opts.now()
		if up.writers == 0 && !up.done {
			up.tree.closeFiles() // an idle session holds no file descriptors
		}
		up.mu.Unlock()
	}()

	bp := uploadBufs.Get().(*[]byte)
	defer uploadBufs.Put(bp)
	if int64(cap(*bp)) < up.layout.ChunkSize() {
		*bp = AlignedBuffer(int(up.layout.ChunkSize()))
	}
	n := up.layout.NumChunks()
	for i := first; i < n; i++ {
		if err := ctx.Err(); err != nil {
			return stored, err
		}
		l := up.layout.ChunkLen(i)
		buf := (*bp)[:l]
		got, err := io.ReadFull(r, buf)
		if err == io.EOF && i > first {
			return stored, nil
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return stored, fmt.Errorf("upload %s: chunk %d cut short at %d of %d bytes: %w", up.id, i, got, l, io.ErrUnexpectedEOF)
		}
		if err != nil {
			return stored, err
		}
		if err := up.put(i, buf, HashChunk(buf)); err != nil {
			return stored, err
		}
		stored++
	}
	var one [1]byte
	if k, _ := io.ReadFull(r, one[:]); k > 0 {
		return stored, fmt.Errorf("upload %s: %w: bytes beyond the last chunk (%d bytes in all)", up.id, ErrTooLarge, up.layout.Size())
	}
	return stored, nil
}

// uploadBufs recycles chunk buffers of Write.
var uploadBufs = sync.Pool{New: func() any { return new([]byte) }}

// put writes chunk i, whose hash is sum, and journals it.
func (up *Upload) put(i int, data []byte, sum Hash) error {
	up.mu.Lock()
	switch {
	case up.done:
		up.mu.Unlock()
		return errUploadDone
	case up.have.Has(i):
		prev := up.hashes[i]
		up.mu.Unlock()
		if prev != sum {
			return &ChunkError{Index: i, Source: "upload " + up.id + " (the file changed since the upload started)", Want: prev, Got: sum, Len: len(data)}
		}
		return nil
	}
	up.mu.Unlock()

	off, _ := up.layout.ChunkRange(i)
	if err := up.tree.writeAt(data, off); err != nil {
		return fmt.Errorf("upload %s: chunk %d: %w", up.id, i, err)
	}

	up.mu.Lock()
	if up.done {
		up.mu.Unlock()
		return errUploadDone
	}
	if up.have.Has(i) { // a duplicate request won the race
		up.mu.Unlock()
		return nil
	}
	if _, err := up.journal.Write(encodeUploadRecord(tagHave, uint32(i), sum)); err != nil {
		up.mu.Unlock()
		return fmt.Errorf("upload journal: %w", err)
	}
	up.records++
	up.have.Set(i)
	up.hashes[i] = sum
	checkpoint := time.Since(up.lastCk) >= checkpointInterval
	up.mu.Unlock()
	if checkpoint {
		return up.checkpoint()
	}
	return nil
}

// checkpoint fsyncs the data written so far and vouches for the journal.
func (up *Upload) checkpoint() error {
	up.ckMu.Lock()
	defer up.ckMu.Unlock()
	up.mu.Lock()
	if up.journal == nil {
		up.mu.Unlock()
		return nil
	}
	upto := up.records
	up.lastCk = time.Now()
	up.mu.Unlock()
	if err := up.tree.syncFiles(up.tree.takeDirty()); err != nil {
		return fmt.Errorf("upload %s: checkpoint: %w", up.id, err)
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	if up.journal == nil {
		return nil
	}
	if _, err := up.journal.Write(encodeUploadRecord(tagCheckpoint, uint32(upto), Hash{})); err != nil {
		return fmt.Errorf("upload journal: %w", err)
	}
	up.records++
	return up.journal.Sync()
}

// Commit turns a session that received every chunk into a complete share of
// the store: it builds the manifest from the chunks' hashes, fsyncs the
// files, applies the declared modes and moves the tree into the store. If
// the store already holds the same share complete, that share is returned
// and the session's copy deleted. A session missing chunks is ErrIncomplete
// and stays open. On success the session is gone.
func (up *Upload) Commit() (*Share, error) {
	up.ckMu.Lock()
	defer up.ckMu.Unlock()
	up.mu.Lock()
	switch {
	case up.done:
		up.mu.Unlock()
		return nil, errUploadDone
	case !up.have.Full():
		up.mu.Unlock()
		return nil, fmt.Errorf("%w: upload %s holds %d of %d chunks", ErrIncomplete, up.id, up.have.Count(), up.have.Len())
	case up.writers > 0:
		up.mu.Unlock()
		return nil, fmt.Errorf("%w: upload %s: chunk requests still in progress", ErrIncomplete, up.id)
	}
	up.done = true // no more writes; on failure below the session is deleted
	up.journal.Close()
	up.journal = nil
	hashes := slices.Clone(up.hashes)
	up.mu.Unlock()

	u := up.u
	u.mu.Lock()
	delete(u.sessions, up.id)
	u.mu.Unlock()
	defer os.RemoveAll(up.dir)

	sh, err := up.install(hashes)
	up.tree.close()
	if err != nil {
		u.log.Warn("upload commit failed; session deleted", "upload", up.id, "err", err)
		return nil, err
	}
	u.log.Info("upload committed", "upload", up.id, "id", sh.ID(), "name", sh.Manifest().Name(), "size", sh.Manifest().Size())
	if u.opts.Committed != nil {
		u.opts.Committed(sh)
	}
	return sh, nil
}

func (up *Upload) install(hashes []Hash) (*Share, error) {
	l := up.layout
	m, err := NewManifest(l.Name(), l.IsDir(), l.ChunkSize(), l.Files(), up.spec.dirs(), hashes)
	if err != nil {
		return nil, err
	}
	if err := up.tree.syncFiles(l.allFiles()); err != nil {
		return nil, err
	}
	up.tree.closeFiles()
	if err := up.tree.applyModes(); err != nil {
		return nil, err
	}
	st := up.u.st
	tmp, err := os.MkdirTemp(st.tmpDir(), "upload-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp) // gone after the rename; cleans up on failure
	if err := os.Rename(filepath.Join(up.dir, dataDir), filepath.Join(tmp, dataDir)); err != nil {
		return nil, err
	}
	if err := syncDir(filepath.Join(tmp, dataDir)); err != nil {
		return nil, err
	}
	if err := WriteFileAtomic(filepath.Join(tmp, manifestFile), m.raw, 0o644); err != nil {
		return nil, err
	}
	if err := writeState(tmp, shareState{Complete: true, Created: time.Now().UTC()}); err != nil {
		return nil, err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if s, ok := st.shares[m.id]; ok {
		if s.Complete() {
			return s, nil
		}
		// A partial copy (an interrupted chunked upload or download): this
		// one has every byte, so it replaces it.
		trash, err := st.removeLocked(m.id)
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(trash)
	}
	return st.installLocked(tmp, m.id)
}

type uploadRecord struct {
	chunk int
	hash  Hash
}

func encodeUploadRecord(tag, val uint32, h Hash) []byte {
	var r [uploadRecordSize]byte
	binary.BigEndian.PutUint32(r[:], tag)
	binary.BigEndian.PutUint32(r[4:], val)
	copy(r[8:], h[:])
	return r[:]
}

// parseUploadJournal decodes an upload journal of an n-chunk layout (see the
// format above). A chunk journaled twice keeps its first record.
func parseUploadJournal(b []byte, n int) (trusted, unsure []uploadRecord, err error) {
	if len(b) < len(uploadMagic) || string(b[:len(uploadMagic)]) != uploadMagic {
		return nil, nil, errors.New("upload journal: bad magic")
	}
	b = b[len(uploadMagic):]
	type rec struct {
		pos int
		r   uploadRecord
	}
	var haves []rec
	durable := 0
	for pos := 0; len(b) >= uploadRecordSize; pos++ {
		tag := binary.BigEndian.Uint32(b)
		val := binary.BigEndian.Uint32(b[4:])
		var h Hash
		copy(h[:], b[8:uploadRecordSize])
		b = b[uploadRecordSize:]
		switch {
		case tag == tagHave && int64(val) < int64(n):
			haves = append(haves, rec{pos, uploadRecord{int(val), h}})
		case tag == tagCheckpoint && int64(val) <= int64(pos):
			durable = max(durable, int(val))
		default:
			b = nil
		}
	}
	seen := make(map[int]bool, len(haves))
	for _, r := range haves {
		if seen[r.r.chunk] {
			continue
		}
		seen[r.r.chunk] = true
		if r.pos < durable {
			trusted = append(trusted, r.r)
		} else {
			unsure = append(unsure, r.r)
		}
	}
	return trusted, unsure, nil
}

// writeUploadJournal atomically replaces the journal at path with one that
// vouches for chunks held (hashes[i] each) and opens it for appending.
func writeUploadJournal(path string, held []int, hashes []Hash) (*os.File, error) {
	var buf bytes.Buffer
	buf.WriteString(uploadMagic)
	for _, i := range held {
		buf.Write(encodeUploadRecord(tagHave, uint32(i), hashes[i]))
	}
	buf.Write(encodeUploadRecord(tagCheckpoint, uint32(len(held)), Hash{}))
	if err := WriteFileAtomic(path, buf.Bytes(), 0o600); err != nil {
		return nil, err
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
}
