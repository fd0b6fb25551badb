package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestReadAddrsFile(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "none.addrs")
	calls := 0
	_, err := readAddrsFile(context.Background(), missing, 300*time.Millisecond, func() { calls++ })
	if err == nil || !strings.Contains(err.Error(), "no such file") || !strings.Contains(err.Error(), "--addrs-file "+missing) || calls != 1 {
		t.Fatalf("missing file: %v, waiting called %d times", err, calls)
	}
	empty := filepath.Join(dir, "empty.addrs")
	os.WriteFile(empty, []byte("# nothing yet\n"), 0o644)
	if _, err := readAddrsFile(context.Background(), empty, 300*time.Millisecond, nil); err == nil || !strings.Contains(err.Error(), "no address in it") {
		t.Fatalf("empty file: %v", err)
	}
	late := filepath.Join(dir, "late.addrs")
	go func() {
		time.Sleep(300 * time.Millisecond)
		os.WriteFile(late, []byte("/ip4/127.0.0.1/tcp/7071/p2p/12D3KooWRe\n\n"), 0o644)
	}()
	addrs, err := readAddrsFile(context.Background(), late, 10*time.Second, nil)
	if err != nil || len(addrs) != 1 || addrs[0] != "/ip4/127.0.0.1/tcp/7071/p2p/12D3KooWRe" {
		t.Fatalf("a file written later: %v %v", addrs, err)
	}
}
