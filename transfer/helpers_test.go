package transfer

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// writeTree creates files (path -> content) under dir.
func writeTree(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// mustManifest builds the manifest of a share named name holding files (a
// single file: one entry keyed by name) with the given chunk size.
func mustManifest(t testing.TB, name string, isDir bool, chunkSize int64, files map[string]string) *Manifest {
	t.Helper()
	root := filepath.Join(t.TempDir(), name)
	if isDir {
		writeTree(t, root, files)
	} else {
		writeTree(t, filepath.Dir(root), map[string]string{name: files[name]})
	}
	m, err := BuildManifest(context.Background(), root, BuildOptions{ChunkSize: chunkSize})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// randomBytes returns n deterministic pseudo-random bytes.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for k := range 8 {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// seedStore imports content as a complete single-file share.
func seedStore(t testing.TB, st *Store, name string, content []byte, chunkSize int64) *Share {
	t.Helper()
	sh, err := st.Import(context.Background(), name, strings.NewReader(string(content)), ImportOptions{ChunkSize: chunkSize})
	if err != nil {
		t.Fatal(err)
	}
	return sh
}

func openStore(t testing.TB) *Store {
	t.Helper()
	st, err := OpenStore(t.TempDir(), StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
