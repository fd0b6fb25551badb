// Package transfertest is the conformance suite for transfer.Source: every
// transport (the local store, the HTTP client, the libp2p protocol) runs it,
// so that all of them keep one contract.
package transfertest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/sharefiles/share/transfer"
)

// Serve exposes the shares of st through the transport under test and
// returns a Source that reaches them through it. It registers its own
// cleanup with t.
type Serve func(t *testing.T, st *transfer.Store) transfer.Source

// Fixture is what the suite put in the store.
type Fixture struct {
	Complete *transfer.Share // a complete single-file share of several chunks
	Content  []byte          // its bytes
	Partial  *transfer.Share // a partial share holding only its even chunks
	Missing  transfer.ID     // an ID the store does not have
}

// NewStore returns a store holding the Fixture's shares.
func NewStore(t *testing.T) (*transfer.Store, *Fixture) {
	t.Helper()
	st, err := transfer.OpenStore(t.TempDir(), transfer.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &Fixture{Content: Bytes(1, 5*transfer.MinChunkSize+999)}
	if f.Complete, err = st.Import(context.Background(), "complete.bin", bytes.NewReader(f.Content), transfer.ImportOptions{ChunkSize: transfer.MinChunkSize}); err != nil {
		t.Fatal(err)
	}
	// The partial share: a second file, of which only even chunks are put.
	other := Bytes(2, 4*transfer.MinChunkSize)
	src := filepath.Join(t.TempDir(), "partial.bin")
	if err := os.WriteFile(src, other, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := transfer.BuildManifest(context.Background(), src, transfer.BuildOptions{ChunkSize: transfer.MinChunkSize})
	if err != nil {
		t.Fatal(err)
	}
	if f.Partial, _, err = st.Create(m); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < m.NumChunks(); i += 2 {
		off, n := m.ChunkRange(i)
		if err := f.Partial.PutChunk(i, other[off:off+n]); err != nil {
			t.Fatal(err)
		}
	}
	missing, err := transfer.NewManifest("missing", false, transfer.MinChunkSize, []transfer.File{{Path: "missing", Size: 0}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.Missing = missing.ID()
	return st, f
}

// Bytes returns n deterministic pseudo-random bytes.
func Bytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, ^seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// Run checks a transport against the Source contract.
func Run(t *testing.T, serve Serve) {
	st, f := NewStore(t)
	src := serve(t, st)
	ctx := context.Background()
	m := f.Complete.Manifest()

	t.Run("Manifest", func(t *testing.T) {
		raw, err := src.Manifest(ctx, m.ID())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := transfer.VerifyManifest(m.ID(), raw); err != nil {
			t.Fatal(err)
		}
		if _, err := src.Manifest(ctx, f.Missing); !errors.Is(err, transfer.ErrNotFound) {
			t.Fatalf("unknown share: %v, want ErrNotFound", err)
		}
	})
	t.Run("Have", func(t *testing.T) {
		bf, err := src.Have(ctx, m.ID(), m.NumChunks())
		if err != nil || !bf.Full() || bf.Len() != m.NumChunks() {
			t.Fatalf("complete share: %v, %d of %d", err, bf.Count(), m.NumChunks())
		}
		pm := f.Partial.Manifest()
		bf, err = src.Have(ctx, pm.ID(), pm.NumChunks())
		if err != nil {
			t.Fatal(err)
		}
		for i := range pm.NumChunks() {
			if bf.Has(i) != (i%2 == 0) {
				t.Fatalf("partial share: chunk %d held=%v", i, bf.Has(i))
			}
		}
		if _, err := src.Have(ctx, f.Missing, 1); !errors.Is(err, transfer.ErrNotFound) {
			t.Fatalf("unknown share: %v, want ErrNotFound", err)
		}
	})
	t.Run("OpenChunk", func(t *testing.T) {
		for i := range m.NumChunks() {
			rc, err := src.OpenChunk(ctx, m.ID(), i)
			if err != nil {
				t.Fatalf("chunk %d: %v", i, err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			off, n := m.ChunkRange(i)
			if err != nil || !bytes.Equal(got, f.Content[off:off+n]) {
				t.Fatalf("chunk %d: %v, %d bytes, want %d equal bytes", i, err, len(got), n)
			}
		}
	})
	t.Run("OpenChunkErrors", func(t *testing.T) {
		if _, err := src.OpenChunk(ctx, f.Missing, 0); !errors.Is(err, transfer.ErrNotFound) {
			t.Fatalf("unknown share: %v, want ErrNotFound", err)
		}
		if _, err := src.OpenChunk(ctx, f.Partial.ID(), 1); !errors.Is(err, transfer.ErrChunkNotHeld) {
			t.Fatalf("chunk not held: %v, want ErrChunkNotHeld", err)
		}
		if _, err := src.OpenChunk(ctx, m.ID(), m.NumChunks()); !errors.Is(err, transfer.ErrChunkRange) {
			t.Fatalf("index past the end: %v, want ErrChunkRange", err)
		}
	})
	t.Run("Download", func(t *testing.T) {
		dst, err := transfer.CreateShare(filepath.Join(t.TempDir(), "dl"), m)
		if err != nil {
			t.Fatal(err)
		}
		defer dst.Close()
		d := transfer.NewDownload(dst, transfer.DownloadOptions{})
		d.AddSource(src)
		if _, err := d.Run(ctx); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(dst.DataPath())
		if !bytes.Equal(got, f.Content) {
			t.Fatal("downloaded bytes differ")
		}
	})
	t.Run("Cancel", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if rc, err := src.OpenChunk(cctx, m.ID(), 0); err == nil {
			// A transport may answer before it looks at ctx, but reading
			// must not hang.
			io.Copy(io.Discard, rc)
			rc.Close()
		}
	})
}

// FlipByte inverts the byte at off of the file at path, as rot on disk
// would: a test of verification corrupts a stored chunk with it. (Package
// transfer's own tests keep a copy: they cannot import this package.)
func FlipByte(t testing.TB, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
