package transfer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/zeebo/blake3"
)

// Rot on disk. A stored chunk can change after it was verified and written:
// a failing disk, a flipped bit, a person editing a file in the store. So a
// share served to others (the server's routes, a peer's chunk protocol)
// verifies every chunk the first time this process reads it from disk after
// opening the share, and keeps a verified bit per chunk in memory: chunks
// this process verified and wrote itself (a download's, an upload's, an
// import's) count as verified. Reading a verified chunk costs nothing more,
// and a whole-file download still goes out with sendfile (see FileReader). A
// chunk that fails (its bytes hash to something else, or are gone: a short
// file, EIO) is marked missing at once: the have bitfield and the journal
// drop it, a complete share becomes partial and "damaged", the store logs
// it, counts it (DamagedChunks) and tells its OnDamaged hooks (a peer
// fetches the chunk again from its swarm); the request gets ErrChunkNotHeld,
// and nothing serves the chunk until it is put again, verified.
//
// A chunk that rots after this process verified it is found by a scrub:
// Store.Verify re-reads and hashes every held chunk (share verify), and
// Store.Scrub does so periodically at a bounded rate.

// verifyBufSize is the buffer a chunk is hashed through from disk.
const verifyBufSize = 256 << 10

var verifyBufs = sync.Pool{New: func() any { b := make([]byte, verifyBufSize); return &b }}

// checkChunk makes sure held chunk i was verified since the share was
// opened, reading and hashing it from disk if not.
func (s *Share) checkChunk(i int) error {
	s.mu.Lock()
	ok := s.verified.Has(i)
	s.mu.Unlock()
	if ok {
		return nil
	}
	return s.verifyChunk(context.Background(), i, nil)
}

// checkRange checks (checkChunk) every chunk that overlaps [off, off+n) of
// the share's byte stream.
func (s *Share) checkRange(off, n int64) error {
	if n <= 0 || off < 0 || off >= s.m.size {
		return nil
	}
	first, last := int(off/s.m.chunkSize), int((min(off+n, s.m.size)-1)/s.m.chunkSize)
	s.mu.Lock()
	all := true
	for i := first; i <= last && all; i++ {
		all = s.verified.Has(i)
	}
	s.mu.Unlock()
	if all {
		return nil
	}
	for i := first; i <= last; i++ {
		if err := s.checkChunk(i); err != nil {
			return err
		}
	}
	return nil
}

// verifyChunk reads held chunk i from disk, its reads paced by lim, and
// hashes it. A match marks it verified; a mismatch, or a read error that
// means its bytes are gone, marks it damaged (markDamaged) and returns an
// error wrapping ErrChunkNotHeld. Other read errors are returned as they are.
func (s *Share) verifyChunk(ctx context.Context, i int, lim *Limiter) error {
	if err := s.checkHeld(i); err != nil {
		return err
	}
	off, n := s.m.ChunkRange(i)
	r := s.tree.openRange(off, n)
	defer r.Close()
	h := blake3.New()
	bp := verifyBufs.Get().(*[]byte)
	got, err := io.CopyBuffer(h, lim.Reader(ctx, struct{ io.Reader }{r}), *bp)
	verifyBufs.Put(bp)
	if err != nil && !lostBytes(err) {
		if gone := s.goneErr(); gone != nil {
			return gone
		}
		return fmt.Errorf("verify chunk %d of %s: %w", i, s.m.id, err)
	}
	var sum Hash
	h.Sum(sum[:0])
	if err == nil {
		err = s.m.checkHash(i, int(got), sum)
	}
	if err == nil {
		s.mu.Lock()
		if s.have.Has(i) {
			s.verified.Set(i)
		}
		s.mu.Unlock()
		return nil
	}
	s.markDamaged(i, err)
	return fmt.Errorf("%w: chunk %d of %s is damaged on disk (%v)", ErrChunkNotHeld, i, s.m.id, err)
}

// lostBytes reports read errors that mean a chunk's bytes are no longer
// there: a file shorter than the manifest says, a missing file, an I/O
// error of the device.
func lostBytes(err error) bool {
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.EIO)
}

// markDamaged drops held chunk i, found damaged on disk (cause says how):
// it is no longer held, in memory and in the journal, a complete share
// becomes partial, and the store is told (log, metric, hooks).
func (s *Share) markDamaged(i int, cause error) {
	s.ckMu.Lock()
	s.mu.Lock()
	if !s.have.Has(i) || s.removed || s.closed {
		s.mu.Unlock()
		s.ckMu.Unlock()
		return
	}
	wasComplete := s.complete
	s.mu.Unlock()
	// The journal is rewritten below, vouching for every chunk it lists:
	// what was written since the last checkpoint must be durable first.
	var err error
	if !wasComplete {
		err = s.tree.syncFiles(s.tree.takeDirty())
	}
	s.mu.Lock()
	if !s.have.Has(i) || s.removed || s.closed {
		s.mu.Unlock()
		s.ckMu.Unlock()
		return
	}
	s.have.Clear(i)
	s.verified.Clear(i)
	s.damaged.Set(i)
	s.complete = false
	held := make([]int, 0, s.have.Count())
	for k := range s.m.NumChunks() {
		if s.have.Has(k) {
			held = append(held, k)
		}
	}
	if err == nil {
		var j *journal
		if j, err = writeJournal(filepath.Join(s.dir, haveFile), held); err == nil {
			if s.journal != nil {
				s.journal.close()
			}
			s.journal = j
		}
	}
	if err == nil {
		err = writeState(s.dir, shareState{Created: s.created, Damaged: s.damagedListLocked()})
	}
	if err == nil && wasComplete {
		// A repair writes the chunk again: the file needs its owner's write
		// bit back (finish applies the manifest's modes again).
		err = s.tree.makeWritable(i)
	}
	s.notifyLocked()
	s.mu.Unlock()
	s.ckMu.Unlock()
	if s.store != nil {
		s.store.noteDamaged(s, i, cause, err)
	}
}

func (s *Share) damagedListLocked() []int {
	var l []int
	for k := range s.damaged.Len() {
		if s.damaged.Has(k) {
			l = append(l, k)
		}
	}
	return l
}

// Damaged returns how many chunks of the share were found damaged on disk
// and are not held again yet.
func (s *Share) Damaged() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.damaged.Count()
}

// Verified returns how many held chunks were verified since the share was
// opened.
func (s *Share) Verified() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.verified.Count()
}

// Verify reads every held chunk from disk and hashes it, its reads paced by
// lim (nil: no limit), whether or not it was verified before: a scrub. It
// returns the chunks it checked and those found damaged, which are marked
// missing (see markDamaged). It stops early if ctx is done.
func (s *Share) Verify(ctx context.Context, lim *Limiter) (checked int, damaged []int, err error) {
	for i := range s.m.NumChunks() {
		if err := ctx.Err(); err != nil {
			return checked, damaged, err
		}
		if !s.HasChunk(i) {
			continue
		}
		err := s.verifyChunk(ctx, i, lim)
		switch {
		case err == nil:
			checked++
		case errors.Is(err, ErrChunkNotHeld) && !s.HasChunk(i) && s.goneErr() == nil:
			checked++
			damaged = append(damaged, i)
		case ctx.Err() != nil:
			return checked, damaged, ctx.Err()
		default:
			return checked, damaged, err
		}
	}
	return checked, damaged, nil
}

// FileReader is a complete single-file share open for reading (Share.OpenFile).
// Every byte it gives out, through Read or Next, belongs to a chunk verified
// since the share was opened (see the rot rule at the top of this file). It
// is not safe for concurrent use; the caller closes it.
type FileReader struct {
	sh *Share
	f  *os.File
}

// Read implements io.Reader, checking the chunks it reads first.
func (f *FileReader) Read(p []byte) (int, error) {
	pos, err := f.f.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, err
	}
	if err := f.sh.checkRange(pos, int64(len(p))); err != nil {
		return 0, err
	}
	return f.f.Read(p)
}

// Seek implements io.Seeker.
func (f *FileReader) Seek(off int64, whence int) (int64, error) { return f.f.Seek(off, whence) }

// Close closes the file.
func (f *FileReader) Close() error { return f.f.Close() }

// Next checks the chunks of the next n bytes from the current offset and
// returns a reader of exactly those bytes (fewer at the end of the file)
// that a TCP connection sends with sendfile(2): an *io.LimitedReader of the
// underlying *os.File. Reading it advances f.
func (f *FileReader) Next(n int64) (io.Reader, error) {
	pos, err := f.f.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, err
	}
	if err := f.sh.checkRange(pos, n); err != nil {
		return nil, err
	}
	return &io.LimitedReader{R: f.f, N: n}, nil
}

// verifyPiece is how much of a stream is checked ahead of sending it: a
// whole-file download hashes each unverified piece just before it is sent,
// so the piece is in the page cache when sendfile sends it and the first
// byte leaves without waiting for the whole file.
const verifyPiece = 8 << 20

// VerifyResult is what Store.Verify found in one share.
type VerifyResult struct {
	ID        ID     `json:"id"`
	Name      string `json:"name"`
	Size      int64  `json:"size"`              // bytes of the share
	ChunkSize int64  `json:"chunk_size"`        // bytes of its chunks (the last may be shorter)
	Checked   int    `json:"checked"`           // chunks read and hashed
	Damaged   []int  `json:"damaged,omitempty"` // chunks that failed and were marked missing
	Error     string `json:"error,omitempty"`   // why the scrub of this share stopped early
}

// Verify scrubs the shares ids (every share if none) with Share.Verify,
// their reads paced by lim, and reports what it found in each. A share
// unknown to the store is an error wrapping ErrNotFound, before any work.
func (st *Store) Verify(ctx context.Context, ids []ID, lim *Limiter) ([]VerifyResult, error) {
	var shares []*Share
	if len(ids) == 0 {
		shares = st.List()
	}
	for _, id := range ids {
		sh, err := st.Get(id)
		if err != nil {
			return nil, err
		}
		shares = append(shares, sh)
	}
	results := make([]VerifyResult, 0, len(shares))
	for _, sh := range shares {
		checked, damaged, err := sh.Verify(ctx, lim)
		m := sh.Manifest()
		res := VerifyResult{ID: sh.ID(), Name: m.Name(), Size: m.Size(), ChunkSize: m.ChunkSize(), Checked: checked, Damaged: damaged}
		if err != nil {
			if ctx.Err() != nil {
				return results, ctx.Err()
			}
			res.Error = err.Error()
		}
		results = append(results, res)
	}
	return results, nil
}

// Scrub defaults.
const (
	DefaultScrubInterval      = 7 * 24 * time.Hour
	DefaultScrubRate     Rate = 32 << 20 // bytes/s: a TiB in about nine hours, at ~2 % of a core for BLAKE3
	scrubFile                 = "scrub.json"
)

// Scrub verifies every share of the store (Verify) each interval, its reads
// paced by lim so that it leaves the disk and the CPU to transfers, until
// ctx is done; it then returns ctx's error. When the last scrub ended is
// kept in the data directory, so a restart neither scrubs again at once nor
// postpones the next scrub.
func (st *Store) Scrub(ctx context.Context, interval time.Duration, lim *Limiter) error {
	path := filepath.Join(st.dir, scrubFile)
	for {
		var last struct {
			Last time.Time `json:"last"`
		}
		if b, err := os.ReadFile(path); err == nil {
			json.Unmarshal(b, &last)
		}
		if last.Last.IsZero() || last.Last.After(time.Now()) {
			// First run of this store: the shares were verified as they
			// came in, so the first scrub is an interval away.
			last.Last = time.Now()
			if b, err := json.Marshal(last); err == nil {
				WriteFileAtomic(path, b, 0o600)
			}
		}
		select {
		case <-time.After(time.Until(last.Last.Add(interval))):
		case <-ctx.Done():
			return ctx.Err()
		}
		start := time.Now()
		st.log.Info("scrub started", "shares", len(st.List()), "rate", lim.Rate())
		results, err := st.Verify(ctx, nil, lim)
		if err != nil {
			return err
		}
		chunks, damaged := 0, 0
		for _, r := range results {
			chunks += r.Checked
			damaged += len(r.Damaged)
			if r.Error != "" {
				st.log.Warn("scrub: a share could not be checked to its end", "id", r.ID, "err", r.Error)
			}
		}
		st.log.Info("scrub done", "shares", len(results), "chunks", chunks, "damaged", damaged, "took", time.Since(start).Round(time.Second))
		last.Last = time.Now()
		if b, err := json.Marshal(last); err == nil {
			if err := WriteFileAtomic(path, b, 0o600); err != nil {
				st.log.Warn("scrub: cannot record its time", "err", err)
			}
		}
	}
}
