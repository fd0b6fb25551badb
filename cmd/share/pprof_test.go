package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestCheckPprofAddr(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:6060", true},
		{"127.0.0.1:0", true},
		{"127.3.4.5:6060", true},
		{"[::1]:6060", true},
		{"localhost:6060", true},
		{":6060", false}, // every interface
		{"0.0.0.0:6060", false},
		{"[::]:6060", false},
		{"192.168.1.10:6060", false},
		{"example.com:6060", false},
		{"127.0.0.1", false}, // no port
		{"", false},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			err := checkPprofAddr(tc.addr)
			if (err == nil) != tc.ok {
				t.Fatalf("checkPprofAddr(%q) = %v, want ok %v", tc.addr, err, tc.ok)
			}
		})
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestPprofFlag: both daemons serve profiles on their own loopback listener
// with --pprof, never on the API, and refuse a non-loopback address.
func TestPprofFlag(t *testing.T) {
	d := startServe(t, "", "--pprof", "127.0.0.1:0")
	p := startPeer(t, "", "--pprof", "127.0.0.1:0")
	for _, tc := range []struct{ name, pprof, api string }{{"serve", d.Pprof, d.URL}, {"peer", p.Pprof, p.API}} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.HasPrefix(tc.pprof, "http://127.0.0.1:") || tc.pprof == tc.api {
				t.Fatalf("pprof URL %q (API %q)", tc.pprof, tc.api)
			}
			if code, body := get(t, tc.pprof+"goroutine?debug=1"); code != 200 || !strings.Contains(body, "goroutine profile") {
				t.Fatalf("goroutine profile: %d %.200s", code, body)
			}
			if code, _ := get(t, tc.api+"/debug/pprof/"); code == 200 {
				t.Fatal("the API serves profiles")
			}
		})
	}
	for _, cmd := range []string{"serve", "peer"} {
		r := share(t, t.TempDir(), nil, cmd, "--pprof", "0.0.0.0:6060", "--data", t.TempDir())
		if r.code != exitUsage || !strings.Contains(r.stderr, "loopback only") {
			t.Fatalf("%s --pprof 0.0.0.0:6060: exit %d, stderr %q", cmd, r.code, r.stderr)
		}
	}
	// Without the flag nothing listens: the default is off.
	plain := startServe(t, "")
	if plain.Pprof != "" {
		t.Fatalf("serve without --pprof printed %q", plain.Pprof)
	}
}
