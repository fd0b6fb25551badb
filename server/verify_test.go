package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sharefiles/share/transfer"
	"github.com/sharefiles/share/transfer/transfertest"
)

func TestRotUnderRunningServer(t *testing.T) {
	// Files of a server's store change on disk: a chunk that fails when the
	// server reads it to serve it is marked missing, shown as damaged,
	// counted, never served; `share put` of the same file repairs it. Rot
	// after the first read is found by POST .../verify.
	const chunk = 64 << 10
	content := transfertest.Bytes(40, 40*chunk)
	src := filepath.Join(t.TempDir(), "f.bin")
	if err := os.WriteFile(src, content, 0o644); err != nil {
		t.Fatal(err)
	}
	// Upload with one server, then restart it on the same data directory:
	// nothing is verified in the new process.
	dir := t.TempDir()
	st, err := transfer.OpenStore(dir, transfer.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	first := startServer(t, st, nil)
	info, err := first.client(t, testToken).Put(context.Background(), src, PutOptions{Build: transfer.BuildOptions{ChunkSize: chunk}})
	if err != nil {
		t.Fatal(err)
	}
	first.stop()
	sh, _ := st.Get(info.ID)
	data := sh.DataPath()
	st.Close()
	transfertest.FlipByte(t, data, 5*chunk+100)  // chunk 5
	transfertest.FlipByte(t, data, 30*chunk+100) // chunk 30
	st, err = transfer.OpenStore(dir, transfer.StoreOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ts := startServer(t, st, nil)
	c := ts.client(t, testToken)
	chunkURL := ts.URL + "/v1/shares/" + info.ID.String() + "/chunks/"

	// The chunk route: a good chunk is served, the rotten one is not.
	if r := request(t, "GET", chunkURL+"4", testToken, nil); r.StatusCode != 200 || !bytes.Equal(readBody(t, r), content[4*chunk:5*chunk]) {
		t.Fatalf("good chunk: %d", r.StatusCode)
	}
	r := request(t, "GET", chunkURL+"5", testToken, nil)
	var ae apiError
	json.Unmarshal(readBody(t, r), &ae)
	if r.StatusCode != http.StatusNotFound || ae.Code != "chunk_not_held" {
		t.Fatalf("damaged chunk: %d %+v, want 404 chunk_not_held", r.StatusCode, ae)
	}
	list, err := c.List(context.Background())
	if err != nil || len(list) != 1 || list[0].Complete || list[0].Damaged != 1 || list[0].Have != 39 {
		t.Fatalf("list after the damage: %+v, %v", list, err)
	}
	if r := request(t, "GET", ts.URL+"/v1/shares/"+info.ID.String(), testToken, nil); r.StatusCode != http.StatusConflict {
		t.Fatalf("whole file of a damaged share: %d, want 409", r.StatusCode)
	}
	metrics := string(readBody(t, request(t, "GET", ts.URL+"/metrics", testToken, nil)))
	if !strings.Contains(metrics, "share_damaged_chunks_total 1\n") {
		t.Fatalf("metrics lack share_damaged_chunks_total 1")
	}

	// Putting the file again sends the missing chunk: complete again.
	if info, err = c.Put(context.Background(), src, PutOptions{Build: transfer.BuildOptions{ChunkSize: chunk}}); err != nil || !info.Complete {
		t.Fatalf("repairing put: %+v, %v", info, err)
	}
	// The whole-file route finds chunk 30 as it sends: the response is cut
	// short, and the chunk is marked missing.
	r = request(t, "GET", ts.URL+"/v1/shares/"+info.ID.String(), testToken, nil)
	got, err := io.ReadAll(r.Body)
	if err == nil || len(got) >= len(content) || !bytes.Equal(got, content[:len(got)]) {
		t.Fatalf("whole file with a rotten chunk: %d of %d bytes, %v; want a cut, correct prefix", len(got), len(content), err)
	}
	if list, _ := c.List(context.Background()); list[0].Damaged != 1 || list[0].Have != 39 {
		t.Fatalf("list after the cut download: %+v", list)
	}
	if _, err := c.Put(context.Background(), src, PutOptions{Build: transfer.BuildOptions{ChunkSize: chunk}}); err != nil {
		t.Fatal(err)
	}
	// A clean download goes out whole (and now verified everywhere).
	if r := request(t, "GET", ts.URL+"/v1/shares/"+info.ID.String(), testToken, nil); !bytes.Equal(readBody(t, r), content) {
		t.Fatal("whole file after the repair differs")
	}

	// Rot after the first read: only a scrub finds it.
	transfertest.FlipByte(t, data, 12*chunk)
	res, err := c.Verify(context.Background(), info.ID)
	if err != nil || len(res) != 1 || len(res[0].Damaged) != 1 || res[0].Damaged[0] != 12 {
		t.Fatalf("verify: %+v, %v; want chunk 12 damaged", res, err)
	}
	if res, err := c.Verify(context.Background()); err != nil || len(res) != 1 || len(res[0].Damaged) != 0 {
		t.Fatalf("verify of every share: %+v, %v", res, err)
	}
	if _, err := c.Verify(context.Background(), transfer.ID{}); err == nil {
		t.Fatal("verify of a zero ID succeeded")
	}
	if _, err := ts.client(t, "wrong").Verify(context.Background()); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("verify without the token: %v", err)
	}
	if metrics := string(readBody(t, request(t, "GET", ts.URL+"/metrics", testToken, nil))); !strings.Contains(metrics, "share_damaged_chunks_total 3\n") {
		t.Fatalf("metrics lack share_damaged_chunks_total 3")
	}
}
