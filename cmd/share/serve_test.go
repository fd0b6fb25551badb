package main

import (
	"bytes"
	"net"
	"net/http"
	"strings"
	"testing"
)

// TestServeChecksHost: share serve on loopback refuses a Host or Origin
// that is not a local name (DNS rebinding), also with --public-read;
// --allowed-host adds names.
func TestServeChecksHost(t *testing.T) {
	d := startServe(t, "", "--public-read", "--allowed-host", "files.example")
	port := d.URL[strings.LastIndexByte(d.URL, ':')+1:]
	tests := []struct {
		host, origin string
		want         int
	}{
		{"127.0.0.1:" + port, "", 200},
		{"localhost:" + port, "", 200},
		{"[::1]:" + port, "", 200},
		{"files.example:" + port, "", 200},
		{"FILES.EXAMPLE", "", 200},
		{"10.1.2.3:" + port, "", 200}, // an address cannot be rebound
		{"evil.example:" + port, "", 403},
		{"127.0.0.1.evil.example", "", 403},
		{"127.0.0.1:" + port, "http://evil.example", 403},
		{"127.0.0.1:" + port, "null", 403},
		{"127.0.0.1:" + port, "http://127.0.0.1:" + port, 200},
		{"127.0.0.1:" + port, "http://localhost:8080", 200},
		{"files.example", "http://files.example", 200},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest("GET", d.URL+"/v1/shares", nil)
		req.Host = tt.host
		if tt.origin != "" {
			req.Header.Set("Origin", tt.origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("Host %q Origin %q: %d, want %d", tt.host, tt.origin, resp.StatusCode, tt.want)
		}
	}
	r := share(t, t.TempDir(), nil, "serve", "--allowed-host", "files.example:7070")
	if r.code != 2 || !strings.Contains(r.stderr, "without scheme or port") {
		t.Fatalf("--allowed-host with a port: %d %s", r.code, r.stderr)
	}
}

// TestPrintAddrs: a server on all interfaces says so and lists this
// machine's addresses; one on loopback lists the names it accepts.
func TestPrintAddrs(t *testing.T) {
	var b bytes.Buffer
	printAddrs(&b, "http", ":7070", &net.TCPAddr{IP: net.IPv6unspecified, Port: 7070}, nil)
	out := b.String()
	if !strings.Contains(out, "on all interfaces (--listen :7070)") || strings.Contains(out, "listening on") {
		t.Fatalf("printed:\n%s", out)
	}
	ifaddrs, _ := net.InterfaceAddrs()
	for _, a := range ifaddrs {
		ipn := a.(*net.IPNet)
		if ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() {
			continue
		}
		if want := "http://" + net.JoinHostPort(ipn.IP.String(), "7070"); !strings.Contains(out, want) {
			t.Errorf("%s missing from:\n%s", want, out)
		}
	}
	b.Reset()
	printAddrs(&b, "http", "127.0.0.1:7070", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7070}, localHosts(net.IPv4(127, 0, 0, 1)))
	if out := b.String(); strings.Contains(out, "all interfaces") || !strings.Contains(out, "hosts: localhost, 127.0.0.1") {
		t.Fatalf("printed:\n%s", out)
	}
}
