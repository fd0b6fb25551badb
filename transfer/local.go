package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Local copies. When the daemon a client downloads from runs on the same
// machine (a `share peer` fetching from its swarm), the share's bytes reach
// this machine's disk once, received and verified by the daemon into its
// store. Get then makes its output from the store's files instead of
// receiving, verifying and writing every byte a second time, with the best
// of, per file:
//
//  1. a reflink (FICLONE), where the file system shares extents between files
//     (btrfs, XFS): an independent file that costs no data copy;
//  2. a hard link, when the store is on the output's file system and its file
//     belongs to the user running Get: the output is the store's file under a
//     second name. The store never writes into a file that has other links
//     (to write one again it first gives its copy an inode of its own, see
//     unshare), so the output does not change under the user; a user who
//     edits the output in place edits the daemon's copy too, which the
//     daemon's verification then finds damaged: edit a copy, not in place;
//  3. copy_file_range (an in-kernel copy, also across file systems where the
//     kernel allows), chunk range by chunk range as the daemon verifies them,
//     so the copy ends right after the download;
//  4. a plain read and write copy.
//
// Only the client acts on files, with its own permissions: the daemon tells
// where its copy is (LocalCopy) and nothing else, so no request can make it
// read or write outside its store, and a client gets nothing it could not
// read itself. The client checks that the path is a store's data path for
// the share, opens it below that directory only (os.Root: a symlink cannot
// lead outside), and that its device and inode numbers are those the daemon
// reported (else the daemon is on another machine or in another mount
// namespace, and Get downloads as usual).

// CloneMethod says how Get made its output.
type CloneMethod uint8

// Clone methods, best first after CloneNone.
const (
	CloneNone      CloneMethod = iota // downloaded chunk by chunk: no local copy used
	CloneReflink                      // FICLONE: an independent file sharing the store's extents
	CloneHardlink                     // the store's file under a second name
	CloneCopyRange                    // copy_file_range, in the kernel
	CloneCopy                         // read and written by Get
)

func (c CloneMethod) String() string {
	switch c {
	case CloneNone:
		return "download"
	case CloneReflink:
		return "reflink"
	case CloneHardlink:
		return "hard link"
	case CloneCopyRange:
		return "copy_file_range"
	case CloneCopy:
		return "copy"
	}
	return fmt.Sprintf("CloneMethod(%d)", uint8(c))
}

// LocalCopy is where a daemon on this machine keeps a share: the answer of
// GET /v1/shares/{id}/local.
type LocalCopy struct {
	// Data is the absolute path of the share's file or top directory in the
	// daemon's store: DATA/shares/ID/data/NAME.
	Data string `json:"data"`
	// Dev and Ino identify Data as the daemon sees it (lstat). A client that
	// sees other numbers at that path is not on the daemon's machine.
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
	// Complete: every chunk is held, verified and synced, and the files
	// have their final modes.
	Complete bool `json:"complete"`
}

// LocalCopy tells where the share's data is on this machine.
func (s *Share) LocalCopy() (LocalCopy, error) {
	p, err := filepath.Abs(s.DataPath())
	if err != nil {
		return LocalCopy{}, err
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return LocalCopy{}, err
	}
	dev, ino, _, ok := fileID(fi)
	if !ok {
		return LocalCopy{}, errors.New("local copy: no inode numbers on this system")
	}
	return LocalCopy{Data: p, Dev: dev, Ino: ino, Complete: s.Complete()}, nil
}

// LocalSource is a Source whose daemon may keep the share on this machine:
// it tells where (LocalCopy), and its have long poll (HaveWaiter) follows
// the daemon's own download.
type LocalSource interface {
	Source
	HaveWaiter
	// LocalCopy returns where the daemon keeps share id; an error if it
	// does not say (another machine, not a peer, not held).
	LocalCopy(ctx context.Context, id ID) (LocalCopy, error)
}

// fileID returns the device, inode and owner of fi, if the system has them.
func fileID(fi fs.FileInfo) (dev, ino uint64, uid int, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, 0, false
	}
	return uint64(st.Dev), st.Ino, int(st.Uid), true
}

// localPoll is how long Get waits between looks at a daemon whose download
// holds every chunk but is not yet recorded complete (its files being synced).
const localPoll = 5 * time.Millisecond

// localStore is the store side of a local copy, as the client sees it.
type localStore struct {
	m    *Manifest
	lc   LocalCopy
	root *os.Root // DATA/shares/ID/data
	open map[int]*os.File
}

// openLocalCopy checks lc for share m and opens its data directory.
func openLocalCopy(m *Manifest, lc LocalCopy) (*localStore, error) {
	dir := filepath.Dir(lc.Data)
	if !filepath.IsAbs(lc.Data) || filepath.Clean(lc.Data) != lc.Data || filepath.Base(lc.Data) != m.Name() ||
		filepath.Base(dir) != dataDir || filepath.Base(filepath.Dir(dir)) != m.ID().String() {
		return nil, fmt.Errorf("local copy: %q is not a store's data path for %s", lc.Data, m.ID())
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("local copy: %w", err)
	}
	fi, err := root.Lstat(m.Name())
	if err != nil {
		root.Close()
		return nil, fmt.Errorf("local copy: %w", err)
	}
	dev, ino, _, ok := fileID(fi)
	if !ok || dev != lc.Dev || ino != lc.Ino || fi.IsDir() != m.IsDir() {
		root.Close()
		return nil, fmt.Errorf("local copy: %s is not the daemon's file (another machine or mount namespace)", lc.Data)
	}
	return &localStore{m: m, lc: lc, root: root, open: map[int]*os.File{}}, nil
}

// path returns file k's path below the data directory.
func (ls *localStore) path(k int) string {
	if !ls.m.IsDir() {
		return ls.m.Name()
	}
	return ls.m.Name() + "/" + ls.m.files[k].Path
}

// file returns a read handle of file k, which must be a regular file.
func (ls *localStore) file(k int) (*os.File, error) {
	if f, ok := ls.open[k]; ok {
		return f, nil
	}
	if len(ls.open) >= maxOpenFiles {
		for j, f := range ls.open {
			f.Close()
			delete(ls.open, j)
			break
		}
	}
	f, err := ls.root.Open(ls.path(k))
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s: not a regular file", ls.path(k))
	}
	if err == nil && fi.Size() != ls.m.files[k].Size {
		err = fmt.Errorf("%s: %d bytes, the manifest says %d", ls.path(k), fi.Size(), ls.m.files[k].Size)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	ls.open[k] = f
	return f, nil
}

func (ls *localStore) close() {
	for _, f := range ls.open {
		f.Close()
	}
	ls.root.Close()
}

// plan chooses how to make files in dir from the store: a reflink or a
// hard link (of a file of this user) when dir is on the store's file system,
// made once the share is complete; else a copy, chunk by chunk as the daemon
// verifies them.
func (ls *localStore) plan(dir string) CloneMethod {
	fi, err := os.Stat(dir)
	if err != nil {
		return CloneCopyRange
	}
	dev, _, _, ok := fileID(fi)
	if !ok || dev != ls.lc.Dev {
		return CloneCopyRange
	}
	for k, f := range ls.m.files {
		if f.Size == 0 {
			continue
		}
		src, err := ls.file(k)
		if err != nil {
			return CloneCopyRange
		}
		if probeReflink(src, dir, f.Size) {
			return CloneReflink
		}
		sfi, err := src.Stat()
		if err != nil {
			return CloneCopyRange
		}
		if _, _, uid, _ := fileID(sfi); uid != os.Geteuid() {
			return CloneCopyRange
		}
		break
	}
	return CloneHardlink
}

// probeLen is how much of a file probeReflink clones: a whole number of
// blocks on any file system.
const probeLen = 1 << 20

// probeReflink reports whether src can be cloned into a new file in dir.
func probeReflink(src *os.File, dir string, size int64) bool {
	tmp, err := os.CreateTemp(dir, ".share-reflink-probe-*")
	if err != nil {
		return false
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	n := int64(0) // to the end of the file
	if size > probeLen {
		n = probeLen
	}
	return reflinkRange(tmp, src, n) == nil
}

// getLocal makes Get's output from a daemon's local copy of m. It returns
// handled false, with nothing written, when there is no usable local copy:
// the daemon is not on this machine, its files cannot be read, or a download
// over the network is under way in work (it resumes there).
func getLocal(ctx context.Context, m *Manifest, out, work string, opts GetOptions) (stats Stats, handled bool, err error) {
	begin := time.Now()
	log := opts.Download.Logger
	if log == nil {
		log = slog.Default()
	}
	lc, err := opts.Local.LocalCopy(ctx, m.ID())
	if err != nil {
		log.Debug("no local copy; downloading", "share", m.ID(), "err", err)
		return Stats{}, false, nil
	}
	ls, err := openLocalCopy(m, lc)
	if err != nil {
		log.Debug("local copy not usable; downloading", "share", m.ID(), "err", err)
		return Stats{}, false, nil
	}
	defer ls.close()
	if sh, err := OpenShare(work); err == nil {
		resume := sh.ID() == m.ID() && sh.HaveCount() > 0
		sh.Close()
		if resume {
			return Stats{}, false, nil
		}
	}
	if err := os.RemoveAll(work); err != nil {
		return Stats{}, true, err
	}
	lg := &localGet{m: m, ls: ls, src: opts.Local, work: work, opts: opts, log: log}
	lg.plan = ls.plan(filepath.Dir(work))
	lg.method = lg.plan
	defer func() {
		if lg.dst != nil {
			lg.dst.close()
		}
		if err != nil {
			os.RemoveAll(work)
		}
	}()
	if err := lg.run(ctx); err != nil {
		return Stats{}, true, fmt.Errorf("get %s from the local copy: %w", m.ID(), err)
	}
	if opts.Force {
		if err := os.RemoveAll(out); err != nil {
			return Stats{}, true, err
		}
	}
	if err := os.Rename(filepath.Join(work, m.Name()), out); err != nil {
		return Stats{}, true, err
	}
	if err := syncDir(filepath.Dir(out)); err != nil {
		return Stats{}, true, err
	}
	os.RemoveAll(work)
	return Stats{Elapsed: time.Since(begin), Local: lg.method}, true, nil
}

// localGet is one getLocal: it follows the daemon's download and makes the
// output files in work.
type localGet struct {
	m      *Manifest
	ls     *localStore
	src    LocalSource
	work   string
	opts   GetOptions
	log    *slog.Logger
	plan   CloneMethod // what ls.plan chose
	method CloneMethod // what happened: the weakest method used
	dst    *tree       // the output, below work; nil until created
	copied Bitfield    // chunks copied (CloneCopyRange, CloneCopy)
	buf    []byte      // for CloneCopy
}

func (lg *localGet) run(ctx context.Context) error {
	m := lg.m
	if err := os.Mkdir(lg.work, 0o700); err != nil {
		return err
	}
	t, err := openTree(lg.work, m)
	if err != nil {
		return err
	}
	lg.dst = t
	copying := lg.plan >= CloneCopyRange
	if copying {
		if err := t.create(); err != nil {
			return err
		}
		lg.copied = NewBitfield(m.NumChunks())
	}
	if err := lg.follow(ctx, copying); err != nil {
		return err
	}
	if !copying {
		if err := lg.cloneFiles(); err != nil {
			return err
		}
	}
	t.closeFiles()
	return t.applyModes()
}

// follow waits for the daemon's download to end, reporting progress, and
// copies each chunk as it arrives if copying. It returns once the daemon
// records the share complete.
func (lg *localGet) follow(ctx context.Context, copying bool) error {
	m := lg.m
	n := m.NumChunks()
	stall := lg.opts.Download.StallTimeout
	if stall <= 0 {
		stall = DefaultStallTimeout
	}
	bf, err := lg.src.Have(ctx, m.ID(), n)
	if err != nil {
		return err
	}
	if lg.opts.Started != nil {
		lg.opts.Started(m, heldBytes(m, bf))
	}
	last, lastCount, fails := time.Now(), -1, 0
	for {
		if copying {
			if err := lg.copyChunks(bf); err != nil {
				return err
			}
		}
		if c := bf.Count(); c != lastCount {
			last, lastCount = time.Now(), c
			if p := lg.opts.Download.Progress; p != nil {
				b := heldBytes(m, bf)
				p(Progress{Chunks: c, TotalChunks: n, Bytes: b, TotalBytes: m.Size(), Index: -1})
			}
		}
		if bf.Full() {
			break
		}
		if time.Since(last) > stall {
			return fmt.Errorf("%w: the daemon's download got no chunk for %v; %d of %d chunks held", ErrStalled, stall, bf.Count(), n)
		}
		next, err := lg.src.WaitHave(ctx, m.ID(), n, bf.Digest())
		switch {
		case err == nil:
			bf, fails = next, 0
		case ctx.Err() != nil:
			return ctx.Err()
		case Permanent(err):
			return err
		default: // the daemon restarting: try again later (the policy of retry.go)
			fails++
			lg.log.Debug("have long poll failed", "err", err)
			select {
			case <-time.After(Backoff(fails)):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	for {
		lc, err := lg.src.LocalCopy(ctx, m.ID())
		if err != nil {
			return err
		}
		if lc.Dev != lg.ls.lc.Dev || lc.Ino != lg.ls.lc.Ino || lc.Data != lg.ls.lc.Data {
			return fmt.Errorf("the daemon's copy moved to %s", lc.Data)
		}
		if lc.Complete {
			return nil
		}
		if time.Since(last) > stall {
			return fmt.Errorf("%w: the daemon holds every chunk but did not complete the share in %v", ErrStalled, stall)
		}
		select {
		case <-time.After(localPoll):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// heldBytes returns the bytes of the chunks set in bf.
func heldBytes(m *Manifest, bf Bitfield) int64 {
	n := int64(bf.Count()) * m.chunkSize
	if last := m.NumChunks() - 1; last >= 0 && bf.Has(last) {
		n -= m.chunkSize - int64(m.ChunkLen(last))
	}
	return n
}

// copyChunks copies the chunks held in bf that are not copied yet.
func (lg *localGet) copyChunks(bf Bitfield) error {
	for i := range lg.m.NumChunks() {
		if !bf.Has(i) || lg.copied.Has(i) {
			continue
		}
		off, n := lg.m.ChunkRange(i)
		for _, s := range lg.m.segments(off, n) {
			if err := lg.copySegment(s); err != nil {
				return fmt.Errorf("copy chunk %d: %w", i, err)
			}
		}
		lg.copied.Set(i)
	}
	return nil
}

// copySegment copies one segment of a file from the store to the output,
// in the kernel where it can.
func (lg *localGet) copySegment(s segment) error {
	src, err := lg.ls.file(s.file)
	if err != nil {
		return err
	}
	dst, err := lg.dst.handle(s.file)
	if err != nil {
		return err
	}
	if lg.method == CloneCopyRange {
		err := copyRange(dst, src, s.off, s.n)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errNoCopyRange) {
			return err
		}
		lg.method = CloneCopy
	}
	if lg.buf == nil {
		lg.buf = make([]byte, 1<<20)
	}
	_, err = io.CopyBuffer(io.NewOffsetWriter(dst, s.off), io.NewSectionReader(src, s.off, s.n), lg.buf)
	return err
}

// cloneFiles makes every output file from the complete store copy: reflink
// or hard link as planned, else (or where that fails) a copy.
func (lg *localGet) cloneFiles() error {
	m, t := lg.m, lg.dst
	if m.IsDir() {
		if err := t.root.MkdirAll(t.top, 0o700); err != nil {
			return err
		}
		for _, d := range m.Dirs() {
			if err := t.root.MkdirAll(t.top+"/"+d.Path, 0o700); err != nil {
				return err
			}
		}
	}
	for k, f := range m.Files() {
		p := t.path(k)
		if m.IsDir() {
			if err := t.root.MkdirAll(parentOf(p), 0o700); err != nil {
				return err
			}
		}
		if f.Size == 0 {
			h, err := t.root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			h.Close()
			continue
		}
		src, err := lg.ls.file(k)
		if err != nil {
			return err
		}
		got, err := lg.cloneFile(k, src)
		if err != nil {
			return err
		}
		lg.method = max(lg.method, got)
	}
	return nil
}

// cloneFile makes output file k from src, the store's file, and returns how.
func (lg *localGet) cloneFile(k int, src *os.File) (CloneMethod, error) {
	t := lg.dst
	p := t.path(k)
	if lg.plan == CloneHardlink {
		if ok, err := lg.link(k, src); err != nil || ok {
			return CloneHardlink, err
		}
	}
	h, err := t.root.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	if lg.plan == CloneReflink && reflinkRange(h, src, 0) == nil {
		return CloneReflink, nil
	}
	size := lg.m.files[k].Size
	if err := allocate(h, size); err != nil {
		return 0, err
	}
	if err := copyRange(h, src, 0, size); err == nil {
		return CloneCopyRange, nil
	} else if !errors.Is(err, errNoCopyRange) {
		return 0, err
	}
	if lg.buf == nil {
		lg.buf = make([]byte, 1<<20)
	}
	if _, err := h.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	_, err = io.CopyBuffer(h, io.NewSectionReader(src, 0, size), lg.buf)
	return CloneCopy, err
}

// link hard-links output file k to src if src belongs to this user, and
// checks that the new name is src's inode (not something swapped in at the
// store's path meanwhile). It returns false, with nothing left behind, if
// it cannot.
func (lg *localGet) link(k int, src *os.File) (bool, error) {
	fi, err := src.Stat()
	if err != nil {
		return false, err
	}
	dev, ino, uid, ok := fileID(fi)
	if !ok || uid != os.Geteuid() {
		return false, nil
	}
	from := filepath.Join(filepath.Dir(lg.ls.lc.Data), filepath.FromSlash(lg.ls.path(k)))
	to := filepath.Join(lg.work, filepath.FromSlash(lg.dst.path(k)))
	if err := os.Link(from, to); err != nil {
		lg.log.Debug("hard link failed; copying", "from", from, "err", err)
		return false, nil
	}
	lfi, err := os.Lstat(to)
	if err != nil {
		return false, err
	}
	if ldev, lino, _, _ := fileID(lfi); ldev != dev || lino != ino {
		return false, os.Remove(to)
	}
	return true, nil
}
