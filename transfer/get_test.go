package transfer

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// longNames are names at and around the limits: share's own working names
// beside them (".NAME.share-partial", CreateShare's "..NAME.share-partial.tmp-N")
// used to be over MaxNameLen from 225 bytes on.
var longNames = []string{
	"short.bin",
	strings.Repeat("a", 85),        // the longest partial name kept whole
	strings.Repeat("a", 86),        // the shortest one cut
	strings.Repeat("漢", 75),        // 225 bytes: the first that failed
	strings.Repeat("b", 255),       // MaxNameLen, ASCII
	strings.Repeat("漢", 85),        // MaxNameLen, 3-byte characters
	strings.Repeat("é", 127) + "x", // MaxNameLen, 2-byte characters
	"😀" + strings.Repeat("x", 251), // a 4-byte character first
}

// TestGetLongNames: any name the file system accepts downloads under its own
// name, for a file and for a directory share, and the working directory's
// name stays short, deterministic and recognizable.
func TestGetLongNames(t *testing.T) {
	for _, name := range longNames {
		t.Run(cutName(name, 12), func(t *testing.T) {
			if len(name) > MaxNameLen {
				t.Fatalf("bad test name of %d bytes", len(name))
			}
			content := randomBytes(7, 3*MinChunkSize+5)
			st := openStore(t)
			sh := seedStore(t, st, name, content, MinChunkSize)
			dir := t.TempDir()
			out, _, err := Get(context.Background(), sh.ID(), GetOptions{Out: dir}, st)
			if err != nil {
				t.Fatal(err)
			}
			if filepath.Base(out) != name {
				t.Fatalf("written as %q", filepath.Base(out))
			}
			if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, content) {
				t.Fatalf("content differs: %v", err)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 1 {
				t.Fatalf("left behind: %v", ents)
			}

			// A directory share of that name, holding a file of that name.
			src := filepath.Join(t.TempDir(), name)
			writeTree(t, src, map[string]string{name: "x", "sub/" + name: string(content)})
			dsh := shareFromTree(t, st, src, MinChunkSize)
			out, _, err = Get(context.Background(), dsh.ID(), GetOptions{Out: t.TempDir()}, st)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := os.ReadFile(filepath.Join(out, "sub", name)); err != nil || !bytes.Equal(got, content) || filepath.Base(out) != name {
				t.Fatalf("directory share: %v", err)
			}

			// The partial directory.
			p := filepath.Base(PartialDir(filepath.Join(dir, name)))
			if len(p) > maxWorkName || !utf8.ValidString(p) || !strings.HasSuffix(p, ".share-partial") ||
				!strings.HasPrefix(p, "."+cutName(name, 20)) || p != filepath.Base(PartialDir(filepath.Join(dir, name))) {
				t.Fatalf("partial dir %q (%d bytes)", p, len(p))
			}
			if len(name) <= 85 && p != "."+name+".share-partial" {
				t.Fatalf("a short name's partial dir changed: %q", p)
			}
		})
	}
	// Two long names that share their first 100 bytes get different ones.
	a, b := strings.Repeat("漢", 80)+"a", strings.Repeat("漢", 80)+"b"
	if PartialDir(a) == PartialDir(b) {
		t.Fatal("two names share a partial dir")
	}
}

// TestGetLongNameResumes: an interrupted download of a long name resumes
// from its partial directory, also from one named as share named it before
// long names were cut.
func TestGetLongNameResumes(t *testing.T) {
	for _, oldNaming := range []bool{false, true} {
		name := strings.Repeat("漢", 40) // 120 bytes: cut, and its old name was valid
		content := randomBytes(9, 20*MinChunkSize)
		st := openStore(t)
		sh := seedStore(t, st, name, content, MinChunkSize)
		dir := t.TempDir()
		ctx, cancel := context.WithCancel(context.Background())
		_, _, err := Get(ctx, sh.ID(), GetOptions{Out: dir, Download: DownloadOptions{MaxInFlight: 1, PerSource: 1,
			Progress: func(p Progress) {
				if p.Chunks == 7 {
					cancel()
				}
			}}}, st)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("interrupted get: %v", err)
		}
		partial := PartialDir(filepath.Join(dir, name))
		if oldNaming {
			if err := os.Rename(partial, filepath.Join(dir, "."+name+".share-partial")); err != nil {
				t.Fatal(err)
			}
		}
		src := &wrapSource{Source: st, name: "store"}
		out, stats, err := Get(context.Background(), sh.ID(), GetOptions{Out: dir}, src)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(out); !bytes.Equal(got, content) {
			t.Fatal("content differs")
		}
		if stats.Chunks > 13 || src.served.Load() > 13 {
			t.Fatalf("old naming %v: refetched: %d chunks fetched after 7 were held", oldNaming, stats.Chunks)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Fatalf("left behind: %v", ents)
		}
	}
}

// TestCreateShareLeftovers: the temporary directory of a CreateShare killed
// before its rename is removed by the next download of the same output,
// also for names with glob metacharacters.
func TestCreateShareLeftovers(t *testing.T) {
	for _, name := range []string{"plain", "a[1]*?.txt", strings.Repeat("漢", 85)} {
		st := openStore(t)
		sh := seedStore(t, st, name, randomBytes(1, 100), MinChunkSize)
		dir := t.TempDir()
		out := filepath.Join(dir, name)
		left := filepath.Join(dir, tempPrefix(PartialDir(out))+"123456")
		if err := os.Mkdir(left, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, _, err := Get(context.Background(), sh.ID(), GetOptions{Out: dir}, st); err != nil {
			t.Fatal(err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 1 || ents[0].Name() != name {
			t.Fatalf("%q: left behind: %v", name, ents)
		}
	}
}

// TestWriteFileAtomicLongName: the temporary file beside a long name fits.
func TestWriteFileAtomicLongName(t *testing.T) {
	p := filepath.Join(t.TempDir(), strings.Repeat("漢", 85))
	if err := WriteFileAtomic(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != "x" {
		t.Fatalf("%q %v", b, err)
	}
}
