package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sharefiles/share/transfer"
	"github.com/sharefiles/share/transfer/transfertest"
)

func TestResponseErrorSentinels(t *testing.T) {
	// The client's one translation of responses: by the error code the
	// server sent, else by the status alone (a proxy's answer).
	tests := []struct {
		status    int
		body      string
		want      error
		permanent bool
	}{
		{503, `{"error":"32 uploads in progress","code":"busy"}`, transfer.ErrBusy, false},
		{503, `<html>Service Unavailable</html>`, transfer.ErrBusy, false},
		{429, ``, transfer.ErrBusy, false},
		{401, ``, ErrUnauthorized, true},
		{403, ``, transfer.ErrSourceRefused, true},
		{404, `{"error":"chunk 3 not held","code":"chunk_not_held"}`, transfer.ErrChunkNotHeld, false},
		{404, `404 page not found`, transfer.ErrNotFound, true},
		{410, `{"error":"share was removed","code":"removed"}`, transfer.ErrRemoved, true},
		{413, ``, transfer.ErrTooLarge, true},
		{400, ``, transfer.ErrBadRequest, true},
		{507, `{"error":"Insufficient Storage","code":"no_space"}`, transfer.ErrNoSpace, true},
		{500, `{"error":"Internal Server Error","code":"internal"}`, nil, false},
		{502, `Bad Gateway`, nil, false},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status)+" "+tt.body, func(t *testing.T) {
			resp := &http.Response{StatusCode: tt.status, Body: io.NopCloser(strings.NewReader(tt.body))}
			err := responseError(resp, "GET /x")
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("responseError = %v, want %v", err, tt.want)
			}
			if got := transfer.Permanent(err); got != tt.permanent {
				t.Fatalf("Permanent(%v) = %v, want %v", err, got, tt.permanent)
			}
		})
	}
	if ErrBusy != transfer.ErrBusy {
		t.Fatal("server.ErrBusy and transfer.ErrBusy are different errors")
	}
}

func TestBusyIsNotAFailure(t *testing.T) {
	// A proxy in front of the server answers 503 to one chunk request in
	// three, with and without the server's JSON body: the download treats
	// each as a busy source (a short pause), never as a failed one.
	ts := startServer(t, nil, func(o *Options) { o.ChunkSize = 64 << 10 })
	c := ts.client(t, testToken)
	content := transfertest.Bytes(21, 2<<20)
	info, err := c.Upload(context.Background(), "f", bytes.NewReader(content), int64(len(content)))
	if err != nil {
		t.Fatal(err)
	}
	target, _ := url.Parse(ts.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	var n, busy atomic.Int32
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/chunks/") {
			switch k := n.Add(1); {
			case k%6 == 0:
				busy.Add(1)
				writeError(w, ErrBusy)
				return
			case k%3 == 0:
				busy.Add(1)
				http.Error(w, "overloaded", http.StatusServiceUnavailable)
				return
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()
	pc, err := NewClient(front.URL, ClientOptions{Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "f")
	_, stats, err := pc.Get(context.Background(), info.ID, transfer.GetOptions{Out: out})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, content) {
		t.Fatal("downloaded bytes differ")
	}
	src := stats.Sources[pc.String()]
	if busy.Load() < 3 || src.Errors != 0 || src.Dropped {
		t.Fatalf("%d busy answers; source stats %+v: want busy answers, no errors", busy.Load(), src)
	}
}

func TestRemoveShareMidTransfer(t *testing.T) {
	// A share is deleted on the server while a client downloads it, and
	// while a client uploads it (the server's own download into its store):
	// both end soon with a permanent error, not after the stall timeout, and
	// -race finds nothing.
	content := transfertest.Bytes(22, 8<<20)
	t.Run("download", func(t *testing.T) {
		ts := startServer(t, nil, func(o *Options) { o.ChunkSize = 64 << 10 })
		c := ts.client(t, testToken)
		info, err := c.Upload(context.Background(), "f", bytes.NewReader(content), int64(len(content)))
		if err != nil {
			t.Fatal(err)
		}
		var once atomic.Bool
		removed := make(chan error, 1)
		start := time.Now()
		_, _, err = c.Get(context.Background(), info.ID, transfer.GetOptions{
			Out: filepath.Join(t.TempDir(), "f"),
			Download: transfer.DownloadOptions{
				Limiter: transfer.NewLimiter(8 << 20),
				Progress: func(p transfer.Progress) {
					if p.Chunks >= 16 && once.CompareAndSwap(false, true) {
						go func() { removed <- c.Remove(context.Background(), info.ID) }()
					}
				},
			},
		})
		if rerr := <-removed; rerr != nil {
			t.Fatal(rerr)
		}
		if err == nil || !transfer.Permanent(err) {
			t.Fatalf("download of a share deleted meanwhile: %v, want a permanent error", err)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Fatalf("download took %v to notice the deletion", took)
		}
	})
	t.Run("upload", func(t *testing.T) {
		ts := startServer(t, nil, nil)
		c := ts.client(t, testToken)
		path := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(path, content, 0o644); err != nil {
			t.Fatal(err)
		}
		var sent atomic.Int64
		removed := make(chan error, 1)
		var id transfer.ID
		start := time.Now()
		_, err := c.Put(context.Background(), path, PutOptions{
			Build:   transfer.BuildOptions{ChunkSize: 64 << 10},
			Limiter: transfer.NewLimiter(8 << 20),
			Started: func(m *transfer.Manifest, _ int64) { id = m.ID() },
			Progress: func(n int64) {
				if sent.Add(n) >= 1<<20 && sent.Load()-n < 1<<20 {
					go func() { removed <- c.Remove(context.Background(), id) }()
				}
			},
		})
		if rerr := <-removed; rerr != nil {
			t.Fatal(rerr)
		}
		if err == nil || !transfer.Permanent(err) {
			t.Fatalf("upload of a share deleted meanwhile: %v, want a permanent error", err)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Fatalf("upload took %v to notice the deletion", took)
		}
		if _, err := ts.Store.Get(id); !errors.Is(err, transfer.ErrNotFound) {
			t.Fatalf("the server still has the share: %v", err)
		}
	})
}
