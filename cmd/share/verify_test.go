package main

import (
	"bytes"
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sharefiles/share/transfer"
	"github.com/sharefiles/share/transfer/transfertest"
)

func TestVerifyFindsRot(t *testing.T) {
	const chunk = 64 << 10
	data := t.TempDir()
	d := startServe(t, data)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f.bin"), 32*chunk, 7)
	r := share(t, dir, d.env(), "put", "--chunk-size", "64KiB", "f.bin")
	if r.code != 0 {
		t.Fatalf("put: %d %s", r.code, r.stderr)
	}
	id := strings.TrimSpace(r.stdout)
	stored := filepath.Join(data, "shares", id, "data", "f.bin")

	// Through the running daemon.
	if r = share(t, dir, d.env(), "verify"); r.code != 0 || !strings.Contains(r.stdout, "32 chunks ok") {
		t.Fatalf("verify of a sound store: %d %q %s", r.code, r.stdout, r.stderr)
	}
	transfertest.FlipByte(t, stored, 9*chunk+1)
	r = share(t, dir, d.env(), "verify", id)
	if r.code != 1 || !strings.Contains(r.stdout, "1 of 32 chunks damaged, marked missing: 9") || !strings.Contains(r.stderr, "share put --chunk-size 64KiB f.bin   # "+id) {
		t.Fatalf("verify of a rotten share: %d %q %s", r.code, r.stdout, r.stderr)
	}
	if r = share(t, dir, d.env(), "ls"); !strings.Contains(r.stdout, "damaged 31/32") {
		t.Fatalf("ls of a damaged share: %q", r.stdout)
	}
	if got := metric(t, d, "share_damaged_chunks_total"); got != 1 {
		t.Fatalf("share_damaged_chunks_total = %v, want 1", got)
	}
	if r = share(t, dir, d.env(), "put", "--chunk-size", "64KiB", "f.bin"); r.code != 0 {
		t.Fatalf("repairing put: %d %s", r.code, r.stderr)
	}

	// With no daemon, on the data directory itself.
	d.stop(t)
	transfertest.FlipByte(t, stored, 20*chunk)
	r = share(t, dir, nil, "verify", "--data", data)
	if r.code != 1 || !strings.Contains(r.stdout, "marked missing: 20") {
		t.Fatalf("verify --data: %d %q %s", r.code, r.stdout, r.stderr)
	}
	d = startServe(t, data)
	if r = share(t, dir, d.env(), "ls", "--json"); !strings.Contains(r.stdout, `"damaged": 1`) {
		t.Fatalf("ls --json after a restart: %q", r.stdout)
	}
	share(t, dir, d.env(), "put", "--chunk-size", "64KiB", "f.bin")
	if r = share(t, dir, d.env(), "verify", "--json"); r.code != 0 || !strings.Contains(r.stdout, `"checked":32`) {
		t.Fatalf("verify --json after the repair: %d %q %s", r.code, r.stdout, r.stderr)
	}
	if r = share(t, dir, d.env(), "verify", "bagaaihrahkaztbvc3oon2xhhkwgmeljjwmgxysvqm275ktk4kabzspjukqsa"); r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("verify of an unknown share: %d %s", r.code, r.stderr)
	}
}

func TestPartialUploadExpires(t *testing.T) {
	d := startServe(t, "", "--partial-ttl", "2s")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f.bin"), 1<<20, 8)
	m, err := transfer.BuildManifest(context.Background(), filepath.Join(dir, "f.bin"), transfer.BuildOptions{ChunkSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", d.URL+"/v1/shares", bytes.NewReader(m.Bytes()))
	req.Header.Set("Authorization", "Bearer "+d.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("manifest POST: %d", resp.StatusCode)
	}
	if r := share(t, dir, d.env(), "ls"); !strings.Contains(r.stdout, "partial 0/16") {
		t.Fatalf("ls of a fresh upload: %q", r.stdout)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := share(t, dir, d.env(), "ls", "--json")
		if strings.Contains(r.stdout, `"shares": []`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("abandoned upload still listed after 30 s with --partial-ttl 2s: %q", r.stdout)
		}
		time.Sleep(200 * time.Millisecond)
	}
	d.stop(t)
	if !strings.Contains(d.log.String(), "removed an abandoned upload") {
		t.Fatalf("nothing logged:\n%s", d.log)
	}
}
