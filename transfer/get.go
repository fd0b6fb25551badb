package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
}

// Get downloads share id from sources to a file or directory (see
// GetOptions.Out) and returns its path. It works in a hidden partial
// directory beside the output, ".NAME.share-partial", and moves the result
// into place when every chunk is verified; if interrupted (an error, a
// signal, kill -9), running Get again for the same output resumes without
// fetching again the chunks it has.
func Get(ctx context.Context, id ID, opts GetOptions, sources ...Source) (string, Stats, error) {
	m, err := FetchManifest(ctx, id, sources...)
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
	partial := filepath.Join(filepath.Dir(out), "."+filepath.Base(out)+".share-partial")
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
		return "", Stats{}, err
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
	// Leftovers of a CreateShare that was killed before its rename.
	if old, _ := filepath.Glob(filepath.Join(filepath.Dir(dir), "."+filepath.Base(dir)+".tmp-*")); len(old) > 0 {
		for _, o := range old {
			os.RemoveAll(o)
		}
	}
	return CreateShare(dir, m)
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
