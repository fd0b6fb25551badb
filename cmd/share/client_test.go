package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestParseServer(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{"http://127.0.0.1:7070", "http://127.0.0.1:7070", ""},
		{"https://share.example:8443/", "https://share.example:8443", ""},
		{"127.0.0.1:7070", "http://127.0.0.1:7070", ""},
		{" 127.0.0.1:7070 ", "http://127.0.0.1:7070", ""},
		{"localhost:7080", "http://localhost:7080", ""},
		{"[::1]:7070", "http://[::1]:7070", ""},
		{"7070", "http://127.0.0.1:7070", ""},
		{":7081", "http://127.0.0.1:7081", ""},
		{"myhost", "http://myhost:7070", ""},
		{"http://myhost", "http://myhost", ""}, // a URL means what it says: port 80
		{"", "", "empty; want http://HOST:PORT"},
		{"ftp://x", "", `scheme "ftp": share speaks http and https`},
		{"http://", "", "no host"},
		{"http://:7070", "", "no host"},
		{"127.0.0.1:70700", "", `port "70700" is not a port number`},
		{"http://127.0.0.1:7070/v1/shares", "", "leave out the path"},
		{"http://127.0.0.1:7070?x=1", "", "leave out the path"},
		{"http://me:token@127.0.0.1:7070", "", "put the token in --token or SHARE_TOKEN"},
		{"0", "", ""}, // not a port: taken as a host name, "0", which the OS maps to 0.0.0.0
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			u, err := parseServer(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("parseServer(%q) = %v, %v; want an error saying %q", tt.in, u, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseServer(%q): %v", tt.in, err)
			}
			if tt.want != "" && u.String() != tt.want {
				t.Fatalf("parseServer(%q) = %s, want %s", tt.in, u, tt.want)
			}
		})
	}
}

func TestParseListen(t *testing.T) {
	tests := []struct {
		flag, in, def, want, err string
	}{
		{"--listen", ":7070", "", ":7070", ""},
		{"--listen", "7070", "", ":7070", ""},
		{"--listen", "0", "", ":0", ""},
		{"--listen", "127.0.0.1:7080", "", "127.0.0.1:7080", ""},
		{"--listen", "[::1]:7080", "", "[::1]:7080", ""},
		{"--listen", "localhost:7080", "", "localhost:7080", ""},
		{"--api", "7080", "127.0.0.1", "127.0.0.1:7080", ""},
		{"--listen", "http://0.0.0.0:7070", "", "", "--listen \"http://0.0.0.0:7070\": want an address, not a URL: HOST:PORT or :PORT, e.g. --listen :7070"},
		{"--listen", "localhost", "", "", "want HOST:PORT, :PORT or PORT, e.g. --listen :7070"},
		{"--api", "127.0.0.1", "127.0.0.1", "", "e.g. --api 127.0.0.1:7070"},
		{"--listen", ":http", "", "", `"http" is not a port number`},
		{"--listen", ":99999", "", "", `"99999" is not a port number`},
		{"--listen", "no-such-host.invalid:7070", "", "", `no address of this machine is called "no-such-host.invalid"`},
	}
	for _, tt := range tests {
		t.Run(tt.flag+" "+tt.in, func(t *testing.T) {
			got, err := parseListen(tt.flag, tt.in, tt.def)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %q, %v; want an error saying %q", got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestListenError(t *testing.T) {
	// A port nothing listens on, so that the message does not depend on a
	// daemon the user (or the README's Quick start) runs on this machine.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := l.Addr().(*net.TCPAddr).Port
	l.Close()
	free, next := ":"+strconv.Itoa(p), ":"+strconv.Itoa(p+10)
	tests := []struct {
		flag, addr string
		err        error
		want       string
	}{
		{"--listen", free, syscall.EADDRINUSE, "--listen " + free + ": the address is in use by another program (another share serve or share peer?); stop it, or choose another port: --listen " + next},
		{"--api", "127.0.0.1:7070", syscall.EADDRINUSE, "choose another port: --api 127.0.0.1:7080"},
		{"--listen", ":80", syscall.EACCES, "--listen :80: permission denied: ports below 1024 need root (or CAP_NET_BIND_SERVICE); choose a port above 1023, e.g. --listen :7070"},
		{"--listen", "10.9.9.9:7070", syscall.EADDRNOTAVAIL, "no network interface of this machine has the address 10.9.9.9; use one it has, or :7070 for all of them"},
		{"--api", "127.0.0.1:7070", errors.New("odd"), "--api 127.0.0.1:7070: odd"},
	}
	for _, tt := range tests {
		t.Run(tt.flag+" "+tt.addr, func(t *testing.T) {
			err := listenError(tt.flag, tt.addr, &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", tt.err)})
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %q\nwant %q", err, tt.want)
			}
		})
	}
}

func TestCheckPeerListen(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := strconv.Itoa(busy.Addr().(*net.TCPAddr).Port)
	busyUDP, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busyUDP.Close()
	uport := strconv.Itoa(busyUDP.LocalAddr().(*net.UDPAddr).Port)
	tests := []struct {
		in    []string
		err   string
		usage bool
	}{
		{[]string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}, "", false},
		{[]string{"7072"}, `--listen "7072": not a libp2p multiaddr`, true},
		{[]string{"7072"}, "--listen /ip4/0.0.0.0/tcp/7072 --listen /ip4/0.0.0.0/udp/7072/quic-v1", true},
		{[]string{"0.0.0.0:7073"}, "--listen /ip4/0.0.0.0/tcp/7073 --listen /ip4/0.0.0.0/udp/7073/quic-v1", true},
		{[]string{"/ip4/0.0.0.0/tcp/x"}, "not a libp2p multiaddr", true},
		{[]string{"/ip4/0.0.0.0/udp/7072"}, "share peers listen on TCP (/ip4/ADDR/tcp/PORT) and QUIC (/ip4/ADDR/udp/PORT/quic-v1) only", true},
		{[]string{"/ip4/127.0.0.1/tcp/" + port}, "--listen /ip4/127.0.0.1/tcp/" + port + ": the port is in use by another program", false},
		{[]string{"/ip4/127.0.0.1/udp/" + uport + "/quic-v1"}, "the port is in use", false},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.in, " "), func(t *testing.T) {
			err := checkPeerListen(tt.in)
			if tt.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) || errors.As(err, new(usageError)) != tt.usage {
				t.Fatalf("got %v (usage %v)\nwant %q (usage %v)", err, errors.As(err, new(usageError)), tt.err, tt.usage)
			}
		})
	}
}

func TestCheckOutput(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	tests := []struct{ out, err string }{
		{"", ""},
		{"x.bin", ""},
		{dir, ""},
		{dir + "/", ""},
		{filepath.Join(dir, "new.bin"), ""},
		{filepath.Join(dir, "missing", "dir") + "/", "the directory " + filepath.Join(dir, "missing", "dir") + "/ does not exist; create it first (mkdir -p"},
		{filepath.Join(dir, "missing", "x.bin"), "the directory " + filepath.Join(dir, "missing") + " does not exist"},
		{filepath.Join(file, "x"), file + " is not a directory"},
		{file + "/", "is not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.out, func(t *testing.T) {
			err := checkOutput(tt.out)
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("checkOutput(%q) = %v, want %q", tt.out, err, tt.err)
			}
		})
	}
}

func TestLocalError(t *testing.T) {
	tests := []struct {
		path string
		err  error
		want string
	}{
		{"f", &fs.PathError{Op: "stat", Path: "f", Err: syscall.ENOENT}, "no such file or directory"},
		{"./f", &fs.PathError{Op: "stat", Path: "f", Err: syscall.ENOENT}, "no such file or directory"},
		{"d", &fs.PathError{Op: "open", Path: "d/secret", Err: syscall.EACCES}, "d/secret: permission denied"},
		{"d", fmt.Errorf("d: %w", errors.New("nothing to share")), "d: nothing to share"},
	}
	for _, tt := range tests {
		got := localError(tt.path, tt.err)
		if got.Error() != tt.want || !errors.Is(got, errors.Unwrap(tt.err)) && errors.Unwrap(tt.err) != nil {
			t.Errorf("localError(%q, %v) = %q, want %q", tt.path, tt.err, got, tt.want)
		}
	}
}
