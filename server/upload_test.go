package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/sharefiles/share/transfer"
)

func withUploads(t *testing.T) func(*Options) {
	return func(o *Options) {
		st := o.Backend.(*transfer.Store)
		u, err := transfer.OpenUploads(st, transfer.UploadsOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { u.Close() })
		o.Uploads = u
	}
}

func declare(t *testing.T, ts *testServer, spec string) (transfer.UploadInfo, int) {
	t.Helper()
	r := request(t, "POST", ts.URL+"/v1/uploads", testToken, strings.NewReader(spec), "Content-Type", "application/json")
	var info transfer.UploadInfo
	json.Unmarshal(readBody(t, r), &info)
	return info, r.StatusCode
}

// TestUploadSession: the page's upload, over HTTP: declare, send chunks as
// runs from several requests at once, resume by key, commit to the ID that
// a raw upload of the same bytes gets.
func TestUploadSession(t *testing.T) {
	const cs = 64 << 10
	ts := startServer(t, nil, withUploads(t))
	content := bytes.Repeat([]byte("0123456789abcdef"), (10*cs+1000)/16)
	spec := fmt.Sprintf(`{"name":"page.bin","type":"file","chunk_size":%d,"files":[{"size":%d}],"key":"page.bin:1"}`, cs, len(content))
	info, code := declare(t, ts, spec)
	if code != http.StatusCreated || info.Chunks != 11 {
		t.Fatalf("declare: %d %+v", code, info)
	}
	put := func(first int, body []byte, hdr ...string) *http.Response {
		return request(t, "PUT", fmt.Sprintf("%s/v1/uploads/%s/chunks/%d", ts.URL, info.ID, first), testToken, bytes.NewReader(body), hdr...)
	}
	// Bodies that are not runs of whole chunks are refused before reading.
	for _, tc := range []struct {
		first int
		body  []byte
	}{{0, content[:cs-1]}, {0, content[:cs+1]}, {10, content[:cs]}, {3, nil}} {
		if r := put(tc.first, tc.body); r.StatusCode != http.StatusBadRequest {
			t.Errorf("chunk %d with %d bytes: %d", tc.first, len(tc.body), r.StatusCode)
		}
	}
	if r := put(11, content[:10]); r.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("chunk past the end: %d", r.StatusCode)
	}
	// Chunks 0-3 in one request and 8 alone, at once; the rest after a
	// "reload" (a second declaration with the same key).
	var wg sync.WaitGroup
	for _, run := range [][2]int{{0, 4}, {8, 9}} {
		wg.Go(func() {
			if r := put(run[0], content[run[0]*cs:run[1]*cs]); r.StatusCode != 200 {
				t.Errorf("chunks %v: %d", run, r.StatusCode)
			}
		})
	}
	wg.Wait()
	if r := request(t, "POST", ts.URL+"/v1/uploads/"+info.ID+"/commit", testToken, nil); r.StatusCode != http.StatusConflict {
		t.Fatalf("commit of an incomplete upload: %d", r.StatusCode)
	}
	again, code := declare(t, ts, spec)
	if code != http.StatusOK || again.ID != info.ID || again.Have != 5 || again.Received != 5*cs {
		t.Fatalf("resume: %d %+v", code, again)
	}
	// The whole body again from chunk 0, which it holds (a browser resends
	// a request after a broken connection): 409 "held", at once.
	r := put(0, content)
	var e apiError
	json.Unmarshal(readBody(t, r), &e)
	if r.StatusCode != http.StatusConflict || e.Code != "held" || !strings.Contains(e.Error, "which chunks are missing") {
		t.Fatalf("a run from a held chunk: %d %+v", r.StatusCode, e)
	}
	bf, err := transfer.ParseBitfield(again.Chunks, again.Bitfield)
	if err != nil {
		t.Fatal(err)
	}
	for i := range again.Chunks {
		if bf.Has(i) {
			continue
		}
		end := min((i+1)*cs, len(content))
		if r := put(i, content[i*cs:end]); r.StatusCode != 200 {
			t.Fatalf("chunk %d: %d", i, r.StatusCode)
		}
	}
	r = request(t, "POST", ts.URL+"/v1/uploads/"+info.ID+"/commit", testToken, nil)
	var sh ShareInfo
	json.Unmarshal(readBody(t, r), &sh)
	if r.StatusCode != http.StatusCreated || !sh.Complete {
		t.Fatalf("commit: %d %+v", r.StatusCode, sh)
	}
	raw := request(t, "PUT", ts.URL+"/v1/shares/page.bin?chunk_size=64KiB", testToken, bytes.NewReader(content))
	var rawInfo ShareInfo
	json.Unmarshal(readBody(t, raw), &rawInfo)
	if rawInfo.ID != sh.ID {
		t.Fatalf("page upload %s, raw upload %s", sh.ID, rawInfo.ID)
	}
	if got := readBody(t, request(t, "GET", ts.URL+"/v1/shares/"+sh.ID.String(), testToken, nil)); !bytes.Equal(got, content) {
		t.Fatal("downloaded bytes differ")
	}
	if r := request(t, "GET", ts.URL+"/v1/uploads/"+info.ID, testToken, nil); r.StatusCode != http.StatusNotFound {
		t.Fatalf("session after commit: %d", r.StatusCode)
	}

	// A folder whose chunks span files; then cancelled.
	dir, code := declare(t, ts, `{"name":"d","type":"dir","chunk_size":65536,"files":[{"path":"a","size":70000},{"path":"s/b","size":5}],"dirs":[{"path":"s"}]}`)
	if code != http.StatusCreated || dir.Chunks != 2 {
		t.Fatalf("declare a folder: %d %+v", code, dir)
	}
	if d := request(t, "DELETE", ts.URL+"/v1/uploads/"+dir.ID, testToken, nil); d.StatusCode != http.StatusNoContent {
		t.Fatalf("cancel: %d", d.StatusCode)
	}
	var l UploadList
	json.Unmarshal(readBody(t, request(t, "GET", ts.URL+"/v1/uploads", testToken, nil)), &l)
	if len(l.Uploads) != 0 {
		t.Fatalf("sessions left: %+v", l.Uploads)
	}
}

func TestUploadSessionRefusals(t *testing.T) {
	ts := startServer(t, nil, func(o *Options) { withUploads(t)(o); o.MaxUploadSize = 1 << 20 })
	for _, tc := range []struct {
		name, spec string
		want       int
	}{
		{"too large", `{"name":"x","type":"file","files":[{"size":2000000}]}`, http.StatusRequestEntityTooLarge},
		{"dotdot path", `{"name":"x","type":"dir","files":[{"path":"../../etc/passwd","size":1}]}`, http.StatusBadRequest},
		{"not json", `x`, http.StatusBadRequest},
	} {
		if _, code := declare(t, ts, tc.spec); code != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, code, tc.want)
		}
	}
	if r := request(t, "POST", ts.URL+"/v1/uploads", "", strings.NewReader(`{"name":"x","type":"file","files":[{"size":1}]}`)); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("declare without the token: %d", r.StatusCode)
	}
	if r := request(t, "GET", ts.URL+"/v1/uploads/"+strings.Repeat("0", 32), testToken, nil); r.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown session: %d", r.StatusCode)
	}
	// A chunk sent twice, even with other bytes (the file changed under the
	// page): the first one stays; the second gets 409 "held", unread.
	info, _ := declare(t, ts, `{"name":"y","type":"file","chunk_size":16384,"files":[{"size":16384}]}`)
	url := ts.URL + "/v1/uploads/" + info.ID + "/chunks/0"
	if r := request(t, "PUT", url, testToken, bytes.NewReader(make([]byte, 16384))); r.StatusCode != 200 {
		t.Fatalf("chunk: %d", r.StatusCode)
	}
	if r := request(t, "PUT", url, testToken, bytes.NewReader(bytes.Repeat([]byte{1}, 16384))); r.StatusCode != http.StatusConflict {
		t.Fatalf("changed chunk: %d", r.StatusCode)
	}
	r := request(t, "POST", ts.URL+"/v1/uploads/"+info.ID+"/commit", testToken, nil)
	var sh ShareInfo
	if json.Unmarshal(readBody(t, r), &sh); r.StatusCode != http.StatusCreated {
		t.Fatalf("commit: %d", r.StatusCode)
	}
	if got := readBody(t, request(t, "GET", ts.URL+"/v1/shares/"+sh.ID.String(), testToken, nil)); !bytes.Equal(got, make([]byte, 16384)) {
		t.Fatal("the chunk sent first was not kept")
	}
}
