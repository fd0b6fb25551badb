package transfer

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"file.txt", true},
		{"with space", true},
		{"ünïcödé", true},
		{"%2e%2e", true}, // literal percent signs: transfer never URL-decodes
		{"..foo", true},
		{"", false},
		{".", false},
		{"..", false},
		{"a/b", false},
		{"/etc", false},
		{`a\b`, false},
		{`..\..\x`, false},
		{"a\x00b", false},
		{"a\nb", false},
		{"a\x7fb", false},
		{"a\u0085b", false}, // C1 control
		{"\xff\xfe", false},
		{strings.Repeat("a", MaxNameLen), true},
		{strings.Repeat("a", MaxNameLen+1), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidName(tt.name)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrBadName) {
				t.Fatalf("error %v does not wrap ErrBadName", err)
			}
		})
	}
}

func TestValidPath(t *testing.T) {
	tests := []struct {
		path string
		ok   bool
	}{
		{"a", true},
		{"a/b/c.txt", true},
		{"", false},
		{"/a", false},
		{"a/", false},
		{"a//b", false},
		{"a/./b", false},
		{"a/../b", false},
		{"../a", false},
		{"..", false},
		{`a\..\b`, false},
		{"C:/x", true}, // a valid name on Unix; ':' is harmless here
		{"a/b\x00", false},
		{strings.Repeat("a/", MaxPathLen/2) + "a", false},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			if err := ValidPath(tt.path); (err == nil) != tt.ok {
				t.Fatalf("ValidPath(%q) = %v, want ok=%v", tt.path, err, tt.ok)
			}
		})
	}
}

// A symlink planted inside a share's data directory must not let writes or
// reads escape it: every access goes through os.Root.
func TestTreeRefusesSymlinkEscape(t *testing.T) {
	outside := t.TempDir()
	target := filepath.Join(outside, "victim")
	if err := os.WriteFile(target, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := mustManifest(t, "d", true, MinChunkSize, map[string]string{"x/f": strings.Repeat("A", 100)})
	dir := filepath.Join(t.TempDir(), "share")
	sh, err := CreateShare(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	// Replace the directory x with a symlink to outside.
	x := filepath.Join(sh.DataPath(), "x")
	if err := os.RemoveAll(x); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, x); err != nil {
		t.Fatal(err)
	}
	os.Rename(target, filepath.Join(outside, "f"))
	sh.tree.closeFiles()
	data := []byte(strings.Repeat("A", 100))
	if err := sh.PutChunk(0, data); err == nil {
		t.Fatal("PutChunk wrote through a symlink that leaves the share")
	}
	got, _ := os.ReadFile(filepath.Join(outside, "f"))
	if string(got) != "precious" {
		t.Fatalf("file outside the share changed: %q", got)
	}
}
