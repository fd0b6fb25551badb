package main

import (
	"encoding/json"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The per-user index maps an API address to the data directory of the
// daemon listening there; stale and foreign entries are never used.
func TestDaemonIndex(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	index := indexDir()
	data := t.TempDir()
	loop := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7301}
	unregister, warning, err := registerDaemon(data, loop, "http://127.0.0.1:7301")
	if err != nil || warning != nil {
		t.Fatal(err, warning)
	}
	if b, _ := os.ReadFile(filepath.Join(data, apiFile)); string(b) != "http://127.0.0.1:7301\n" {
		t.Fatalf("api file: %q", b)
	}
	for _, f := range []string{index, filepath.Join(index, indexName(loop)), filepath.Join(data, apiFile)} {
		fi, err := os.Stat(f)
		if err != nil || fi.Mode().Perm()&0o077 != 0 {
			t.Fatalf("%s: %v %v (want no access for group and others)", f, fi.Mode(), err)
		}
	}
	wild := &net.TCPAddr{Port: 7302}
	data2 := t.TempDir()
	unregister2, _, err := registerDaemon(data2, wild, "http://127.0.0.1:7302")
	if err != nil {
		t.Fatal(err)
	}
	defer unregister2()

	tests := []struct {
		url, data string
	}{
		{"http://127.0.0.1:7301", data},
		{"http://localhost:7301", data},
		{"http://127.0.0.2:7301", ""}, // not the address it listens on
		{"http://[::1]:7301", ""},
		{"http://127.0.0.1:7303", ""},
		{"http://127.0.0.1:7302", data2}, // a wildcard listener answers on every loopback name
		{"http://localhost:7302", data2},
		{"http://[::1]:7302", data2},
	}
	for _, tt := range tests {
		u, _ := url.Parse(tt.url)
		d, ok := lookupDaemon(u)
		if ok != (tt.data != "") || ok && d.Data != tt.data {
			t.Errorf("lookup %s = %+v %v, want data %q", tt.url, d, ok, tt.data)
		}
	}

	// The daemon of data2 stopped without cleaning up, and its process is
	// gone: the entry is stale, not used, and removed.
	entry := filepath.Join(index, indexName(wild))
	var e daemonEntry
	b, _ := os.ReadFile(entry)
	json.Unmarshal(b, &e)
	e.PID = deadPID(t)
	b, _ = json.Marshal(e)
	os.WriteFile(entry, b, 0o600)
	if d, ok := lookupDaemon(&url.URL{Scheme: "http", Host: "127.0.0.1:7302"}); ok {
		t.Fatalf("stale entry used: %+v", d)
	}
	if _, err := os.Stat(entry); !os.IsNotExist(err) {
		t.Fatalf("stale entry kept: %v", err)
	}

	// Another daemon now runs in data (its api file names another URL):
	// the entry no longer describes it.
	os.WriteFile(filepath.Join(data, apiFile), []byte("http://127.0.0.1:9999\n"), 0o600)
	if _, ok := lookupDaemon(&url.URL{Scheme: "http", Host: "127.0.0.1:7301"}); ok {
		t.Fatal("entry used though the data directory's api file names another URL")
	}
	os.WriteFile(filepath.Join(data, apiFile), []byte("http://127.0.0.1:7301\n"), 0o600)

	// An index that others can write is not trusted: it tells clients where
	// to send tokens.
	os.Chmod(index, 0o777)
	if _, ok := lookupDaemon(&url.URL{Scheme: "http", Host: "127.0.0.1:7301"}); ok {
		t.Fatal("entry of a world-writable index used")
	}
	if _, warning, _ := registerDaemon(t.TempDir(), &net.TCPAddr{Port: 7304}, "http://127.0.0.1:7304"); warning == nil || !strings.Contains(warning.Error(), "writable by others") {
		t.Fatalf("registering in a world-writable index: %v", warning)
	}
	os.Chmod(index, 0o700)

	unregister()
	for _, f := range []string{filepath.Join(data, apiFile), filepath.Join(index, indexName(loop))} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s left after unregister: %v", f, err)
		}
	}
}

// deadPID returns the ID of a process that has exited.
func deadPID(t *testing.T) int {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skipf("true: %v", err)
	}
	return cmd.Process.Pid
}

func TestIndexDir(t *testing.T) {
	tests := []struct {
		runtime, state, home, want string
	}{
		{"/run/user/1000", "/s", "/h", "/run/user/1000/share"},
		{"", "/s", "/h", "/s/share/daemons"},
		{"", "", "/h", "/h/.local/state/share/daemons"},
		{"relative", "also", "/h", "/h/.local/state/share/daemons"}, // XDG: relative paths are invalid, ignore them
	}
	for _, tt := range tests {
		t.Setenv("XDG_RUNTIME_DIR", tt.runtime)
		t.Setenv("XDG_STATE_HOME", tt.state)
		t.Setenv("HOME", tt.home)
		if got := indexDir(); got != tt.want {
			t.Errorf("indexDir with %+v = %s, want %s", tt, got, tt.want)
		}
	}
}
