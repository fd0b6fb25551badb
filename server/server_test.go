package server

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sharefiles/share/transfer"
	"github.com/sharefiles/share/transfer/transfertest"
)

const testToken = "test-token-123"

type testServer struct {
	URL    string
	Store  *transfer.Store
	Server *Server
	stop   func()
}

// startServer runs a real server on a free loopback port until the test ends.
func startServer(t testing.TB, st *transfer.Store, mod func(*Options)) *testServer {
	t.Helper()
	if st == nil {
		var err error
		if st, err = transfer.OpenStore(t.TempDir(), transfer.StoreOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
	}
	opts := Options{Backend: st, Token: testToken, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), ShutdownGrace: time.Second}
	if mod != nil {
		mod(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	scheme := "http"
	if opts.TLSCertFile != "" {
		scheme = "https"
	}
	ts := &testServer{URL: scheme + "://" + ln.Addr().String(), Store: st, Server: srv}
	ts.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
	t.Cleanup(func() {
		if ctx.Err() == nil {
			ts.stop()
		}
	})
	return ts
}

func (ts *testServer) client(t testing.TB, token string) *Client {
	t.Helper()
	c, err := NewClient(ts.URL, ClientOptions{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// request sends a raw HTTP request, as curl would.
func request(t testing.TB, method, url, token string, body io.Reader, hdr ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func readBody(t testing.TB, resp *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestClientIsASource(t *testing.T) {
	transfertest.Run(t, func(t *testing.T, st *transfer.Store) transfer.Source {
		return startServer(t, st, nil).client(t, testToken)
	})
}

func TestRawUploadListRangeAndETag(t *testing.T) {
	ts := startServer(t, nil, nil)
	content := transfertest.Bytes(1, 3<<20+17)
	resp := request(t, "PUT", ts.URL+"/v1/shares/data.bin?chunk_size=1MiB", testToken, bytes.NewReader(content))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %d %s", resp.StatusCode, readBody(t, resp))
	}
	var info ShareInfo
	if err := json.Unmarshal(readBody(t, resp), &info); err != nil {
		t.Fatal(err)
	}
	if info.Name != "data.bin" || info.Size != int64(len(content)) || !info.Complete || info.Chunks != 4 {
		t.Fatalf("info %+v", info)
	}
	if resp.Header.Get("Location") != "/v1/shares/"+info.ID.String() {
		t.Fatalf("Location %q", resp.Header.Get("Location"))
	}

	list, err := ts.client(t, testToken).List(context.Background())
	if err != nil || len(list) != 1 || list[0].ID != info.ID {
		t.Fatalf("list: %v %+v", err, list)
	}

	url := ts.URL + "/v1/shares/" + info.ID.String()
	full := request(t, "GET", url, testToken, nil)
	if got := readBody(t, full); !bytes.Equal(got, content) {
		t.Fatal("GET returned other bytes")
	}
	etag := full.Header.Get("ETag")
	if etag != `"`+info.ID.String()+`"` || full.Header.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("ETag %q, Accept-Ranges %q", etag, full.Header.Get("Accept-Ranges"))
	}
	if cd := full.Header.Get("Content-Disposition"); !strings.Contains(cd, "data.bin") {
		t.Fatalf("Content-Disposition %q", cd)
	}
	// Resume as curl -C - does: a Range from where the file stopped.
	part := request(t, "GET", url, testToken, nil, "Range", "bytes=1000000-", "If-Range", etag)
	if part.StatusCode != http.StatusPartialContent {
		t.Fatalf("Range: %d", part.StatusCode)
	}
	if got := readBody(t, part); !bytes.Equal(got, content[1000000:]) {
		t.Fatal("Range returned other bytes")
	}
	if nm := request(t, "GET", url, testToken, nil, "If-None-Match", etag); nm.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match: %d", nm.StatusCode)
	}
	if h := request(t, "HEAD", url, testToken, nil); h.StatusCode != 200 || h.ContentLength != int64(len(content)) {
		t.Fatalf("HEAD: %d, length %d", h.StatusCode, h.ContentLength)
	}

	// The manifest, have and chunk routes serve the chunk protocol.
	m := request(t, "GET", url+"/manifest", testToken, nil)
	if _, err := transfer.VerifyManifest(info.ID, readBody(t, m)); err != nil {
		t.Fatal(err)
	}
	if c := request(t, "GET", url+"/chunks/3", testToken, nil); !bytes.Equal(readBody(t, c), content[3<<20:]) {
		t.Fatal("last chunk differs")
	}
	if c := request(t, "GET", url+"/chunks/4", testToken, nil); c.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("chunk past the end: %d", c.StatusCode)
	}
	for _, bad := range []string{"-1", "01", "x", "99999999999"} {
		if c := request(t, "GET", url+"/chunks/"+bad, testToken, nil); c.StatusCode != http.StatusBadRequest {
			t.Fatalf("chunk %q: %d", bad, c.StatusCode)
		}
	}

	// Delete it.
	if d := request(t, "DELETE", url, testToken, nil); d.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %d", d.StatusCode)
	}
	if g := request(t, "GET", url, testToken, nil); g.StatusCode != http.StatusNotFound {
		t.Fatalf("GET after DELETE: %d", g.StatusCode)
	}
}

func TestAuth(t *testing.T) {
	ts := startServer(t, nil, nil)
	resp := request(t, "PUT", ts.URL+"/v1/shares/f", testToken, strings.NewReader("hello"))
	var info ShareInfo
	json.Unmarshal(readBody(t, resp), &info)
	url := ts.URL + "/v1/shares/" + info.ID.String()

	for _, tok := range []string{"", "wrong", testToken + "x"} {
		for _, req := range []struct{ method, url string }{
			{"GET", ts.URL + "/v1/shares"}, {"GET", url}, {"GET", url + "/manifest"}, {"GET", url + "/chunks/0"},
			{"DELETE", url}, {"PUT", ts.URL + "/v1/shares/evil"}, {"POST", ts.URL + "/v1/shares"}, {"GET", ts.URL + "/metrics"},
		} {
			resp := request(t, req.method, req.url, tok, strings.NewReader("x"))
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s %s with token %q: %d, want 401", req.method, req.url, tok, resp.StatusCode)
			}
			// One header per challenge, Basic first (RFC 9110 11.6.1, RFC 7617).
			want := []string{`Basic realm="share", charset="UTF-8"`, `Bearer realm="share"`}
			if got := resp.Header.Values("WWW-Authenticate"); !slices.Equal(got, want) {
				t.Errorf("%s %s: WWW-Authenticate %q, want %q", req.method, req.url, got, want)
			}
		}
	}
	// Nothing changed.
	if n := len(ts.Store.List()); n != 1 {
		t.Fatalf("%d shares after unauthorized requests", n)
	}
	if h := request(t, "GET", ts.URL+"/healthz", "", nil); h.StatusCode != 200 {
		t.Fatalf("healthz without token: %d", h.StatusCode)
	}
	// Basic auth with the token as password (browsers) works too.
	req, _ := http.NewRequest("GET", url, nil)
	req.SetBasicAuth("anyone", testToken)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("basic auth: %v %v", err, resp.StatusCode)
	}
	// The client reports a wrong token as such, and a download does not retry it.
	_, err := ts.client(t, "wrong").List(context.Background())
	if !errors.Is(err, ErrUnauthorized) || !errors.Is(err, transfer.ErrSourceRefused) {
		t.Fatalf("client with wrong token: %v", err)
	}
}

func TestPublicRead(t *testing.T) {
	ts := startServer(t, nil, func(o *Options) { o.PublicRead = true })
	resp := request(t, "PUT", ts.URL+"/v1/shares/f", testToken, strings.NewReader("hello"))
	var info ShareInfo
	json.Unmarshal(readBody(t, resp), &info)
	if g := request(t, "GET", ts.URL+"/v1/shares/"+info.ID.String(), "", nil); g.StatusCode != 200 || string(readBody(t, g)) != "hello" {
		t.Fatalf("public GET: %d", g.StatusCode)
	}
	if g := request(t, "GET", ts.URL+"/v1/shares", "", nil); g.StatusCode != 200 || !strings.Contains(string(readBody(t, g)), info.ID.String()) {
		t.Fatal("the public list does not list the share")
	}
	if p := request(t, "PUT", ts.URL+"/v1/shares/g", "", strings.NewReader("x")); p.StatusCode != http.StatusUnauthorized {
		t.Fatalf("public PUT: %d", p.StatusCode)
	}
	if d := request(t, "DELETE", ts.URL+"/v1/shares/"+info.ID.String(), "", nil); d.StatusCode != http.StatusUnauthorized {
		t.Fatalf("public DELETE: %d", d.StatusCode)
	}
}

func TestBadNamesAndPaths(t *testing.T) {
	ts := startServer(t, nil, nil)
	for _, p := range []string{
		"/v1/shares/..", "/v1/shares/.", "/v1/shares/%2e%2e", "/v1/shares/%2E%2E", "/v1/shares/a%2Fb", "/v1/shares/%2Fetc%2Fpasswd",
		"/v1/shares/a%5Cb", "/v1/shares/a%00b", "/v1/shares/a%0Ab", "/v1/shares/a%7Fb", "/v1/shares//x", "/v1/shares/x/../y",
		"/v1/shares/..%2F..%2Fetc", "/v1/shares/%ZZ",
	} {
		// Raw paths, not cleaned by a client.
		conn, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "PUT %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello", p, testToken)
		b, _ := io.ReadAll(conn)
		conn.Close()
		if !strings.HasPrefix(string(b), "HTTP/1.1 400") {
			t.Errorf("PUT %s: %q, want 400", p, strings.SplitN(string(b), "\r\n", 2)[0])
		}
	}
	if n := len(ts.Store.List()); n != 0 {
		t.Fatalf("%d shares stored from bad names", n)
	}
	if ents, _ := os.ReadDir(filepath.Join(ts.Store.Dir(), "tmp")); len(ents) != 0 {
		t.Fatal("bad uploads left files in tmp")
	}
	if r := request(t, "GET", ts.URL+"/v1/shares/notanid", testToken, nil); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad ID: %d", r.StatusCode)
	}
}

func TestTruncatedUploadLeavesNothing(t *testing.T) {
	ts := startServer(t, nil, nil)
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "PUT /v1/shares/cut HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 1000000\r\n\r\n", testToken)
	conn.Write(make([]byte, 300000))
	conn.(*net.TCPConn).CloseWrite() // the client dies mid-body
	io.ReadAll(conn)
	conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ents, _ := os.ReadDir(filepath.Join(ts.Store.Dir(), "tmp"))
		if len(ents) == 0 && len(ts.Store.List()) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("truncated upload left %d tmp entries, %d shares", len(ents), len(ts.Store.List()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Chunked encoding cut off before its last chunk: 400, nothing kept.
	conn, _ = net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
	fmt.Fprintf(conn, "PUT /v1/shares/cut2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", testToken)
	conn.(*net.TCPConn).CloseWrite()
	io.ReadAll(conn)
	conn.Close()
	if len(ts.Store.List()) != 0 {
		t.Fatal("cut chunked upload stored")
	}
}

func TestUploadLimits(t *testing.T) {
	ts := startServer(t, nil, func(o *Options) { o.MaxUploadSize = 1000 })
	if r := request(t, "PUT", ts.URL+"/v1/shares/big", testToken, bytes.NewReader(make([]byte, 1001))); r.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversize with Content-Length: %d", r.StatusCode)
	}
	// Without a Content-Length the limit is enforced while reading.
	if r := request(t, "PUT", ts.URL+"/v1/shares/big", testToken, io.MultiReader(bytes.NewReader(make([]byte, 1001)))); r.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversize chunked: %d", r.StatusCode)
	}
	if len(ts.Store.List()) != 0 {
		t.Fatal("oversize upload stored")
	}
	if r := request(t, "PUT", ts.URL+"/v1/shares/ok?chunk_size=1", testToken, strings.NewReader("x")); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad chunk_size: %d", r.StatusCode)
	}
}

func TestConcurrentUploadBound(t *testing.T) {
	ts := startServer(t, nil, func(o *Options) { o.MaxUploads = 1 })
	pr, pw := io.Pipe()
	first := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("PUT", ts.URL+"/v1/shares/slow", pr)
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			first <- 0
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	pw.Write([]byte("started"))
	// Wait until the first upload holds the slot.
	for ts.Server.m.active.WithLabelValues("receive") != nil && len(ts.Server.uploads) == 0 {
		time.Sleep(time.Millisecond)
	}
	r := request(t, "PUT", ts.URL+"/v1/shares/second", testToken, strings.NewReader("x"))
	if r.StatusCode != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
		t.Fatalf("second upload: %d, Retry-After %q", r.StatusCode, r.Header.Get("Retry-After"))
	}
	pw.Close()
	if code := <-first; code != http.StatusCreated {
		t.Fatalf("first upload: %d", code)
	}
}

func TestPutAndGetDirectory(t *testing.T) {
	ts := startServer(t, nil, nil)
	c := ts.client(t, testToken)
	src := filepath.Join(t.TempDir(), "photos")
	files := map[string][]byte{
		"a.jpg":          transfertest.Bytes(1, 2<<20+5),
		"trip/b.jpg":     transfertest.Bytes(2, 100),
		"trip/deep/c.md": []byte("# notes\n"),
		"empty":          nil,
	}
	for p, b := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(src, p)), 0o755)
		os.WriteFile(filepath.Join(src, p), b, 0o640)
		os.Chmod(filepath.Join(src, p), 0o640) // whatever the umask
	}
	os.Chmod(filepath.Join(src, "trip"), 0o750)
	os.Chmod(src, 0o750) // the top directory's mode travels too
	ctx := context.Background()
	info, err := c.Put(ctx, src, PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !info.Complete || info.Type != "dir" || info.Files != 4 {
		t.Fatalf("info %+v", info)
	}
	// Put again: the server has it; nothing is sent.
	var sent int64 = -1
	if _, err := c.Put(ctx, src, PutOptions{Started: func(_ *transfer.Manifest, n int64) { sent = n }}); err != nil || sent != 0 {
		t.Fatalf("second put: %v, would send %d bytes", err, sent)
	}
	out := filepath.Join(t.TempDir(), "copy")
	got, stats, err := c.Get(ctx, info.ID, transfer.GetOptions{Out: out})
	if err != nil || got != out {
		t.Fatalf("get: %q %v", got, err)
	}
	if stats.Chunks != info.Chunks {
		t.Fatalf("fetched %d chunks, want %d", stats.Chunks, info.Chunks)
	}
	for p, want := range files {
		b, err := os.ReadFile(filepath.Join(out, p))
		if err != nil || !bytes.Equal(b, want) {
			t.Fatalf("%s: %v", p, err)
		}
		if fi, _ := os.Stat(filepath.Join(out, p)); fi.Mode().Perm() != 0o640 {
			t.Fatalf("%s: mode %v", p, fi.Mode())
		}
	}
	for _, dir := range []string{"", "trip"} {
		if fi, err := os.Stat(filepath.Join(out, dir)); err != nil || fi.Mode().Perm() != 0o750 {
			t.Fatalf("directory %q: mode %v, want 0750 as at the source", dir, fi.Mode())
		}
	}
	// No partial directory is left behind.
	if ents, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".*share-partial*")); len(ents) != 0 {
		t.Fatalf("leftovers: %v", ents)
	}
	// Out naming an existing directory puts the share inside it, as cp does;
	// an existing output is not overwritten.
	if got, _, err := c.Get(ctx, info.ID, transfer.GetOptions{Out: out}); err != nil || got != filepath.Join(out, "photos") {
		t.Fatalf("get into a directory: %q %v", got, err)
	}
	if _, _, err := c.Get(ctx, info.ID, transfer.GetOptions{Out: out}); !errors.Is(err, transfer.ErrExists) {
		t.Fatalf("get over an existing output: %v", err)
	}
	// The tar route streams it.
	resp := request(t, "GET", ts.URL+"/v1/shares/"+info.ID.String(), testToken, nil)
	if resp.Header.Get("Content-Type") != "application/x-tar" || len(readBody(t, resp)) < 2<<20 {
		t.Fatal("tar stream")
	}
}

func TestCorruptChunkOnServerDiskIsRefused(t *testing.T) {
	ts := startServer(t, nil, nil)
	c := ts.client(t, testToken)
	content := transfertest.Bytes(3, 3<<20)
	info, err := c.Upload(context.Background(), "f.bin", bytes.NewReader(content), int64(len(content)))
	if err != nil {
		t.Fatal(err)
	}
	sh, _ := ts.Store.Get(info.ID)
	f, err := os.OpenFile(sh.DataPath(), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	const off = 1<<20 + 12345
	f.WriteAt([]byte("rot"), off)
	f.Close()
	out := filepath.Join(t.TempDir(), "f.bin")
	_, stats, err := c.Get(context.Background(), info.ID, transfer.GetOptions{Out: out})
	bad := fmt.Sprintf("chunk %d ", off/info.ChunkSize)
	if !errors.Is(err, transfer.ErrNoSources) || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), ts.URL) {
		t.Fatalf("get of a corrupt share: %v", err)
	}
	if stats.BadChunks != 1 {
		t.Fatalf("bad chunks %d", stats.BadChunks)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatal("output written although a chunk was bad")
	}
}

func TestChunkUploadVerification(t *testing.T) {
	ts := startServer(t, nil, nil)
	c := ts.client(t, testToken)
	content := transfertest.Bytes(4, 2<<20)
	path := filepath.Join(t.TempDir(), "f")
	os.WriteFile(path, content, 0o644)
	m, err := transfer.BuildManifest(context.Background(), path, transfer.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateShare(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(content[:1<<20])
	bad[5] ^= 1
	err = c.PutChunk(context.Background(), m.ID(), 0, bytes.NewReader(bad), int64(len(bad)))
	if !errors.Is(err, transfer.ErrBadChunk) {
		t.Fatalf("corrupt chunk upload: %v", err)
	}
	if err := c.PutChunk(context.Background(), m.ID(), 0, bytes.NewReader(content[:10]), 10); !errors.Is(err, transfer.ErrBadChunk) {
		t.Fatalf("short chunk upload: %v", err)
	}
	// A partial share is listed as such and its content is not served.
	list, _ := c.List(context.Background())
	if len(list) != 1 || list[0].Complete || list[0].Have != 0 {
		t.Fatalf("list %+v", list)
	}
	if r := request(t, "GET", ts.URL+"/v1/shares/"+m.ID().String(), testToken, nil); r.StatusCode != http.StatusConflict {
		t.Fatalf("GET of a partial share: %d", r.StatusCode)
	}
	// Garbage manifests are refused.
	if r := request(t, "POST", ts.URL+"/v1/shares", testToken, strings.NewReader(`{"version":1}`)); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad manifest: %d", r.StatusCode)
	}
}

func TestResumeAfterInterruptedGet(t *testing.T) {
	ts := startServer(t, nil, nil)
	c := ts.client(t, testToken)
	content := transfertest.Bytes(5, 20<<20)
	info, err := c.Upload(context.Background(), "big", bytes.NewReader(content), int64(len(content)))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "big")
	ctx, cancel := context.WithCancel(context.Background())
	_, _, err = c.Get(ctx, info.ID, transfer.GetOptions{Out: out, Download: transfer.DownloadOptions{
		MaxInFlight: 2,
		Progress: func(p transfer.Progress) {
			if p.Bytes >= 8<<20 {
				cancel()
			}
		}}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted get: %v", err)
	}
	var held int64 = -1
	_, stats, err := c.Get(context.Background(), info.ID, transfer.GetOptions{Out: out, Started: func(_ *transfer.Manifest, h int64) { held = h }})
	if err != nil {
		t.Fatal(err)
	}
	if held < 8<<20 || stats.Bytes != int64(len(content))-held {
		t.Fatalf("resume held %d bytes, fetched %d more", held, stats.Bytes)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, content) {
		t.Fatal("resumed download differs")
	}
}

func TestMetrics(t *testing.T) {
	ts := startServer(t, nil, nil)
	c := ts.client(t, testToken)
	content := transfertest.Bytes(6, 1<<20+1)
	info, _ := c.Upload(context.Background(), "m", bytes.NewReader(content), int64(len(content)))
	readBody(t, request(t, "GET", ts.URL+"/v1/shares/"+info.ID.String()+"/chunks/1", testToken, nil))
	// The handler counts a chunk once it has sent it, which may be after
	// the client has read the last byte: wait for the count to show.
	var body string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		body = string(readBody(t, request(t, "GET", ts.URL+"/metrics", testToken, nil)))
		if strings.Contains(body, "share_chunks_served_total 1") || time.Now().After(deadline) {
			break
		}
	}
	for _, want := range []string{
		"share_bytes_received_total 1.048577e+06",
		"share_bytes_served_total 1",
		"share_chunks_served_total 1",
		`share_http_requests_total{code="201",route="PUT /v1/shares/{name}"} 1`,
		`share_active_transfers{direction="receive"} 0`,
		"share_shares 1",
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestGracefulShutdownCutsUploadCleanly(t *testing.T) {
	ts := startServer(t, nil, func(o *Options) { o.ShutdownGrace = 200 * time.Millisecond })
	pr, pw := io.Pipe()
	go func() {
		req, _ := http.NewRequest("PUT", ts.URL+"/v1/shares/slow", pr)
		req.Header.Set("Authorization", "Bearer "+testToken)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	pw.Write(make([]byte, 100000))
	for len(ts.Server.uploads) == 0 {
		time.Sleep(time.Millisecond)
	}
	ts.stop() // the upload never finishes: cut off after the grace period
	pw.Close()
	if ents, _ := os.ReadDir(filepath.Join(ts.Store.Dir(), "tmp")); len(ents) != 0 {
		t.Fatalf("cut-off upload left %d entries in tmp", len(ents))
	}
	if len(ts.Store.List()) != 0 {
		t.Fatal("cut-off upload stored")
	}
}

func TestTLS(t *testing.T) {
	cert, key, pool := selfSigned(t)
	ts := startServer(t, nil, func(o *Options) { o.TLSCertFile, o.TLSKeyFile = cert, key })
	c, err := NewClient(ts.URL, ClientOptions{Token: testToken, TLSConfig: &tls.Config{RootCAs: pool}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Health(context.Background()); err != nil {
		t.Fatal(err)
	}
	info, err := c.Upload(context.Background(), "s", strings.NewReader("secret"), 6)
	if err != nil || !info.Complete {
		t.Fatal(err)
	}
	// Without the CA, the client refuses the server.
	plain, _ := NewClient(ts.URL, ClientOptions{Token: testToken})
	if err := plain.Health(context.Background()); err == nil {
		t.Fatal("untrusted certificate accepted")
	}
}

func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	kb, _ := x509.MarshalECPrivateKey(priv)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	c, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(c)
	return certFile, keyFile, pool
}

func TestAllowedHosts(t *testing.T) {
	ts := startServer(t, nil, func(o *Options) { o.AllowedHosts = []string{"127.0.0.1", "localhost"} })
	if r := request(t, "GET", ts.URL+"/v1/shares", testToken, nil); r.StatusCode != 200 {
		t.Fatalf("own host: %d", r.StatusCode)
	}
	req, _ := http.NewRequest("GET", ts.URL+"/v1/shares", nil)
	req.Host = "evil.example"
	req.Header.Set("Authorization", "Bearer "+testToken)
	if r, _ := http.DefaultClient.Do(req); r.StatusCode != http.StatusForbidden {
		t.Fatalf("rebound host: %d", r.StatusCode)
	}
	if r := request(t, "GET", ts.URL+"/v1/shares", testToken, nil, "Origin", "http://evil.example"); r.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: %d", r.StatusCode)
	}
}

func FuzzParseChunkIndex(f *testing.F) {
	for _, s := range []string{"0", "1", "10", "01", "-1", "x", "99999999999", "+1", " 1"} {
		f.Add(s, 100)
	}
	f.Fuzz(func(t *testing.T, s string, n int) {
		i, err := ParseChunkIndex(s, n)
		if err != nil {
			return
		}
		if i < 0 || i >= n || fmt.Sprint(i) != s {
			t.Fatalf("ParseChunkIndex(%q, %d) = %d", s, n, i)
		}
	})
}

func TestShutdownLetsDownloadsFinish(t *testing.T) {
	ts := startServer(t, nil, func(o *Options) {
		o.ShutdownGrace = 10 * time.Second
		o.UploadLimit = transfer.NewLimiter(2 << 20) // a 2 MiB download takes ~1 s
	})
	c := ts.client(t, testToken)
	content := transfertest.Bytes(7, 2<<20)
	info, err := c.Upload(context.Background(), "f", bytes.NewReader(content), int64(len(content)))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		resp := request(t, "GET", ts.URL+"/v1/shares/"+info.ID.String(), testToken, nil)
		b, _ := io.ReadAll(resp.Body)
		got <- b
	}()
	time.Sleep(200 * time.Millisecond) // the download is under way
	ts.stop()
	if b := <-got; !bytes.Equal(b, content) {
		t.Fatalf("download in flight at shutdown got %d of %d bytes", len(b), len(content))
	}
}

func TestErrorStatusMapping(t *testing.T) {
	tests := []struct {
		err    error
		status int
		code   string
		public bool
	}{
		{fmt.Errorf("write: %w", syscall.ENOSPC), 507, "no_space", false},
		{fmt.Errorf("x: %w", transfer.ErrNotFound), 404, "not_found", true},
		{fmt.Errorf("x: %w", transfer.ErrChunkNotHeld), 404, "chunk_not_held", true},
		{&transfer.ChunkError{}, 422, "bad_chunk", true},
		{ErrUnauthorized, 401, "unauthorized", true},
		{&http.MaxBytesError{Limit: 1}, 413, "too_large", true},
		{errors.New("open /secret/path: permission denied"), 500, "internal", false},
	}
	for _, tt := range tests {
		code, status, public := classify(tt.err)
		if code != tt.code || status != tt.status || public != tt.public {
			t.Errorf("classify(%v) = %s %d %v, want %s %d %v", tt.err, code, status, public, tt.code, tt.status, tt.public)
		}
	}
	// Internal error text never reaches the client.
	rec := httptest.NewRecorder()
	writeError(rec, errors.New("open /secret/path: permission denied"))
	if strings.Contains(rec.Body.String(), "secret") || rec.Code != 500 {
		t.Fatalf("internal error leaked: %d %s", rec.Code, rec.Body)
	}
	// The client maps codes back to the sentinels.
	resp := &http.Response{StatusCode: 404, Body: io.NopCloser(strings.NewReader(`{"error":"chunk 3 not held","code":"chunk_not_held"}`))}
	if err := responseError(resp, "GET x"); !errors.Is(err, transfer.ErrChunkNotHeld) || !strings.Contains(err.Error(), "chunk 3 not held") {
		t.Fatalf("responseError: %v", err)
	}
}

func TestHaveLongPoll(t *testing.T) {
	ts := startServer(t, nil, nil)
	c := ts.client(t, testToken)
	content := transfertest.Bytes(8, 2*transfer.MinChunkSize)
	path := filepath.Join(t.TempDir(), "f")
	os.WriteFile(path, content, 0o644)
	m, _ := transfer.BuildManifest(context.Background(), path, transfer.BuildOptions{ChunkSize: transfer.MinChunkSize})
	if _, err := c.CreateShare(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	got := make(chan int, 1)
	go func() {
		bf, err := c.WaitHave(context.Background(), m.ID(), 2, transfer.NewBitfield(2).Digest())
		if err != nil {
			t.Error(err)
		}
		got <- bf.Count()
	}()
	time.Sleep(100 * time.Millisecond)
	if err := c.PutChunk(context.Background(), m.ID(), 1, bytes.NewReader(content[transfer.MinChunkSize:]), transfer.MinChunkSize); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-got:
		if n != 1 {
			t.Fatalf("long poll saw %d chunks", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("long poll did not answer")
	}
	if r := request(t, "GET", ts.URL+"/v1/shares/"+m.ID().String()+"/have?known=x&wait=1s", testToken, nil); r.StatusCode != 400 {
		t.Fatalf("bad long poll: %d", r.StatusCode)
	}
}

// TestChromiumBasicAuth opens the index in the real Chromium with the token
// in the URL: Chromium answers the Basic challenge only if it can read it.
func TestChromiumBasicAuth(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("no chromium installed (apt-get install chromium)")
	}
	ts := startServer(t, nil, nil)
	c := ts.client(t, testToken)
	info, err := c.Upload(context.Background(), "seen-by-chromium.txt", strings.NewReader("x"), 1)
	if err != nil {
		t.Fatal(err)
	}
	dump := func(userinfo string) (string, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		// The page lists shares from a script: a virtual time budget lets
		// it run before the DOM is dumped.
		cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu",
			"--no-first-run", "--user-data-dir="+t.TempDir(), "--virtual-time-budget=5000", "--dump-dom",
			"http://"+userinfo+"@"+strings.TrimPrefix(ts.URL, "http://")+"/")
		out, err := cmd.Output()
		return string(out), err
	}
	if page, err := dump("anyone:" + testToken); err != nil || !strings.Contains(page, info.ID.String()) {
		t.Fatalf("chromium with the token did not get the index (%v):\n%s", err, page)
	}
	// A wrong token: Chromium answers the challenge, is refused again, and
	// fails the load (net::ERR_INVALID_AUTH_CREDENTIALS).
	if page, _ := dump("anyone:wrong"); strings.Contains(page, info.ID.String()) {
		t.Fatalf("chromium with a wrong token got the index:\n%s", page)
	}
}

// TestCSRF forges the requests a page on another site can make a browser
// send with its cached Basic credentials, and checks the one rule
// (net/http's CrossOriginProtection): a state change on an ambient credential
// that a browser says comes from another origin is refused; one from the
// server's own page, or with neither Sec-Fetch-Site nor Origin (not a
// browser: curl -u :TOKEN), passes; Bearer is immune; reads are not checked.
func TestCSRF(t *testing.T) {
	ts := startServer(t, nil, nil)
	host := strings.TrimPrefix(ts.URL, "http://")
	c := ts.client(t, testToken)
	basic := func(req *http.Request) { req.SetBasicAuth("", testToken) }
	bearer := func(req *http.Request) { req.Header.Set("Authorization", "Bearer "+testToken) }
	tests := []struct {
		name   string
		method string
		auth   func(*http.Request)
		hdr    []string
		want   int
	}{
		{"basic, cross-site fetch", "DELETE", basic, []string{"Sec-Fetch-Site", "cross-site", "Origin", "http://evil.example"}, 403},
		{"basic, same-site sibling", "DELETE", basic, []string{"Sec-Fetch-Site", "same-site", "Origin", "http://sub." + host}, 403},
		{"basic, old browser, foreign origin", "DELETE", basic, []string{"Origin", "http://evil.example"}, 403},
		{"basic, origin null (sandboxed frame, data: URL)", "DELETE", basic, []string{"Origin", "null"}, 403},
		{"basic, origin on another port", "DELETE", basic, []string{"Origin", "http://127.0.0.1:1"}, 403},
		{"basic, not a browser (curl -u :TOKEN: neither header)", "DELETE", basic, nil, 204},
		{"basic, not a browser, POST", "POST", basic, nil, 200},
		{"basic, not a browser, PUT of a chunk", "PUT", basic, nil, 204},
		{"basic, cross-site form POST", "POST", basic, []string{"Sec-Fetch-Site", "cross-site", "Content-Type", "text/plain"}, 403},
		{"basic, cross-site PUT of a chunk", "PUT", basic, []string{"Origin", "http://evil.example"}, 403},
		{"basic, cross-site read", "GET", basic, []string{"Sec-Fetch-Site", "cross-site", "Origin", "http://evil.example"}, 200},
		{"basic, own page (Sec-Fetch-Site)", "DELETE", basic, []string{"Sec-Fetch-Site", "same-origin", "Origin", ts.URL}, 204},
		{"basic, own page (old browser: Origin only)", "DELETE", basic, []string{"Origin", ts.URL}, 204},
		{"basic, user typed it (Sec-Fetch-Site none)", "DELETE", basic, []string{"Sec-Fetch-Site", "none"}, 204},
		{"bearer, whatever the origin", "DELETE", bearer, []string{"Sec-Fetch-Site", "cross-site", "Origin", "http://evil.example"}, 204},
		{"bearer, no browser headers", "DELETE", bearer, nil, 204},
	}
	for k, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, err := c.Upload(context.Background(), fmt.Sprintf("f%d", k), strings.NewReader(fmt.Sprint(k)), int64(len(fmt.Sprint(k))))
			if err != nil {
				t.Fatal(err)
			}
			url := ts.URL + "/v1/shares/" + info.ID.String()
			var body io.Reader
			switch tt.method {
			case "POST":
				url = ts.URL + "/v1/shares"
				raw, err := os.ReadFile(filepath.Join(ts.Store.Dir(), "shares", info.ID.String(), "manifest.json"))
				if err != nil {
					t.Fatal(err)
				}
				body = bytes.NewReader(raw)
			case "PUT":
				url += "/chunks/0"
				body = strings.NewReader(fmt.Sprint(k))
			}
			req, _ := http.NewRequest(tt.method, url, body)
			tt.auth(req)
			for i := 0; i+1 < len(tt.hdr); i += 2 {
				req.Header.Set(tt.hdr[i], tt.hdr[i+1])
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			want := tt.want
			if resp.StatusCode != want {
				t.Fatalf("%s: %d %s, want %d", tt.method, resp.StatusCode, b, want)
			}
			_, err = ts.Store.Get(info.ID)
			if removed := errors.Is(err, transfer.ErrNotFound); removed != (tt.method == "DELETE" && want == 204) {
				t.Fatalf("share removed: %v, want %v", removed, !removed)
			}
		})
	}
}

// fetchingBackend is a store that "fetches" shares from another store, as a
// peer fetches from its swarm; it counts fetches.
type fetchingBackend struct {
	*transfer.Store
	from    *transfer.Store
	fetches atomic.Int32
	wg      sync.WaitGroup // downloads started by Fetch
}

func (b *fetchingBackend) Fetch(ctx context.Context, id transfer.ID) (*transfer.Share, error) {
	b.fetches.Add(1)
	if sh, err := b.Store.Get(id); err == nil {
		return sh, nil
	}
	src, err := b.from.Get(id)
	if err != nil {
		return nil, fmt.Errorf("%w: no provider of %s found in the DHT after asking 3 peers", transfer.ErrNotFound, id)
	}
	sh, _, err := b.Store.Create(src.Manifest())
	if err != nil {
		return nil, err
	}
	d := transfer.NewDownload(sh, transfer.DownloadOptions{})
	d.AddSource(b.from)
	b.wg.Go(func() { d.Run(context.WithoutCancel(ctx)) })
	return sh, nil
}

// TestReadsNeverFetch: a GET or HEAD of a share the backend lacks is a 404
// and starts nothing; POST /fetch does, with the token, and a server that
// cannot fetch says so.
func TestReadsNeverFetch(t *testing.T) {
	origin, err := transfer.OpenStore(t.TempDir(), transfer.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer origin.Close()
	content := transfertest.Bytes(3, 3<<20+5)
	sh, err := origin.Import(context.Background(), "far.bin", bytes.NewReader(content), transfer.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id := sh.ID()
	local, err := transfer.OpenStore(t.TempDir(), transfer.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	b := &fetchingBackend{Store: local, from: origin}
	defer b.wg.Wait()
	ts := startServer(t, nil, func(o *Options) { o.Backend = b; o.PublicRead = true })
	base := ts.URL + "/v1/shares/" + id.String()
	for _, p := range []string{"", "/manifest", "/have", "/chunks/0"} {
		for _, m := range []string{"GET", "HEAD"} {
			if r := request(t, m, base+p, testToken, nil); r.StatusCode != 404 {
				t.Errorf("%s %s of a share not held: %d, want 404", m, p, r.StatusCode)
			}
		}
	}
	if r := request(t, "GET", base+"/fetch", testToken, nil); r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /fetch: %d, want 405", r.StatusCode)
	}
	if n := b.fetches.Load(); n != 0 {
		t.Fatalf("%d fetches started by reads", n)
	}
	// The write needs the token, even with PublicRead.
	if r := request(t, "POST", base+"/fetch", "", nil); r.StatusCode != 401 || b.fetches.Load() != 0 {
		t.Fatalf("POST /fetch without token: %d", r.StatusCode)
	}
	// A share nobody provides: 404 with the backend's reason.
	other := filepath.Join(t.TempDir(), "nowhere")
	os.WriteFile(other, []byte("held by nobody"), 0o644)
	mm, err := transfer.BuildManifest(context.Background(), other, transfer.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	missing := mm.ID()
	r := request(t, "POST", ts.URL+"/v1/shares/"+missing.String()+"/fetch", testToken, nil)
	if body := readBody(t, r); r.StatusCode != 404 || !strings.Contains(string(body), "after asking 3 peers") {
		t.Fatalf("fetch of an unknown share: %d %s", r.StatusCode, body)
	}
	// The client's Get asks for the fetch, then downloads.
	out := filepath.Join(t.TempDir(), "out.bin")
	if _, _, err := ts.client(t, testToken).Get(context.Background(), id, transfer.GetOptions{Out: out}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, content) {
		t.Fatal("downloaded other bytes")
	}
	// Held and complete now: 200.
	if r := request(t, "POST", base+"/fetch", testToken, nil); r.StatusCode != 200 {
		t.Fatalf("fetch of a held share: %d", r.StatusCode)
	}
	// A server has no fetch: 501, and its client's Get says "not found".
	srv := startServer(t, nil, nil)
	r = request(t, "POST", srv.URL+"/v1/shares/"+id.String()+"/fetch", testToken, nil)
	if body := readBody(t, r); r.StatusCode != 501 || !strings.Contains(string(body), "share peer") {
		t.Fatalf("fetch from a server: %d %s", r.StatusCode, body)
	}
	if _, _, err := srv.client(t, testToken).Get(context.Background(), id, transfer.GetOptions{Out: out + "2"}); !errors.Is(err, transfer.ErrNotFound) {
		t.Fatalf("get from a server that lacks it: %v", err)
	}
}

// countingZeros is an endless body of zeros that counts what is read of it.
type countingZeros struct{ n atomic.Int64 }

func (c *countingZeros) Read(p []byte) (int, error) {
	clear(p)
	c.n.Add(int64(len(p)))
	return len(p), nil
}

// TestExpectContinueRefusals: an upload refused before its body is needed
// is answered at once under "Expect: 100-continue", without "100 Continue",
// without reading a byte of the body, and on a connection that closes. The
// client is net/http's, which sends the body only after a 100 or after its
// ExpectContinueTimeout: a server that waited for the body would see it.
func TestExpectContinueRefusals(t *testing.T) {
	const huge = 2 << 30
	ts := startServer(t, nil, func(o *Options) { o.MaxUploadSize = 1 << 30; o.MaxUploads = 1 })
	c := ts.client(t, testToken)
	info, err := c.Upload(context.Background(), "f", strings.NewReader("hello"), 5)
	if err != nil {
		t.Fatal(err)
	}
	share := ts.URL + "/v1/shares/" + info.ID.String()
	missing := ts.URL + "/v1/shares/bagaaihra2kbpndwhj4e6pjohzqfkt7ynfkibmjrwuq6ks6dqwqeurjbogfda"
	tests := []struct {
		name, method, url, token string
		size                     int64
		hdr                      []string
		want                     int
	}{
		{"wrong token", "PUT", ts.URL + "/v1/shares/x", "wrong", huge, nil, 401},
		{"no token", "PUT", ts.URL + "/v1/shares/x", "", huge, nil, 401},
		{"over --max-upload", "PUT", ts.URL + "/v1/shares/x", testToken, huge, nil, 413},
		{"bad chunk_size", "PUT", ts.URL + "/v1/shares/x?chunk_size=1", testToken, huge, nil, 400},
		{"bad name", "PUT", ts.URL + "/v1/shares/%2e%2e", testToken, huge, nil, 400},
		{"manifest too large", "POST", ts.URL + "/v1/shares", testToken, huge, nil, 413},
		{"chunk of a share not held", "PUT", missing + "/chunks/0", testToken, 5, nil, 404},
		{"chunk of the wrong length", "PUT", share + "/chunks/0", testToken, huge, nil, 422},
		{"chunk held already", "PUT", share + "/chunks/0", testToken, 5, nil, 204},
		{"cross-site", "DELETE", share, "", 5, []string{"Origin", "http://evil.example"}, 403},
	}
	run := func(t *testing.T, method, url, token string, size int64, hdr []string, want int) {
		t.Helper()
		body := &countingZeros{}
		req, _ := http.NewRequest(method, url, io.LimitReader(body, size))
		req.ContentLength = size
		req.Header.Set("Expect", "100-continue")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if hdr != nil {
			req.SetBasicAuth("", testToken)
			req.Header.Set(hdr[0], hdr[1])
		}
		hc := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: 30 * time.Second}}
		defer hc.CloseIdleConnections()
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%d, want %d", resp.StatusCode, want)
		}
		if n := body.n.Load(); n != 0 {
			t.Fatalf("%d body bytes read by the client, want 0", n)
		}
		if !resp.Close && size > 0 && want != 204 {
			t.Fatal("connection kept open with an unread body")
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { run(t, tt.method, tt.url, tt.token, tt.size, tt.hdr, tt.want) })
	}
	t.Run("busy", func(t *testing.T) {
		// Hold the one upload slot with an upload whose body stalls.
		pr, pw := io.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			req, _ := http.NewRequest("PUT", ts.URL+"/v1/shares/slow", pr)
			req.ContentLength = 10
			req.Header.Set("Authorization", "Bearer "+testToken)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
		pw.Write([]byte("12345"))
		for len(ts.Server.uploads) == 0 {
			time.Sleep(10 * time.Millisecond)
		}
		run(t, "PUT", ts.URL+"/v1/shares/x", testToken, 1<<29, nil, 503)
		pw.Write([]byte("67890"))
		pw.Close()
		<-done
	})
	t.Run("disk full", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to mount a small tmpfs")
		}
		dir := t.TempDir()
		if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=4m"); err != nil {
			t.Skipf("mount tmpfs: %v", err)
		}
		t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
		st, err := transfer.OpenStore(dir, transfer.StoreOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		full := startServer(t, st, nil)
		run(t, "PUT", full.URL+"/v1/shares/x", testToken, 64<<20, nil, 507)
	})
	// The same with curl, whose --expect100-timeout is how long it waits for
	// the 100 before it sends anyway.
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("no curl installed")
	}
	big := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(big, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, huge); err != nil { // sparse: no disk used
		t.Fatal(err)
	}
	out, err := exec.Command(curl, "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_upload}", "--expect100-timeout", "60",
		"-H", "Authorization: Bearer wrong", "-T", big, ts.URL+"/v1/shares/x").Output()
	if err != nil || string(out) != "401 0" {
		t.Fatalf("curl -T of 2 GiB with a wrong token: %q %v, want 401 and 0 bytes sent", out, err)
	}
}

// localStore is a backend that tells where it keeps shares, as a peer does.
type localStore struct{ *transfer.Store }

func (l localStore) LocalCopy(id transfer.ID) (transfer.LocalCopy, error) {
	sh, err := l.Get(id)
	if err != nil {
		return transfer.LocalCopy{}, err
	}
	return sh.LocalCopy()
}

// TestLocalRoute: the local route answers a loopback client with the token
// (even with --public-read), nobody else; a server does not have it; a
// client of a backend that has it makes its output from the backend's copy.
func TestLocalRoute(t *testing.T) {
	st, err := transfer.OpenStore(t.TempDir(), transfer.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	content := transfertest.Bytes(3, 3<<20+7)
	sh, err := st.Import(context.Background(), "f.bin", bytes.NewReader(content), transfer.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	peer := startServer(t, st, func(o *Options) { o.Backend = localStore{st}; o.PublicRead = true })
	server := startServer(t, nil, func(o *Options) { o.PublicRead = true })
	path := "/v1/shares/" + sh.ID().String() + "/local"
	other := filepath.Join(t.TempDir(), "other")
	os.WriteFile(other, []byte("not held"), 0o644)
	om, err := transfer.BuildManifest(context.Background(), other, transfer.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, url, token string
		status           int
	}{
		{"token", peer.URL + path, testToken, 200},
		{"no token", peer.URL + path, "", 401},
		{"unknown share", peer.URL + "/v1/shares/" + om.ID().String() + "/local", testToken, 404},
		{"server", server.URL + path, testToken, 501},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := request(t, "GET", tc.url, tc.token, nil)
			body := readBody(t, resp)
			if resp.StatusCode != tc.status {
				t.Fatalf("%d %s, want %d", resp.StatusCode, body, tc.status)
			}
			if tc.status != 200 {
				return
			}
			var lc transfer.LocalCopy
			if err := json.Unmarshal(body, &lc); err != nil || lc.Data != sh.DataPath() || !lc.Complete || lc.Ino == 0 {
				t.Fatalf("answer %s (%v), want %s complete", body, err, sh.DataPath())
			}
		})
	}
	t.Run("not loopback", func(t *testing.T) {
		req := httptest.NewRequest("GET", path, nil)
		req.Host = "127.0.0.1"
		req.RemoteAddr = "192.0.2.7:40000"
		req.Header.Set("Authorization", "Bearer "+testToken)
		rec := httptest.NewRecorder()
		peer.Server.Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden || strings.Contains(rec.Body.String(), sh.Dir()) {
			t.Fatalf("%d %s, want 403 without the path", rec.Code, rec.Body)
		}
	})
	t.Run("client", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "copy.bin")
		_, stats, err := peer.client(t, testToken).Get(context.Background(), sh.ID(), transfer.GetOptions{Out: out})
		if err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(out)
		if stats.Local != transfer.CloneHardlink || !bytes.Equal(got, content) {
			t.Fatalf("made by %v, %d bytes; want a hard link of the %d bytes", stats.Local, len(got), len(content))
		}
		_, stats, err = server.client(t, testToken).Get(context.Background(), sh.ID(), transfer.GetOptions{Out: out + ".2"})
		if !errors.Is(err, transfer.ErrNotFound) || stats.Local != transfer.CloneNone {
			t.Fatalf("from a server without the share: %v, %v", err, stats.Local)
		}
	})
}

// TestConditionalAndRangeRequests checks RFC 9110's conditional requests
// (13), ranges (14) and HEAD (9.3.2) on every download route: the file, a
// directory's tar stream, the manifest and a chunk, and an empty file.
func TestConditionalAndRangeRequests(t *testing.T) {
	ts := startServer(t, nil, nil)
	c := ts.client(t, testToken)
	content := transfertest.Bytes(5, 100<<10+7)
	file, err := c.Upload(context.Background(), "data.bin", bytes.NewReader(content), int64(len(content)))
	if err != nil {
		t.Fatal(err)
	}
	empty, err := c.Upload(context.Background(), "empty", strings.NewReader(""), 0)
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "tree")
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	os.WriteFile(filepath.Join(src, "sub", "a"), content[:5000], 0o644)
	os.WriteFile(filepath.Join(src, "b"), content[5000:], 0o644)
	dir, err := c.Put(context.Background(), src, PutOptions{Build: transfer.BuildOptions{ChunkSize: transfer.MinChunkSize}})
	if err != nil {
		t.Fatal(err)
	}
	routes := []struct{ name, url string }{
		{"file", "/v1/shares/" + file.ID.String()},
		{"tar", "/v1/shares/" + dir.ID.String()},
		{"manifest", "/v1/shares/" + file.ID.String() + "/manifest"},
		{"chunk", "/v1/shares/" + dir.ID.String() + "/chunks/1"},
	}
	past := time.Now().Add(-48 * time.Hour).UTC().Format(http.TimeFormat)
	future := time.Now().Add(48 * time.Hour).UTC().Format(http.TimeFormat)
	for _, rt := range routes {
		t.Run(rt.name, func(t *testing.T) {
			get := request(t, "GET", ts.URL+rt.url, testToken, nil)
			full := readBody(t, get)
			etag, lm := get.Header.Get("ETag"), get.Header.Get("Last-Modified")
			n := len(full)
			if get.StatusCode != 200 || n < 20 || !strings.HasPrefix(etag, `"`) || lm == "" ||
				get.Header.Get("Accept-Ranges") != "bytes" || get.Header.Get("Content-Length") != fmt.Sprint(n) {
				t.Fatalf("GET: %d, %d bytes, headers %v", get.StatusCode, n, get.Header)
			}
			tests := []struct {
				name   string
				method string
				hdr    []string
				status int
				body   []byte // nil: no body
				cr     string // Content-Range
			}{
				{"If-None-Match, same tag", "GET", []string{"If-None-Match", etag}, 304, nil, ""},
				{"If-None-Match, weak comparison", "GET", []string{"If-None-Match", "W/" + etag}, 304, nil, ""},
				{"If-None-Match, in a list", "GET", []string{"If-None-Match", `"x", ` + etag}, 304, nil, ""},
				{"If-None-Match, *", "GET", []string{"If-None-Match", "*"}, 304, nil, ""},
				{"If-None-Match, other", "GET", []string{"If-None-Match", `"other"`}, 200, full, ""},
				{"If-None-Match on HEAD", "HEAD", []string{"If-None-Match", etag}, 304, nil, ""},
				{"If-Match, same tag", "GET", []string{"If-Match", etag}, 200, full, ""},
				{"If-Match, strong comparison", "GET", []string{"If-Match", "W/" + etag}, 412, nil, ""},
				{"If-Match, other", "GET", []string{"If-Match", `"other"`}, 412, nil, ""},
				{"If-Match, *", "GET", []string{"If-Match", "*"}, 200, full, ""},
				{"If-Unmodified-Since, before", "GET", []string{"If-Unmodified-Since", past}, 412, nil, ""},
				{"If-Unmodified-Since, after", "GET", []string{"If-Unmodified-Since", future}, 200, full, ""},
				{"If-Match wins over If-Unmodified-Since", "GET", []string{"If-Match", etag, "If-Unmodified-Since", past}, 200, full, ""},
				{"If-Modified-Since, same", "GET", []string{"If-Modified-Since", lm}, 304, nil, ""},
				{"If-Modified-Since, before", "GET", []string{"If-Modified-Since", past}, 200, full, ""},
				{"If-None-Match wins over If-Modified-Since", "GET", []string{"If-None-Match", `"other"`, "If-Modified-Since", future}, 200, full, ""},
				{"If-Match failing beats If-None-Match", "GET", []string{"If-Match", `"other"`, "If-None-Match", etag}, 412, nil, ""},
				{"Range", "GET", []string{"Range", "bytes=3-12"}, 206, full[3:13], fmt.Sprintf("bytes 3-12/%d", n)},
				{"Range to the end", "GET", []string{"Range", "bytes=7-"}, 206, full[7:], fmt.Sprintf("bytes 7-%d/%d", n-1, n)},
				{"Range, suffix", "GET", []string{"Range", "bytes=-5"}, 206, full[n-5:], fmt.Sprintf("bytes %d-%d/%d", n-5, n-1, n)},
				{"Range, unit in capitals", "GET", []string{"Range", "Bytes=3-12"}, 206, full[3:13], fmt.Sprintf("bytes 3-12/%d", n)},
				{"Range, unknown unit: ignored", "GET", []string{"Range", "items=3-12"}, 200, full, ""},
				{"Range, unsatisfiable", "GET", []string{"Range", fmt.Sprintf("bytes=%d-", n)}, 416, []byte{}, fmt.Sprintf("bytes */%d", n)},
				{"Range, too many ranges: ignored", "GET", []string{"Range", "bytes=0-0" + strings.Repeat(",2-2", maxRanges)}, 200, full, ""},
				{"Range on HEAD: ignored", "HEAD", []string{"Range", "bytes=3-12"}, 200, nil, ""},
				{"If-Range, same tag", "GET", []string{"Range", "bytes=3-12", "If-Range", etag}, 206, full[3:13], fmt.Sprintf("bytes 3-12/%d", n)},
				{"If-Range, other tag", "GET", []string{"Range", "bytes=3-12", "If-Range", `"other"`}, 200, full, ""},
				{"If-Range, weak tag never matches", "GET", []string{"Range", "bytes=3-12", "If-Range", "W/" + etag}, 200, full, ""},
				{"If-Range, the date", "GET", []string{"Range", "bytes=3-12", "If-Range", lm}, 206, full[3:13], fmt.Sprintf("bytes 3-12/%d", n)},
				{"If-Range, another date", "GET", []string{"Range", "bytes=3-12", "If-Range", past}, 200, full, ""},
				{"If-None-Match beats Range", "GET", []string{"Range", fmt.Sprintf("bytes=%d-", n), "If-None-Match", etag}, 304, nil, ""},
				{"HEAD", "HEAD", nil, 200, nil, ""},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					resp := request(t, tt.method, ts.URL+rt.url, testToken, nil, tt.hdr...)
					body := readBody(t, resp)
					if resp.StatusCode != tt.status {
						t.Fatalf("%d, want %d", resp.StatusCode, tt.status)
					}
					if tt.status == 416 {
						var e apiError
						if err := json.Unmarshal(body, &e); err != nil || e.Code != "range_not_satisfiable" || resp.Header.Get("Content-Type") != "application/json" {
							t.Fatalf("416 of %s: %q, %v; want a JSON error with code range_not_satisfiable", resp.Header.Get("Content-Type"), body, err)
						}
					} else if tt.body != nil && !bytes.Equal(body, tt.body) {
						t.Fatalf("body of %d bytes differs from the %d expected", len(body), len(tt.body))
					}
					if tt.body == nil && len(body) != 0 {
						t.Fatalf("%d bytes of body, want none", len(body))
					}
					if got := resp.Header.Get("Content-Range"); got != tt.cr {
						t.Fatalf("Content-Range %q, want %q", got, tt.cr)
					}
					switch tt.status {
					case 304:
						if resp.Header.Get("ETag") != etag {
							t.Fatalf("304 with ETag %q, want %q", resp.Header.Get("ETag"), etag)
						}
					case 200:
						if tt.method == "HEAD" { // HEAD: GET's header fields (RFC 9110 9.3.2)
							for _, k := range []string{"Content-Length", "Content-Type", "ETag", "Last-Modified", "Accept-Ranges", "Cache-Control", "Content-Disposition"} {
								if resp.Header.Get(k) != get.Header.Get(k) {
									t.Errorf("HEAD %s: %q, GET: %q", k, resp.Header.Get(k), get.Header.Get(k))
								}
							}
						}
					}
				})
			}
			t.Run("several ranges", func(t *testing.T) {
				resp := request(t, "GET", ts.URL+rt.url, testToken, nil, "Range", "bytes=0-1,10-14")
				mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
				if resp.StatusCode != 206 || err != nil || mt != "multipart/byteranges" {
					t.Fatalf("%d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
				}
				mr := multipart.NewReader(resp.Body, params["boundary"])
				for _, want := range []struct {
					cr   string
					body []byte
				}{{fmt.Sprintf("bytes 0-1/%d", n), full[0:2]}, {fmt.Sprintf("bytes 10-14/%d", n), full[10:15]}} {
					p, err := mr.NextPart()
					if err != nil {
						t.Fatal(err)
					}
					b, _ := io.ReadAll(p)
					if p.Header.Get("Content-Range") != want.cr || !bytes.Equal(b, want.body) {
						t.Fatalf("part %q: %q", p.Header.Get("Content-Range"), b)
					}
				}
			})
		})
	}
	t.Run("empty body", func(t *testing.T) {
		url := ts.URL + "/v1/shares/" + empty.ID.String()
		for _, rng := range []string{"bytes=0-", "bytes=-5", "bytes=0-0", "bytes=0-1,3-4"} {
			resp := request(t, "GET", url, testToken, nil, "Range", rng)
			if body := readBody(t, resp); resp.StatusCode != 200 || len(body) != 0 || resp.Header.Get("Content-Range") != "" {
				t.Errorf("Range %s of an empty file: %d %q, want 200 and no Content-Range", rng, resp.StatusCode, resp.Header.Get("Content-Range"))
			}
		}
	})
}

// TestContentDisposition: every name reaches a client intact (RFC 6266 with
// RFC 8187's filename*), with an ASCII fallback for clients that read only
// filename; a directory's "NAME.tar" stays within a file name's 255 bytes.
func TestContentDisposition(t *testing.T) {
	tests := []struct{ name, want string }{
		{"photo.jpg", `attachment; filename="photo.jpg"`},
		{"with space.txt", `attachment; filename="with space.txt"`},
		{"漢字.txt", `attachment; filename="__.txt"; filename*=UTF-8''%E6%BC%A2%E5%AD%97.txt`},
		{`a"b.txt`, `attachment; filename="a_b.txt"; filename*=UTF-8''a%22b.txt`},
		{"100%.txt", `attachment; filename="100_.txt"; filename*=UTF-8''100%25.txt`},
		{"a;b=c", `attachment; filename="a;b=c"`},
	}
	for _, tt := range tests {
		got := contentDisposition(tt.name)
		if got != tt.want {
			t.Errorf("contentDisposition(%q) = %s, want %s", tt.name, got, tt.want)
		}
		if _, params, err := mime.ParseMediaType(got); err != nil || params["filename"] != tt.name {
			t.Errorf("%s parses as %q (%v)", got, params["filename"], err)
		}
	}
	ts := startServer(t, nil, nil)
	c := ts.client(t, testToken)
	long := strings.Repeat("漢", 85) // 255 bytes
	info, err := c.Upload(context.Background(), long, strings.NewReader("x"), 1)
	if err != nil {
		t.Fatal(err)
	}
	resp := request(t, "GET", ts.URL+"/v1/shares/"+info.ID.String(), testToken, nil)
	if _, params, err := mime.ParseMediaType(resp.Header.Get("Content-Disposition")); err != nil || params["filename"] != long {
		t.Fatalf("long name: %q (%v)", params["filename"], err)
	}
	src := filepath.Join(t.TempDir(), long)
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, long), []byte("y"), 0o644)
	dir, err := c.Put(context.Background(), src, PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	resp = request(t, "GET", ts.URL+"/v1/shares/"+dir.ID.String(), testToken, nil)
	_, params, err := mime.ParseMediaType(resp.Header.Get("Content-Disposition"))
	if fn := params["filename"]; err != nil || len(fn) > transfer.MaxNameLen || !strings.HasSuffix(fn, ".tar") || !strings.HasPrefix(fn, long[:240]) {
		t.Fatalf("long directory name: %q (%d bytes, %v)", fn, len(fn), err)
	}
	// The tar keeps the real names.
	tr := tar.NewReader(resp.Body)
	if h, err := tr.Next(); err != nil || h.Name != long+"/" {
		t.Fatalf("tar entry %v %v", h, err)
	}
}

// TestIndexEscapesConfusables: the list gives, beside the real name, the
// name as the web page shows it: characters that look like "../" escaped
// (TestBrowser checks the page shows it so).
func TestIndexEscapesConfusables(t *testing.T) {
	ts := startServer(t, nil, nil)
	name := "\uFF0E\uFF0E\uFF0Fetc\uFF0Fpasswd"
	if _, err := ts.client(t, testToken).Upload(context.Background(), name, strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	var l ListResponse
	json.Unmarshal(readBody(t, request(t, "GET", ts.URL+"/v1/shares", testToken, nil)), &l)
	if len(l.Shares) != 1 || l.Shares[0].DisplayName != `\uFF0E\uFF0E\uFF0Fetc\uFF0Fpasswd` {
		t.Fatalf("display name: %+v", l.Shares)
	}
	list, err := ts.client(t, testToken).List(context.Background())
	if err != nil || len(list) != 1 || list[0].Name != name {
		t.Fatalf("JSON list: %+v %v", list, err)
	}
	// A name with a bidirectional control is refused, naming the code point.
	r := request(t, "PUT", ts.URL+"/v1/shares/invoice%E2%80%AEfdp.exe", testToken, strings.NewReader("x"))
	if body := string(readBody(t, r)); r.StatusCode != 400 || !strings.Contains(body, "U+202E") {
		t.Fatalf("bidi name: %d %s", r.StatusCode, body)
	}
}
