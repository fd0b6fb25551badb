package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// GetOptions configures Get. The zero value works.
type GetOptions struct {
	// Out is where the share goes. Empty: its name in the current directory;
	// an existing directory: its name inside that directory.
	Out string
	// Force replaces an existing file or directory at the output path.
	Force bool
	// Started, if set, is called once the manifest is known and the partial
	// download is open, with the bytes already held from an earlier run.
	Started  func(m *Manifest, held int64)
	Download DownloadOptions
	// Local, if set, may keep the share on this machine (a peer's local
	// API): Get then makes its output from that copy, without receiving
	// the bytes again (see LocalSource), and downloads from sources only
	// when it cannot.
	Local LocalSource
	// Retry is the transfer's retry state (see retry.go), shared with the
	// requests the caller made before Get; nil: a new one with
	// Download.StallTimeout.
	Retry *Retry
}

// Get downloads share id from sources to a file or directory (see
// GetOptions.Out) and returns its path. It works in a hidden partial
// directory beside the output (PartialDir), and moves the result into place
// when every chunk is verified; if interrupted (an error, a signal,
// kill -9), running Get again for the same output resumes without fetching
// again the chunks it has.
func Get(ctx context.Context, id ID, opts GetOptions, sources ...Source) (string, Stats, error) {
	retry := opts.Retry
	if retry == nil {
		retry = NewRetry(opts.Download.StallTimeout)
	}
	if opts.Download.Retry == nil {
		opts.Download.Retry = retry
	}
	var m *Manifest
	err := retry.Do(ctx, "manifest", func(ctx context.Context) (err error) {
		m, err = FetchManifest(ctx, id, sources...)
		return err
	})
	if err != nil {
		return "", Stats{}, err
	}
	out, err := outputPath(opts.Out, m.Name())
	if err != nil {
		return "", Stats{}, err
	}
	if _, err := os.Lstat(out); err == nil && !opts.Force {
		return "", Stats{}, fmt.Errorf("%s: %w (use --force to replace it)", out, ErrExists)
	}
	partial := PartialDir(out)
	adoptOldPartial(out, partial, m)
	if opts.Local != nil {
		if stats, ok, err := getLocal(ctx, m, out, partial, opts); ok {
			if err != nil {
				return "", stats, err
			}
			return out, stats, nil
		}
	}
	sh, err := openPartial(partial, m)
	if err != nil {
		return "", Stats{}, fmt.Errorf("get %s: working directory %s: %w", id, partial, err)
	}
	if opts.Started != nil {
		opts.Started(m, sh.heldBytes())
	}
	d := NewDownload(sh, opts.Download)
	for _, src := range sources {
		d.AddSource(src)
	}
	stats, err := d.Run(ctx)
	if err != nil {
		sh.Close()
		return "", stats, fmt.Errorf("get %s: %w", id, err)
	}
	if opts.Force {
		if err := os.RemoveAll(out); err != nil {
			sh.Close()
			return "", stats, err
		}
	}
	if err := sh.MoveTo(out); err != nil {
		sh.Close()
		return "", stats, err
	}
	return out, stats, nil
}

// outputPath resolves GetOptions.Out for a share called name.
func outputPath(out, name string) (string, error) {
	if out == "" {
		return name, nil
	}
	if fi, err := os.Stat(out); err == nil && fi.IsDir() {
		return filepath.Join(out, name), nil
	}
	if _, err := os.Stat(filepath.Dir(out)); err != nil {
		return "", fmt.Errorf("output directory: %w", err)
	}
	return out, nil
}

// PartialDir returns the working directory of a download to out: beside
// it, ".NAME.share-partial" for an output named NAME, or, for a name too
// long for that (over 85 bytes), the name's start, "~" and a hash of the
// whole name in its place, as in ".漢漢…漢~3f2a9c0d1e2b4a5c.share-partial":
// at most 100 bytes, the same on every run.
func PartialDir(out string) string {
	return filepath.Join(filepath.Dir(out), workName(".", filepath.Base(out), ".share-partial"))
}

// openPartial opens the partial download of m in dir, or starts one. A
// partial directory left by a download of other content is replaced.
func openPartial(dir string, m *Manifest) (*Share, error) {
	sh, err := OpenShare(dir)
	switch {
	case err == nil && sh.ID() == m.ID():
		return sh, nil
	case err == nil:
		sh.Close()
	}
	// Another share's download, or what a killed local copy left (see
	// getLocal): start afresh.
	if _, err := os.Lstat(dir); err == nil {
		if err := os.RemoveAll(dir); err != nil {
			return nil, err
		}
	}
	// Leftovers of a CreateShare that was killed before its rename, under
	// its name for dir (and the one it used before long names were cut).
	if ents, err := os.ReadDir(filepath.Dir(dir)); err == nil {
		prefixes := []string{tempPrefix(dir), "." + filepath.Base(dir) + ".tmp-"}
		for _, e := range ents {
			for _, p := range prefixes {
				if strings.HasPrefix(e.Name(), p) {
					os.RemoveAll(filepath.Join(filepath.Dir(dir), e.Name()))
					break
				}
			}
		}
	}
	return CreateShare(dir, m)
}

// adoptOldPartial handles the partial directory of a download to out under
// the naming share used before long names were cut, ".NAME.share-partial"
// whatever NAME's length, when it differs from dir: one of the same share
// is moved to dir, so the download resumes; one of another share, or that
// cannot be opened, is removed.
func adoptOldPartial(out, dir string, m *Manifest) {
	old := filepath.Join(filepath.Dir(out), "."+filepath.Base(out)+".share-partial")
	if old == dir {
		return
	}
	if _, err := os.Lstat(old); err != nil {
		return // none, or a name too long to exist
	}
	if sh, err := OpenShare(old); err == nil {
		same := sh.ID() == m.ID()
		sh.Close()
		if _, err := os.Lstat(dir); same && os.IsNotExist(err) && os.Rename(old, dir) == nil {
			return
		}
	}
	os.RemoveAll(old)
}

// Local reads the chunks of a share from the files it was built from (see
// BuildManifest), to upload them. It is safe for concurrent use.
type Local struct {
	m *Manifest
	t *tree
}

// OpenLocal opens the file or directory at path, whose manifest is m. A
// symlink given as path is followed, as BuildManifest does.
func OpenLocal(path string, m *Manifest) (*Local, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if filepath.Base(abs) != m.Name() {
		return nil, fmt.Errorf("%s: not the share %q", path, m.Name())
	}
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return nil, err
	}
	t, err := openTree(filepath.Dir(abs), m)
	if err != nil {
		return nil, err
	}
	t.top = filepath.Base(abs)
	return &Local{m: m, t: t}, nil
}

// ReadChunk reads chunk i into p, which must be ChunkLen(i) long.
func (l *Local) ReadChunk(i int, p []byte) error {
	if err := l.m.checkIndex(i); err != nil {
		return err
	}
	off, n := l.m.ChunkRange(i)
	if int64(len(p)) != n {
		return fmt.Errorf("read chunk %d: buffer of %d bytes, chunk has %d", i, len(p), n)
	}
	if err := l.t.readAt(p, off); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("chunk %d: %w (did a file change after it was hashed?)", i, err)
		}
		return err
	}
	return nil
}

// Close releases the directory handle.
func (l *Local) Close() error { return l.t.close() }
