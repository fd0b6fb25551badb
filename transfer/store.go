package transfer

import (
	"cmp"
	"context"
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
	"sync/atomic"
	"syscall"
	"time"
)

// Files of a share directory:
//
//	manifest.json  the manifest, exactly the bytes the ID addresses
//	state.json     {"complete": bool, "created": time}
//	have           the have journal of a partial share (see journal.go)
//	data/NAME      the share itself: an ordinary file or directory tree
const (
	manifestFile = "manifest.json"
	stateFile    = "state.json"
	haveFile     = "have"
	dataDir      = "data"
)

// checkpointInterval is how often a partial share fsyncs its data and vouches
// for its journal. Nothing on the write path waits for the disk otherwise:
// a killed process loses nothing (the page cache survives it), and after any
// crash the chunks journaled since the last checkpoint are re-verified on
// open, which costs one hash pass over them (~3 GB/s). The interval only
// bounds that pass; by the time it fires the kernel has written most dirty
// pages back, so the fsync is cheap.
const checkpointInterval = 30 * time.Second

type shareState struct {
	Complete bool      `json:"complete"`
	Created  time.Time `json:"created"`
	// Damaged lists chunks found damaged on disk (see verify.go) since the
	// share was last complete; those not held again are shown as damaged.
	Damaged []int `json:"damaged,omitempty"`
}

// Share is one share on disk: its manifest, state and data. Complete shares
// hold every chunk; partial ones (a download, a chunked upload) hold the
// chunks their journal lists and serve exactly those. All methods are safe
// for concurrent use.
type Share struct {
	m       *Manifest
	dir     string
	tree    *tree
	created time.Time
	durable bool // fsync every file before recording the share complete

	ckMu sync.Mutex // serializes checkpoints and finishing

	store *Store // nil for a standalone share; set before the share is published

	mu         sync.Mutex
	have       Bitfield
	verified   Bitfield // held chunks read (or written) and hashed since the share was opened; see verify.go
	damaged    Bitfield // chunks found damaged on disk and not held again since
	lastPut    time.Time
	complete   bool
	journal    *journal // nil once complete, removed or closed
	lastCk     time.Time
	closed     bool
	removed    bool
	notifyList []chan struct{} // closed and dropped on each new chunk
}

// Manifest returns the share's manifest.
func (s *Share) Manifest() *Manifest { return s.m }

// ID returns the share's ID.
func (s *Share) ID() ID { return s.m.id }

// Dir returns the share's directory.
func (s *Share) Dir() string { return s.dir }

// DataPath returns the path of the share's file or top directory.
func (s *Share) DataPath() string { return filepath.Join(s.dir, dataDir, s.m.name) }

// Created returns when the share was added to this machine.
func (s *Share) Created() time.Time { return s.created }

// Complete reports whether every chunk is held, verified and synced.
func (s *Share) Complete() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.complete
}

// Have returns a copy of the set of held chunks.
func (s *Share) Have() Bitfield {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.have.Clone()
}

// HaveCount returns the number of held chunks.
func (s *Share) HaveCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.have.Count()
}

// HasChunk reports whether chunk i is held.
func (s *Share) HasChunk(i int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.have.Has(i)
}

// Changed returns a channel that is closed when the share gains a chunk, is
// completed, removed or closed: a cheap way to wait for news.
func (s *Share) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan struct{})
	if s.closed || s.removed {
		close(ch)
		return ch
	}
	s.notifyList = append(s.notifyList, ch)
	return ch
}

// gone reports whether the share was removed or closed.
func (s *Share) gone() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.removed || s.closed
}

// goneErr returns ErrRemoved or a closed error if the share is no longer
// usable, else nil.
func (s *Share) goneErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.goneErrLocked()
}

func (s *Share) goneErrLocked() error {
	switch {
	case s.removed:
		return fmt.Errorf("share %s: %w", s.m.id, ErrRemoved)
	case s.closed:
		return fmt.Errorf("share %s: %w", s.m.id, errClosed)
	}
	return nil
}

func (s *Share) notifyLocked() {
	for _, ch := range s.notifyList {
		close(ch)
	}
	s.notifyList = nil
}

// PutChunk verifies data against the manifest and, if it is chunk i, writes
// it and records it as held. A mismatch returns a *ChunkError and writes
// nothing. Putting a chunk already held does nothing.
func (s *Share) PutChunk(i int, data []byte) error {
	if err := s.m.checkIndex(i); err != nil {
		return err
	}
	return s.putHashed(i, data, HashChunk(data))
}

// putHashed is PutChunk for data whose hash the caller computed as it
// received it.
func (s *Share) putHashed(i int, data []byte, sum Hash) error {
	if err := s.m.checkHash(i, len(data), sum); err != nil {
		return err
	}
	s.mu.Lock()
	if err := s.goneErrLocked(); err != nil {
		s.mu.Unlock()
		return err
	}
	if s.have.Has(i) {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()

	off, _ := s.m.ChunkRange(i)
	if err := s.tree.writeAt(data, off); err != nil {
		// Removed or closed meanwhile: its files are closed under the write.
		if gone := s.goneErr(); gone != nil {
			return gone
		}
		return fmt.Errorf("store chunk %d: %w", i, err)
	}

	s.mu.Lock()
	if s.have.Has(i) { // a duplicate request won the race
		s.mu.Unlock()
		return nil
	}
	if s.journal == nil {
		err := s.goneErrLocked()
		s.mu.Unlock()
		if err == nil { // completed meanwhile: every chunk is held
			return nil
		}
		return err
	}
	if err := s.journal.appendHave(i); err != nil {
		s.mu.Unlock()
		return err
	}
	s.have.Set(i)
	s.verified.Set(i) // hashed by the caller, from the very bytes written
	s.damaged.Clear(i)
	s.lastPut = time.Now()
	done := s.have.Full()
	checkpoint := !done && time.Since(s.lastCk) >= checkpointInterval
	s.notifyLocked()
	s.mu.Unlock()

	switch {
	case done:
		return s.finish()
	case checkpoint:
		return s.Checkpoint()
	}
	return nil
}

// Checkpoint makes the chunks journaled so far durable: it fsyncs the data
// files written since the last checkpoint, then vouches for the journal.
func (s *Share) Checkpoint() error {
	s.ckMu.Lock()
	defer s.ckMu.Unlock()
	s.mu.Lock()
	if s.journal == nil {
		s.mu.Unlock()
		return nil
	}
	upto := s.journal.records
	s.lastCk = time.Now()
	s.mu.Unlock()

	if err := s.tree.syncFiles(s.tree.takeDirty()); err != nil {
		return fmt.Errorf("checkpoint %s: %w", s.m.id, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.journal == nil {
		return nil
	}
	return s.journal.appendCheckpoint(upto)
}

// finish turns a share whose chunks are all held into a complete one: fsync
// every file (durable shares), apply the manifest's modes, then record it
// complete.
func (s *Share) finish() error {
	s.ckMu.Lock()
	defer s.ckMu.Unlock()
	s.mu.Lock()
	if s.complete || s.journal == nil {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()

	if s.durable {
		if err := s.tree.syncFiles(s.m.allFiles()); err != nil {
			return fmt.Errorf("finish %s: %w", s.m.id, err)
		}
	}
	s.tree.closeFiles()
	if err := s.tree.applyModes(); err != nil {
		return fmt.Errorf("finish %s: %w", s.m.id, err)
	}
	if err := writeState(s.dir, shareState{Complete: true, Created: s.created}); err != nil {
		return fmt.Errorf("finish %s: %w", s.m.id, err)
	}

	s.mu.Lock()
	s.complete = true
	s.damaged = NewBitfield(s.m.NumChunks())
	j := s.journal
	s.journal = nil
	s.notifyLocked()
	s.mu.Unlock()
	j.close()
	os.Remove(filepath.Join(s.dir, haveFile))
	return nil
}

// ReadChunk reads held chunk i into p, which must be ChunkLen(i) long. It
// returns ErrChunkNotHeld for a chunk not (yet) held, or found damaged on
// disk (see verify.go).
func (s *Share) ReadChunk(i int, p []byte) error {
	if err := s.checkHeld(i); err != nil {
		return err
	}
	if len(p) != s.m.ChunkLen(i) {
		return fmt.Errorf("read chunk %d: buffer of %d bytes, chunk has %d", i, len(p), s.m.ChunkLen(i))
	}
	off, _ := s.m.ChunkRange(i)
	err := s.tree.readAt(p, off)
	if err != nil && !lostBytes(err) {
		return err
	}
	s.mu.Lock()
	verified := s.verified.Has(i)
	s.mu.Unlock()
	if err == nil && verified {
		return nil
	}
	if err == nil {
		err = s.m.VerifyChunk(i, p)
	}
	if err != nil {
		s.markDamaged(i, err)
		return fmt.Errorf("%w: chunk %d of %s is damaged on disk (%v)", ErrChunkNotHeld, i, s.m.id, err)
	}
	s.mu.Lock()
	if s.have.Has(i) {
		s.verified.Set(i)
	}
	s.mu.Unlock()
	return nil
}

// OpenChunk returns a reader of held chunk i, verified (see verify.go). Its
// WriteTo uses sendfile where the writer can. The caller closes it. It
// returns ErrChunkNotHeld for a chunk not (yet) held, or found damaged.
func (s *Share) OpenChunk(i int) (io.ReadCloser, error) {
	if err := s.checkHeld(i); err != nil {
		return nil, err
	}
	if err := s.checkChunk(i); err != nil {
		return nil, err
	}
	off, n := s.m.ChunkRange(i)
	return s.tree.openRange(off, n), nil
}

func (s *Share) checkHeld(i int) error {
	if err := s.m.checkIndex(i); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.removed:
		return ErrRemoved
	case !s.have.Has(i):
		return fmt.Errorf("%w: chunk %d of %s", ErrChunkNotHeld, i, s.m.id)
	}
	return nil
}

// OpenFile opens the file of a complete single-file share for reading; its
// chunks are checked as they are read (see FileReader). The caller closes it.
func (s *Share) OpenFile() (*FileReader, error) {
	if s.m.IsDir() {
		return nil, fmt.Errorf("share %s is a directory", s.m.id)
	}
	if !s.Complete() {
		return nil, fmt.Errorf("%w: %s", ErrIncomplete, s.m.id)
	}
	f, err := s.tree.root.Open(s.tree.top)
	if err != nil {
		return nil, err
	}
	return &FileReader{sh: s, f: f}, nil
}

// Close checkpoints a partial share and releases its files. A closed share
// must not be used; Close is idempotent.
func (s *Share) Close() error {
	err := s.Checkpoint()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.notifyLocked()
	if s.journal != nil {
		s.journal.close()
		s.journal = nil
	}
	s.tree.close()
	return err
}

// markRemoved closes the share for good; chunks can no longer be read or put.
func (s *Share) markRemoved() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removed = true
	s.notifyLocked()
	if s.journal != nil {
		s.journal.close()
		s.journal = nil
	}
	if !s.closed {
		s.closed = true
		s.tree.close()
	}
}

// MoveTo moves a complete share's file or directory to dst, which must not
// exist, and deletes the share directory. dst must be on the same file system.
func (s *Share) MoveTo(dst string) error {
	if !s.Complete() {
		return fmt.Errorf("%w: %s", ErrIncomplete, s.m.id)
	}
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("%s: %w", dst, ErrExists)
	}
	s.Close()
	if err := os.Rename(s.DataPath(), dst); err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return err
	}
	return os.RemoveAll(s.dir)
}

// CreateShare makes a new partial share for m in dir, which must not exist.
// The directory appears complete with its manifest or not at all. Such a
// standalone share (a client's download in progress) does not fsync its data
// when it completes, as curl or cp do not: its journal is exact after a
// killed process and re-verified after a crash, and a complete share is the
// user's file. Store shares, which are served to others, do fsync.
func CreateShare(dir string, m *Manifest) (*Share, error) {
	if _, err := os.Lstat(dir); err == nil {
		return nil, fmt.Errorf("%s: %w", dir, ErrExists)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), tempPrefix(dir)+"*")
	if err != nil {
		return nil, err
	}
	if err := fillShareDir(tmp, m); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return nil, err
	}
	return OpenShare(dir)
}

// tempPrefix is the name CreateShare's temporary directory for dir starts
// with: "."+base(dir)+".tmp-", cut as workName cuts a long name.
func tempPrefix(dir string) string { return workName(".", filepath.Base(dir), ".tmp-") }

// fillShareDir writes a new partial share into the empty directory dir.
func fillShareDir(dir string, m *Manifest) error {
	if err := WriteFileAtomic(filepath.Join(dir, manifestFile), m.raw, 0o644); err != nil {
		return err
	}
	if err := os.Mkdir(filepath.Join(dir, dataDir), 0o755); err != nil {
		return err
	}
	t, err := openTree(filepath.Join(dir, dataDir), m)
	if err != nil {
		return err
	}
	err = t.create()
	t.close()
	if err != nil {
		return err
	}
	j, err := writeJournal(filepath.Join(dir, haveFile), nil)
	if err != nil {
		return err
	}
	j.close()
	return writeState(dir, shareState{Created: time.Now().UTC()})
}

func writeState(dir string, st shareState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, stateFile), b, 0o644)
}

// OpenShare opens the standalone share in dir (see CreateShare). For a
// partial share it reads the have journal and re-verifies the chunks
// journaled after its last checkpoint (or every chunk, if the journal is
// unreadable); chunks that fail are dropped and fetched again.
func OpenShare(dir string) (*Share, error) { return openShare(dir, false) }

func openShare(dir string, durable bool) (*Share, error) {
	raw, err := os.ReadFile(filepath.Join(dir, manifestFile))
	if err != nil {
		return nil, err
	}
	m, err := DecodeManifest(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	var st shareState
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %s: %v", dir, stateFile, err)
	}
	t, err := openTree(filepath.Join(dir, dataDir), m)
	if err != nil {
		return nil, err
	}
	s := &Share{m: m, dir: dir, tree: t, created: st.Created, durable: durable, lastCk: time.Now()}
	n := m.NumChunks()
	s.verified, s.damaged = NewBitfield(n), NewBitfield(n)
	if st.Complete {
		s.have, s.complete = FullBitfield(n), true
		return s, nil
	}
	if err := s.recover(); err != nil {
		t.close()
		return nil, err
	}
	for _, i := range st.Damaged {
		if i >= 0 && i < n && !s.have.Has(i) {
			s.damaged.Set(i)
		}
	}
	// An upload's last chunk came when its journal last grew.
	if fi, err := os.Stat(filepath.Join(dir, haveFile)); err == nil {
		s.lastPut = fi.ModTime()
	}
	if s.have.Full() {
		if err := s.finish(); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// recover rebuilds the held set of a partial share from its journal.
func (s *Share) recover() error {
	n := s.m.NumChunks()
	path := filepath.Join(s.dir, haveFile)
	trusted, unsure, err := func() ([]int, []int, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, err
		}
		return parseJournal(b, n)
	}()
	if err != nil { // no usable journal: check every chunk on disk
		unsure = make([]int, n)
		for i := range unsure {
			unsure[i] = i
		}
	}
	s.have = NewBitfield(n)
	for _, i := range trusted {
		s.have.Set(i)
	}
	buf := make([]byte, 0, s.m.chunkSize)
	for _, i := range unsure {
		if s.have.Has(i) {
			continue
		}
		off, l := s.m.ChunkRange(i)
		p := buf[:l]
		if s.tree.readAt(p, off) == nil && s.m.VerifyChunk(i, p) == nil {
			s.have.Set(i)
			s.verified.Set(i)
		}
	}
	held := make([]int, 0, s.have.Count())
	for i := range n {
		if s.have.Has(i) {
			held = append(held, i)
		}
	}
	// The re-verified chunks' data must be durable before the new journal
	// vouches for them.
	if len(unsure) > 0 {
		if err := s.tree.syncFiles(s.m.allFiles()); err != nil {
			return err
		}
	}
	j, err := writeJournal(path, held)
	if err != nil {
		return err
	}
	s.journal = j
	return nil
}

// StoreOptions configures a Store. The zero value works.
type StoreOptions struct {
	Logger *slog.Logger // nil: slog.Default()
}

// DamageHook is called when a chunk of a store's share is found damaged on
// disk and marked missing (see verify.go), from the goroutine that found it,
// with no lock held.
type DamageHook func(sh *Share, chunk int)

// Store keeps shares in a data directory, one share directory each:
// DIR/shares/ID/{manifest.json,state.json,have,data/NAME}. DIR/tmp holds work
// in progress and is emptied on open, so nothing half-written survives a
// crash. A Store is safe for concurrent use.
type Store struct {
	dir  string
	log  *slog.Logger
	lock *os.File // held while open

	mu     sync.Mutex
	shares map[ID]*Share
	hooks  []DamageHook

	damaged atomic.Int64 // chunks found damaged on disk since the store was opened
}

// OpenStore opens (creating if needed) the store in dir and loads its shares.
// Share directories that fail to load are logged and left alone.
func OpenStore(dir string, opts StoreOptions) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	st := &Store{dir: dir, log: log, shares: map[ID]*Share{}}
	if err := os.MkdirAll(st.sharesDir(), 0o700); err != nil {
		return nil, err
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	st.lock = lock
	ok := false
	defer func() {
		if !ok {
			lock.Close()
		}
	}()
	if err := os.RemoveAll(st.tmpDir()); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(st.tmpDir(), 0o700); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(st.sharesDir())
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		id, err := ParseID(e.Name())
		if err != nil || !e.IsDir() {
			log.Warn("store: ignoring unexpected entry", "path", filepath.Join(st.sharesDir(), e.Name()))
			continue
		}
		s, err := openShare(filepath.Join(st.sharesDir(), e.Name()), true)
		if err != nil {
			log.Warn("store: cannot open share", "id", id, "err", err)
			continue
		}
		if s.ID() != id {
			log.Warn("store: manifest does not match its directory", "dir", e.Name(), "id", s.ID())
			s.Close()
			continue
		}
		s.store = st
		st.shares[id] = s
	}
	ok = true
	return st, nil
}

// Dir returns the data directory.
func (st *Store) Dir() string { return st.dir }

func (st *Store) sharesDir() string { return filepath.Join(st.dir, "shares") }
func (st *Store) tmpDir() string    { return filepath.Join(st.dir, "tmp") }

// Get returns the share with id, or ErrNotFound.
func (st *Store) Get(id ID) (*Share, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	s, ok := st.shares[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return s, nil
}

// List returns every share, oldest first.
func (st *Store) List() []*Share {
	st.mu.Lock()
	list := make([]*Share, 0, len(st.shares))
	for _, s := range st.shares {
		list = append(list, s)
	}
	st.mu.Unlock()
	slices.SortFunc(list, func(a, b *Share) int {
		if c := a.created.Compare(b.created); c != 0 {
			return c
		}
		return strings.Compare(a.m.name, b.m.name)
	})
	return list
}

// Create returns the share for m, creating it as a partial share if the
// store does not have it. created reports whether it was new.
func (st *Store) Create(m *Manifest) (s *Share, created bool, err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if s, ok := st.shares[m.id]; ok {
		return s, false, nil
	}
	tmp, err := os.MkdirTemp(st.tmpDir(), "create-*")
	if err != nil {
		return nil, false, err
	}
	defer os.RemoveAll(tmp) // gone after the rename; cleans up on failure
	if err := fillShareDir(tmp, m); err != nil {
		return nil, false, fmt.Errorf("create share %s: %w", m.id, err)
	}
	s, err = st.installLocked(tmp, m.id)
	return s, err == nil, err
}

// installLocked renames a filled share directory into place and opens it.
func (st *Store) installLocked(tmp string, id ID) (*Share, error) {
	dst := filepath.Join(st.sharesDir(), id.String())
	if err := os.Rename(tmp, dst); err != nil {
		return nil, fmt.Errorf("install share %s: %w", id, err)
	}
	if err := syncDir(st.sharesDir()); err != nil {
		return nil, err
	}
	s, err := openShare(dst, true)
	if err != nil {
		return nil, err
	}
	s.store = st
	st.shares[id] = s
	return s, nil
}

// ImportOptions configures Store.Import. The zero value works.
type ImportOptions struct {
	ChunkSize int64       // 0: ChunkSizeFor the stream's size
	MaxSize   int64       // bytes; 0: MaxShareSize
	Mode      fs.FileMode // 0: 0644
	// SizeHint, if positive, is the expected size (a Content-Length): the
	// file is allocated up front, so a full disk fails before any byte is
	// read.
	SizeHint int64
}

// importBufSize is the block Import reads and writes at a time.
const importBufSize = 1 << 20

// importStream writes r to f (the file name in dir) from offset 0 and feeds
// it to h; it returns the bytes written. Whole aligned blocks are written
// with direct I/O (O_DIRECT) where the file system allows it, like a
// download's chunks (see tree.writeSegment): a stream written once and
// fsynced at the end gains nothing from the page cache, and filling the
// cache costs more CPU than the write itself on some machines (a VM whose
// fresh pages are slow to touch: 3.5-5.5 CPU-s per GiB against 1 through
// direct writes). The last, partial block goes through f.
func importStream(f *os.File, dir, name string, h io.Writer, r io.Reader) (int64, error) {
	var direct *os.File
	if root, err := os.OpenRoot(dir); err == nil {
		direct, _ = openDirect(root, name)
		root.Close()
	}
	defer func() {
		if direct != nil {
			direct.Close()
		}
	}()
	buf := AlignedBuffer(importBufSize)
	var n int64
	for {
		k, rerr := fill(r, buf)
		if k > 0 {
			p := buf[:k]
			h.Write(p)
			wrote := false
			if direct != nil && canDirect(p, n) {
				if _, err := direct.WriteAt(p, n); err == nil {
					wrote = true
				} else if errors.Is(err, syscall.EINVAL) {
					direct.Close() // the device wants other alignment
					direct = nil
				} else {
					return n, err
				}
			}
			if !wrote {
				if _, err := f.WriteAt(p, n); err != nil {
					return n, err
				}
			}
			n += int64(k)
		}
		switch {
		case rerr == io.EOF:
			return n, nil
		case rerr != nil:
			return n, rerr
		}
	}
}

// fill reads from r until buf is full (nil error), r ends (io.EOF, with the
// bytes read before it) or fails. Unlike io.ReadFull it keeps r's own errors,
// an io.ErrUnexpectedEOF among them, apart from the end of r.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := r.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Import stores the bytes of r as a new single-file share called name,
// streaming them to disk and hashing them on the way. It reads r to EOF; a
// read error, an oversize stream or a cancelled ctx leave nothing behind. If
// the store already has the same share, that share is returned.
func (st *Store) Import(ctx context.Context, name string, r io.Reader, opts ImportOptions) (*Share, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	// Without a chunk size, the stream is cut as its size asks (see
	// ChunkSizeFor): guessed from SizeHint, or DefaultChunkSize, and checked
	// once the size is known.
	cs := cmp.Or(opts.ChunkSize, ChunkSizeFor(cmp.Or(opts.SizeHint, MaxShareSize)))
	maxSize := cmp.Or(opts.MaxSize, MaxShareSize)
	mode := cmp.Or(opts.Mode, 0o644)
	if cs < MinChunkSize || cs > MaxChunkSize {
		return nil, fmt.Errorf("chunk size %d outside [%d, %d]", cs, MinChunkSize, MaxChunkSize)
	}
	tmp, err := os.MkdirTemp(st.tmpDir(), "import-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp) // gone after the rename; cleans up on failure
	if err := os.Mkdir(filepath.Join(tmp, dataDir), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(tmp, dataDir, name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if opts.SizeHint > 0 && opts.SizeHint <= maxSize {
		if err := allocate(f, opts.SizeHint); err != nil {
			return nil, fmt.Errorf("import %q: %w", name, err)
		}
	}
	c := newChunker(cs)
	n, err := importStream(f, filepath.Join(tmp, dataDir), name, c, &ctxReader{ctx, io.LimitReader(r, maxSize+1)})
	if err != nil {
		return nil, fmt.Errorf("import %q: %w", name, err)
	}
	if n > maxSize {
		return nil, fmt.Errorf("import %q: %w: more than %d bytes", name, ErrTooLarge, maxSize)
	}
	if n < opts.SizeHint {
		if err := f.Truncate(n); err != nil { // fewer bytes than announced
			return nil, err
		}
	}
	hashes := c.finish()
	if want := ChunkSizeFor(n); opts.ChunkSize == 0 && want != cs {
		// The guess was wrong (no or a wrong size hint): hash it again, cut
		// as its size asks. Only shares smaller than SwarmChunks default
		// chunks (128 MiB) get here, so this reads at most that much again.
		cs = want
		c = newChunker(cs)
		if _, err := io.CopyBuffer(c, &ctxReader{ctx, io.NewSectionReader(f, 0, n)}, make([]byte, hashBufSize)); err != nil {
			return nil, fmt.Errorf("import %q: %w", name, err)
		}
		hashes = c.finish()
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("import %q: %w", name, err)
	}
	if err := f.Chmod(mode & modeMask); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	m, err := NewManifest(name, false, cs, []File{{Path: name, Size: n, Mode: mode.Perm()}}, nil, hashes)
	if err != nil {
		return nil, err
	}
	if err := WriteFileAtomic(filepath.Join(tmp, manifestFile), m.raw, 0o644); err != nil {
		return nil, err
	}
	if err := writeState(tmp, shareState{Complete: true, Created: time.Now().UTC()}); err != nil {
		return nil, err
	}
	if err := syncDir(filepath.Join(tmp, dataDir)); err != nil {
		return nil, err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if s, ok := st.shares[m.id]; ok {
		if s.Complete() {
			return s, nil
		}
		// A partial copy (an interrupted chunked upload): the import has
		// every byte, so it replaces it.
		trash, err := st.removeLocked(m.id)
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(trash)
	}
	s, err := st.installLocked(tmp, m.id)
	if err != nil {
		return nil, err
	}
	// Every chunk was hashed from the bytes written.
	s.mu.Lock()
	s.verified = FullBitfield(m.NumChunks())
	s.mu.Unlock()
	return s, nil
}

// ctxReader fails reads once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// OnDamaged registers a hook called whenever a chunk of one of the store's
// shares is found damaged on disk.
func (st *Store) OnDamaged(h DamageHook) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.hooks = append(st.hooks, h)
}

// DamagedChunks returns how many chunks were found damaged on disk since the
// store was opened (a counter: share_damaged_chunks_total).
func (st *Store) DamagedChunks() int64 { return st.damaged.Load() }

// noteDamaged logs, counts and reports a chunk found damaged; err is what
// went wrong recording it, if anything.
func (st *Store) noteDamaged(s *Share, i int, cause, err error) {
	st.damaged.Add(1)
	st.log.Warn("chunk damaged on disk; marked missing", "id", s.ID(), "name", s.m.name, "chunk", i, "cause", cause)
	if err != nil {
		st.log.Error("cannot record a damaged chunk; it stays missing until the next start", "id", s.ID(), "chunk", i, "err", err)
	}
	st.mu.Lock()
	hooks := slices.Clone(st.hooks)
	st.mu.Unlock()
	for _, h := range hooks {
		h(s, i)
	}
}

// ExpirePartial removes the store's partial shares whose last chunk came
// more than ttl ago (or, with no chunk yet, that were created that long
// ago): chunked uploads a client abandoned. A share found damaged is not an
// upload and is kept. It returns the IDs it removed.
func (st *Store) ExpirePartial(ttl time.Duration) []ID {
	var gone []ID
	for _, s := range st.List() {
		s.mu.Lock()
		idle := time.Since(cmp.Or(s.lastPut, s.created))
		abandoned := !s.complete && s.damaged.Count() == 0 && idle > ttl
		s.mu.Unlock()
		if !abandoned {
			continue
		}
		if err := st.Remove(s.ID()); err != nil {
			if !errors.Is(err, ErrNotFound) {
				st.log.Warn("cannot remove an abandoned upload", "id", s.ID(), "err", err)
			}
			continue
		}
		st.log.Info("removed an abandoned upload", "id", s.ID(), "name", s.m.name, "chunks", s.HaveCount(), "of", s.m.NumChunks(), "idle", idle.Round(time.Second))
		gone = append(gone, s.ID())
	}
	return gone
}

// Remove deletes a share and its files. Readers that already opened a file
// keep reading it; everything else on the share fails with ErrRemoved.
func (st *Store) Remove(id ID) error {
	st.mu.Lock()
	trash, err := st.removeLocked(id)
	st.mu.Unlock()
	if err != nil {
		return err
	}
	return os.RemoveAll(trash)
}

// removeLocked drops a share from the store and moves its directory into
// tmp, returning where; the caller deletes it, outside the lock. Renaming
// first makes the share disappear at once, even if deleting a large tree
// takes a while or is interrupted (tmp is emptied on open).
func (st *Store) removeLocked(id ID) (trash string, err error) {
	s, ok := st.shares[id]
	if !ok {
		return "", fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	delete(st.shares, id)
	s.markRemoved()
	trash, err = os.MkdirTemp(st.tmpDir(), "remove-*")
	if err != nil {
		return "", err
	}
	if err := os.Rename(s.dir, filepath.Join(trash, "share")); err != nil {
		return "", fmt.Errorf("remove share %s: %w", id, err)
	}
	return trash, syncDir(st.sharesDir())
}

// Close checkpoints and closes every share and releases the data directory.
// The store must not be used after; Close is idempotent.
func (st *Store) Close() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	var errs []error
	for _, s := range st.shares {
		errs = append(errs, s.Close())
	}
	if st.lock != nil {
		errs = append(errs, st.lock.Close())
		st.lock = nil
	}
	return errors.Join(errs...)
}
