package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// shareBin is the binary under test, built once by TestMain.
var shareBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "share-bin-")
	if err != nil {
		panic(err)
	}
	shareBin = filepath.Join(dir, "share")
	out, err := exec.Command("go", "build", "-o", shareBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building share: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is a share serve process.
type daemon struct {
	URL   string
	Token string
	Data  string
	Pprof string // the profiles' index, with --pprof
	cmd   *exec.Cmd
	done  chan struct{}
	log   *bytes.Buffer
}

var urlLine = regexp.MustCompile(`listening on (https?://\S+)`)
var tokenLine = regexp.MustCompile(`(?m)^token: (\S+)$`)
var pprofLine = regexp.MustCompile(`(?m)^pprof: (\S+)$`)

// startServe runs `share serve` on a free loopback port with a fresh data
// directory (or data, if given) and stops it when the test ends.
func startServe(t testing.TB, data string, args ...string) *daemon {
	t.Helper()
	return startServeIn(t, "", data, args...)
}

// startServeIn runs `share serve` with HOME=home (default: its data
// directory), so that clients with the same HOME share its index of daemons.
func startServeIn(t testing.TB, home, data string, args ...string) *daemon {
	t.Helper()
	if data == "" {
		data = t.TempDir()
	}
	if home == "" {
		home = data
	}
	cmd := exec.Command(shareBin, append([]string{"serve", "--listen", "127.0.0.1:0", "--data", data}, args...)...)
	cmd.Env = cleanEnv(home)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{Data: data, cmd: cmd, done: make(chan struct{}), log: new(bytes.Buffer)}
	cmd.Stderr = &lockedWriter{w: d.log}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(d.done) }()
	t.Cleanup(func() { d.stop(t) })
	sc := bufio.NewScanner(stdout)
	var head strings.Builder
	deadline := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() })
	defer deadline.Stop()
	for sc.Scan() {
		head.WriteString(sc.Text() + "\n")
		if strings.HasPrefix(sc.Text(), "try:") {
			break
		}
	}
	go io.Copy(io.Discard, stdout)
	m := urlLine.FindStringSubmatch(head.String())
	if m == nil {
		t.Fatalf("serve printed no URL:\n%s\nstderr:\n%s", head.String(), d.log)
	}
	d.URL = m[1]
	if tm := tokenLine.FindStringSubmatch(head.String()); tm != nil {
		d.Token = tm[1]
	}
	if pm := pprofLine.FindStringSubmatch(head.String()); pm != nil {
		d.Pprof = pm[1]
	}
	return d
}

// stop sends SIGTERM and waits for the process.
func (d *daemon) stop(t testing.TB) {
	select {
	case <-d.done:
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
		t.Errorf("share serve did not stop on SIGTERM")
	}
}

// lockedWriter serializes writes from the process's stderr copier and reads
// by the test.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// cleanEnv is the environment for a share process: no SHARE_* or XDG_* from
// the developer's shell (so no test sees or registers in their index of
// daemons), HOME inside the test's data directory.
func cleanEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SHARE_") && !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "XDG_") {
			env = append(env, kv)
		}
	}
	return append(env, "HOME="+home)
}

type result struct {
	stdout, stderr string
	code           int
}

// share runs the binary with args and env additions, in dir.
func share(t testing.TB, dir string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, shareBin, args...)
	cmd.Dir = dir
	cmd.Env = append(cleanEnv(dir), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{stdout.String(), stderr.String(), code}
}

func (d *daemon) env() []string {
	return []string{"SHARE_SERVER=" + d.URL, "SHARE_TOKEN=" + d.Token}
}

func writeFile(t testing.TB, path string, size int64, seed uint64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var key [32]byte
	key[0] = byte(seed)
	if _, err := io.CopyN(f, rand.NewChaCha8(key), size); err != nil {
		t.Fatal(err)
	}
}

func sameFiles(t testing.TB, a, b string) {
	t.Helper()
	out, err := exec.Command("cmp", a, b).CombinedOutput()
	if err != nil {
		t.Fatalf("%s and %s differ: %v %s", a, b, err, out)
	}
}

// metric reads one counter from /metrics.
func metric(t testing.TB, d *daemon, name string) float64 {
	t.Helper()
	v, ok := metricValue(t, d, name)
	if !ok {
		t.Fatalf("metric %s not found", name)
	}
	return v
}

// metricValue reads one series from /metrics; ok is false if it is not there
// (yet: a labelled series appears on its first use).
func metricValue(t testing.TB, d *daemon, name string) (v float64, ok bool) {
	t.Helper()
	req, _ := http.NewRequest("GET", d.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+d.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if s, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(s, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f, true
		}
	}
	return 0, false
}

func TestServeWithNoFlags(t *testing.T) {
	ln, err := net.Listen("tcp", ":7070")
	if err != nil {
		t.Skipf("port 7070 is busy (%v); the default cannot be tried here", err)
	}
	ln.Close()
	home := t.TempDir()
	cmd := exec.Command(shareBin, "serve")
	cmd.Env = cleanEnv(home)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Start()
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	sc := bufio.NewScanner(out)
	var head strings.Builder
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "try:") {
		head.WriteString(sc.Text() + "\n")
	}
	data := filepath.Join(home, ".local", "share", "share")
	if !strings.Contains(head.String(), "listening on http://127.0.0.1:7070") || !strings.Contains(head.String(), "data:  "+data) {
		t.Fatalf("serve printed:\n%s", head.String())
	}
	tm := tokenLine.FindStringSubmatch(head.String())
	kept, _ := os.ReadFile(filepath.Join(data, "token"))
	if tm == nil || strings.TrimSpace(string(kept)) != tm[1] {
		t.Fatalf("printed token %v, kept %q", tm, kept)
	}
	if fi, err := os.Stat(filepath.Join(data, "token")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode: %v %v", fi, err)
	}
	// A client on this machine with the same home finds the token itself.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("hello"), 0o644)
	r := share(t, dir, []string{"HOME=" + home}, "put", "f")
	if r.code != 0 {
		t.Fatalf("put against the default server: %d %s", r.code, r.stderr)
	}
}

func TestPutGetLsRm(t *testing.T) {
	d := startServe(t, "")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.bin"), 3<<20+1, 1)
	os.MkdirAll(filepath.Join(dir, "tree", "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "tree", "x.txt"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(dir, "tree", "sub", "y.txt"), []byte("yy"), 0o600)
	os.Symlink("x.txt", filepath.Join(dir, "tree", "link"))

	r := share(t, dir, d.env(), "put", "a.bin", "tree")
	if r.code != 0 {
		t.Fatalf("put: %d %s", r.code, r.stderr)
	}
	ids := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(ids) != 2 || !strings.HasPrefix(ids[0], "bag") || !strings.HasPrefix(ids[1], "bag") {
		t.Fatalf("put stdout must be the IDs only, got %q", r.stdout)
	}
	if !strings.Contains(r.stderr, "skipping") || !strings.Contains(r.stderr, "link") {
		t.Fatalf("put did not warn about the symlink: %q", r.stderr)
	}

	r = share(t, dir, d.env(), "ls")
	if r.code != 0 || !strings.Contains(r.stdout, "a.bin") || !strings.Contains(r.stdout, "tree/") || !strings.Contains(r.stdout, "complete") {
		t.Fatalf("ls: %d %q %s", r.code, r.stdout, r.stderr)
	}
	r = share(t, dir, d.env(), "ls", "--json")
	if r.code != 0 || !strings.Contains(r.stdout, `"id": "`+ids[0]+`"`) {
		t.Fatalf("ls --json: %q", r.stdout)
	}

	out := t.TempDir()
	r = share(t, out, d.env(), "get", ids[0])
	if r.code != 0 || strings.TrimSpace(r.stdout) != "a.bin" {
		t.Fatalf("get: %d %q %s", r.code, r.stdout, r.stderr)
	}
	sameFiles(t, filepath.Join(dir, "a.bin"), filepath.Join(out, "a.bin"))
	r = share(t, out, d.env(), "get", ids[1], "-o", "copy")
	if r.code != 0 {
		t.Fatalf("get dir: %d %s", r.code, r.stderr)
	}
	sameFiles(t, filepath.Join(dir, "tree", "sub", "y.txt"), filepath.Join(out, "copy", "sub", "y.txt"))

	// Getting again refuses to overwrite; --force replaces.
	r = share(t, out, d.env(), "get", ids[0])
	if r.code != 1 || !strings.Contains(r.stderr, "already exists") {
		t.Fatalf("get over an existing file: %d %s", r.code, r.stderr)
	}
	if r = share(t, out, d.env(), "get", "--force", ids[0]); r.code != 0 {
		t.Fatalf("get --force: %d %s", r.code, r.stderr)
	}

	if r = share(t, dir, d.env(), "rm", ids[0]); r.code != 0 {
		t.Fatalf("rm: %d %s", r.code, r.stderr)
	}
	r = share(t, out, d.env(), "get", ids[0], "-o", "gone")
	if r.code != 1 || !strings.Contains(r.stderr, "no share") {
		t.Fatalf("get of a removed share: %d %s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(out, "gone")); !os.IsNotExist(err) {
		t.Fatal("failed get left its output")
	}
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Every user-facing error names the thing, says why in plain words, and
// what to do; exit codes are 1 for failures, 2 for usage.
func TestMessages(t *testing.T) {
	d := startServe(t, "")
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644)
	os.MkdirAll(filepath.Join(dir, "real", "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "real", "sub", "g"), []byte("gg"), 0o644)
	os.Symlink("real", filepath.Join(dir, "linkdir"))
	os.Symlink("nothere", filepath.Join(dir, "dangling"))
	os.MkdirAll(filepath.Join(dir, "onlylinks"), 0o755)
	os.Symlink("../f", filepath.Join(dir, "onlylinks", "l"))
	os.MkdirAll(filepath.Join(dir, "empty"), 0o755)
	os.WriteFile(filepath.Join(dir, "exists"), nil, 0o644)
	r := share(t, dir, d.env(), "put", "f")
	if r.code != 0 {
		t.Fatal(r.stderr)
	}
	id := strings.TrimSpace(r.stdout)
	absent := "bagaaihrazwenjbczufgr2i6zr7jn6xrmcmjkg4wzjljr6bbihe2aowg3rb3q" // a valid ID of nothing
	hostPort := strings.TrimPrefix(d.URL, "http://")
	_, port, _ := net.SplitHostPort(hostPort)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyAddr := busy.Addr().String()
	html := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<html>hello</html>")
	}))
	defer html.Close()
	tok := "SHARE_TOKEN=" + d.Token

	tests := []struct {
		name string
		env  []string
		args []string
		code int
		want []string // all in stderr
		not  []string // none in stderr
	}{
		// --server: what a user types is accepted, or the error says what to type.
		{"server without scheme", []string{"SHARE_SERVER=" + hostPort, tok}, []string{"ls"}, 0, nil, nil},
		{"server as a port", []string{tok}, []string{"ls", "--server", port}, 0, nil, nil},
		{"server as :port", []string{tok}, []string{"ls", "--server", ":" + port}, 0, nil, nil},
		{"bad server url", []string{"SHARE_SERVER=ftp://x", "SHARE_TOKEN=x"}, []string{"ls"}, 2, []string{`SHARE_SERVER "ftp://x": scheme "ftp"`, "want http://HOST:PORT"}, nil},
		{"server with a path", []string{tok}, []string{"ls", "--server", d.URL + "/v1/shares"}, 2, []string{"--server", "leave out the path"}, nil},
		{"no server", []string{"SHARE_SERVER=http://127.0.0.1:1", "SHARE_TOKEN=x"}, []string{"ls"}, 1, []string{"connection refused", "nothing answers at http://127.0.0.1:1", "share serve"}, nil},
		{"https to an http server", []string{tok}, []string{"ls", "--server", "https://" + hostPort}, 1, []string{"speaks plain HTTP: write http://"}, nil},
		{"not a share server", []string{"SHARE_TOKEN=x"}, []string{"ls", "--server", html.URL}, 1, []string{"is not share's API", "is " + html.URL + " a share server?"}, nil},
		{"data dir of no daemon", nil, []string{"ls", "--data", dir}, 1, []string{"--data " + dir + ": no share daemon runs with this data directory", "share serve --data " + dir}, nil},
		// Tokens.
		{"wrong token", []string{"SHARE_SERVER=" + d.URL, "SHARE_TOKEN=nope"}, []string{"put", "f"}, 1, []string{"unauthorized", "the token from SHARE_TOKEN is not this server's"}, nil},
		{"no token", []string{"SHARE_SERVER=" + d.URL, "SHARE_DATA=" + t.TempDir()}, []string{"ls"}, 1, []string{"no token was given", "SHARE_TOKEN", "--data DIR"}, nil},
		// IDs.
		{"truncated id", d.env(), []string{"get", "bagaaihra123"}, 2, []string{`invalid share ID "bagaaihra123": cut short, 12 of 61 characters`}, []string{"cid"}},
		{"mistyped id", d.env(), []string{"get", id[:20] + "1" + id[21:]}, 2, []string{"'1' at position 21 cannot be in a share ID"}, nil},
		{"not an id", d.env(), []string{"rm", "bafynotanid"}, 2, []string{"invalid share ID", "a share ID is \"bagaaihra\""}, []string{"cid"}},
		{"get of an absent share", d.env(), []string{"get", absent}, 1, []string{"no share " + absent + " on " + d.URL, "check the ID"}, []string{"resume"}},
		{"rm of an absent share", d.env(), []string{"rm", absent}, 1, []string{"no share " + absent + " on " + d.URL}, nil},
		// get's output.
		{"get -o a missing dir", d.env(), []string{"get", id, "-o", "missing/dir/"}, 1, []string{"-o missing/dir/: the directory missing/dir/ does not exist; create it first (mkdir -p missing/dir/)"}, []string{"resume"}},
		{"get over a file", d.env(), []string{"get", id, "-o", "exists"}, 1, []string{"already exists", "--force"}, []string{"resume"}},
		// put's input.
		{"put of a missing file", d.env(), []string{"put", "nope"}, 1, []string{"put nope: no such file or directory"}, []string{"stat"}},
		{"put of a dangling link", d.env(), []string{"put", "dangling"}, 1, []string{"put dangling: dangling -> nothere: a dangling symbolic link: nothere does not exist"}, nil},
		{"put of a dir of links", d.env(), []string{"put", "onlylinks"}, 1, []string{"skipping onlylinks/l: a symbolic link", "onlylinks: nothing to share", "share put onlylinks/LINK"}, nil},
		{"put of an empty dir", d.env(), []string{"put", "empty"}, 0, []string{"warning: empty holds no files; it is shared as an empty directory"}, nil},
		{"put of a linked dir", d.env(), []string{"put", "linkdir"}, 0, nil, []string{"skipping", "warning"}},
		// Flags.
		{"no args", d.env(), []string{"get"}, 2, []string{"get: missing the share ID (as 'share put' or 'share ls' printed it); usage: share get ID"}, nil},
		{"two ids", d.env(), []string{"get", id, id}, 2, []string{"get: 2 arguments, want the share ID", "run it once for each"}, nil},
		{"put nothing", d.env(), []string{"put"}, 2, []string{"put: missing a file or directory to upload; usage: share put PATH..."}, nil},
		{"ls with an argument", d.env(), []string{"ls", "x"}, 2, []string{`ls takes no arguments, got "x"`}, nil},
		{"serve without its TLS key file", nil, []string{"serve", "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--tls-cert", "nope.pem", "--tls-key", "nope.key"}, 1, []string{"--tls-cert nope.pem --tls-key nope.key: open nope.pem: no such file or directory"}, []string{"listening"}},
		{"bad flag", d.env(), []string{"put", "--bogus", "f"}, 2, []string{"unknown flag"}, nil},
		{"bad rate", d.env(), []string{"get", "--download-limit", "fast", "x"}, 2, []string{"rate"}, nil},
		// Daemons.
		{"serve --listen host without port", nil, []string{"serve", "--data", t.TempDir(), "--listen", "localhost"}, 2, []string{`--listen "localhost": want HOST:PORT, :PORT or PORT, e.g. --listen :7070`}, nil},
		{"serve --listen a URL", nil, []string{"serve", "--data", t.TempDir(), "--listen", "http://0.0.0.0:7070"}, 2, []string{"want an address, not a URL"}, nil},
		{"serve on a busy port", nil, []string{"serve", "--data", t.TempDir(), "--listen", busyAddr}, 1, []string{"--listen " + busyAddr + ": the address is in use", "choose another port: --listen 127.0.0.1:"}, nil},
		{"serve on a daemon's port", nil, []string{"serve", "--data", t.TempDir(), "--listen", hostPort}, 1, []string{"--listen " + hostPort + ": the address is in use"}, nil},
		{"serve in a data dir in use", nil, []string{"serve", "--data", d.Data, "--listen", "127.0.0.1:0"}, 1, []string{"data directory " + d.Data + ": in use by another share process (its API: " + d.URL + ")", "--data DIR"}, nil},
		{"peer --listen a port", nil, []string{"peer", "--data", t.TempDir(), "--listen", "7072"}, 2, []string{`--listen "7072": not a libp2p multiaddr`, "--listen /ip4/0.0.0.0/tcp/7072 --listen /ip4/0.0.0.0/udp/7072/quic-v1"}, nil},
		{"peer --api a port in use", nil, []string{"peer", "--data", t.TempDir(), "--listen", "/ip4/127.0.0.1/tcp/0", "--api", busyAddr}, 1, []string{"--api " + busyAddr + ": the address is in use", "--api 127.0.0.1:"}, []string{"peer started"}},
		{"peer --listen a port in use", nil, []string{"peer", "--data", t.TempDir(), "--listen", "/ip4/127.0.0.1/tcp/" + strings.TrimPrefix(busyAddr, "127.0.0.1:"), "--api", "127.0.0.1:0"}, 1, []string{"the port is in use", "--listen /ip4/0.0.0.0/tcp/"}, []string{"peer started"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := share(t, dir, tt.env, tt.args...)
			if r.code != tt.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", r.code, tt.code, r.stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr does not say %q:\n%s", w, r.stderr)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(r.stderr, n) {
					t.Errorf("stderr says %q:\n%s", n, r.stderr)
				}
			}
			if r.code != 0 && r.stdout != "" {
				t.Errorf("stdout on failure: %q", r.stdout)
			}
		})
	}
}

func TestTokenFromLocalDataDir(t *testing.T) {
	data := t.TempDir()
	d := startServe(t, data)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("hello"), 0o644)
	r := share(t, dir, []string{"SHARE_SERVER=" + d.URL, "SHARE_DATA=" + data}, "put", "f")
	if r.code != 0 {
		t.Fatalf("put without a token against a local server: %d %s", r.code, r.stderr)
	}
	// A restarted server keeps its token.
	d.stop(t)
	d2 := startServe(t, data)
	if d2.Token != d.Token {
		t.Fatalf("token changed across restarts: %q -> %q", d.Token, d2.Token)
	}
	if r := share(t, dir, d2.env(), "ls"); !strings.Contains(r.stdout, "complete") {
		t.Fatalf("share lost across restart: %q %s", r.stdout, r.stderr)
	}
}

func TestHealth(t *testing.T) {
	d := startServe(t, "")
	if r := share(t, t.TempDir(), []string{"SHARE_SERVER=" + d.URL}, "health"); r.code != 0 || r.stdout != "ok\n" {
		t.Fatalf("health: %d %q %s", r.code, r.stdout, r.stderr)
	}
	d.stop(t)
	if r := share(t, t.TempDir(), []string{"SHARE_SERVER=" + d.URL}, "health"); r.code != 1 {
		t.Fatalf("health of a stopped server: %d", r.code)
	}
}

// TestLargeFileKilledGetResumes is the acceptance test: a 1 GiB file put by
// one process and got by another is byte-identical; killing share get with
// SIGKILL halfway and running it again fetches only the chunks it did not
// have; server and client stay under 100 MiB of RSS.
func TestLargeFileKilledGetResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB transfer; skipped with -short")
	}
	const size = 1 << 30
	const chunks = size / (1 << 20)
	d := startServe(t, "")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "big.bin"), size, 42)
	r := share(t, dir, d.env(), "put", "big.bin")
	if r.code != 0 {
		t.Fatalf("put: %d %s", r.code, r.stderr)
	}
	id := strings.TrimSpace(r.stdout)

	out := t.TempDir()
	journal := filepath.Join(out, ".big.bin.share-partial", "have")
	// A slow get (capped), killed once it holds at least a third of the chunks.
	cmd := exec.Command(shareBin, "get", id, "--download-limit", "150MiB/s")
	cmd.Dir, cmd.Env = out, append(cleanEnv(out), d.env()...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		fi, err := os.Stat(journal)
		if err == nil && (fi.Size()-16)/8 >= chunks/3 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("get made no progress")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if _, err := os.Stat(filepath.Join(out, "big.bin")); !os.IsNotExist(err) {
		t.Fatal("killed get left an output file")
	}
	// What the journal says it had: its "have" records (8 bytes each after
	// the 8-byte magic, tag 1 in the first four; see transfer/journal.go).
	jb, err := os.ReadFile(journal)
	if err != nil {
		t.Fatal(err)
	}
	had := 0
	for off := 8; off+8 <= len(jb); off += 8 {
		if binary.BigEndian.Uint32(jb[off:]) == 1 {
			had++
		}
	}
	servedBefore := metric(t, d, "share_chunks_served_total")

	get := exec.Command(shareBin, "get", id)
	get.Dir, get.Env = out, append(cleanEnv(out), d.env()...)
	var stderr bytes.Buffer
	get.Stderr = &stderr
	if err := get.Run(); err != nil {
		t.Fatalf("resumed get: %v %s", err, stderr.String())
	}
	fetched := int(metric(t, d, "share_chunks_served_total") - servedBefore)
	if fetched != chunks-had {
		t.Fatalf("resumed get fetched %d chunks; had %d of %d, so want %d", fetched, had, chunks, chunks-had)
	}
	sameFiles(t, filepath.Join(dir, "big.bin"), filepath.Join(out, "big.bin"))
	t.Logf("killed after %d of %d chunks; resume fetched %d", had, chunks, fetched)

	clientRSS := get.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10
	d.stop(t)
	serverRSS := d.cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10
	t.Logf("peak RSS: server %d MiB, client %d MiB", serverRSS>>20, clientRSS>>20)
	// Linux starts a child's peak RSS from its parent's at the exec (Go
	// starts children with vfork, so the old memory is this test
	// process's): under the race detector this process alone is over the
	// limit, and the children's figures say nothing of theirs.
	var self syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	if self.Maxrss<<10 > 100<<20 {
		t.Logf("not checked: this test process's own peak RSS is %d MiB, which the kernel counts in each child's", self.Maxrss>>10)
		return
	}
	if serverRSS > 100<<20 || clientRSS > 100<<20 {
		t.Fatalf("peak RSS over 100 MiB: server %d MiB, client %d MiB", serverRSS>>20, clientRSS>>20)
	}
}

// serve stops gracefully on SIGTERM and on SIGINT and exits 0: a signal is
// how a daemon is asked to stop. Its api file and index entry go with it.
func TestSignalStopsServer(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		d := startServe(t, "")
		start := time.Now()
		d.cmd.Process.Signal(sig)
		<-d.done
		if !d.cmd.ProcessState.Success() {
			t.Fatalf("serve exited with %v on %v", d.cmd.ProcessState, sig)
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("idle server took long to stop")
		}
		if _, err := os.Stat(filepath.Join(d.Data, "api")); !os.IsNotExist(err) {
			t.Fatalf("api file left after a clean stop: %v", err)
		}
		if ents, _ := os.ReadDir(filepath.Join(d.Data, ".local", "state", "share", "daemons")); len(ents) != 0 {
			t.Fatalf("index entries left after a clean stop: %v", ents)
		}
	}
}

// A server stopped in the middle of a download and started again on the same
// address: the client backs off, retries, and finishes.
func TestGetSurvivesServerRestart(t *testing.T) {
	data := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	d := startServe(t, data, "--listen", addr, "--upload-limit", "20MiB/s")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f.bin"), 40<<20, 3)
	r := share(t, dir, d.env(), "put", "f.bin")
	if r.code != 0 {
		t.Fatal(r.stderr)
	}
	id := strings.TrimSpace(r.stdout)
	out := t.TempDir()
	get := exec.Command(shareBin, "get", id)
	get.Dir, get.Env = out, append(cleanEnv(out), d.env()...)
	var stderr bytes.Buffer
	get.Stderr = &stderr
	if err := get.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond) // about a third of the file
	d.stop(t)
	time.Sleep(500 * time.Millisecond)
	startServe(t, data, "--listen", addr)
	if err := get.Wait(); err != nil {
		t.Fatalf("get across a server restart: %v\n%s", err, stderr.String())
	}
	// It said what it waited for, and when it went on.
	if !strings.Contains(stderr.String(), "retrying until http://"+addr+" answers again") || !strings.Contains(stderr.String(), "answers again; going on") {
		t.Fatalf("get across a server restart said:\n%s", stderr.String())
	}
	sameFiles(t, filepath.Join(dir, "f.bin"), filepath.Join(out, "f.bin"))
}

// Ctrl-C (SIGINT) ends a client command with exit 130, SIGTERM with 143,
// saying it was interrupted and, for get and put, what is kept and that
// running the same command again resumes; it does.
func TestInterruptedTransfers(t *testing.T) {
	d := startServe(t, "", "--upload-limit", "8MiB/s", "--download-limit", "8MiB/s")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.bin"), 24<<20, 11)
	writeFile(t, filepath.Join(dir, "b.bin"), 24<<20, 12)
	r := share(t, dir, d.env(), "put", "--chunk-size", "256KiB", "a.bin")
	if r.code != 0 {
		t.Fatal(r.stderr)
	}
	id := strings.TrimSpace(r.stdout)

	// interrupt starts share with args in dir, waits until progress says
	// it has moved some bytes, sends sig and returns the result.
	out := t.TempDir()
	interrupt := func(sig syscall.Signal, progress func() bool, in string, args ...string) result {
		t.Helper()
		cmd := exec.Command(shareBin, args...)
		cmd.Dir, cmd.Env = in, append(cleanEnv(in), d.env()...)
		var stdout, stderr lockedWriter
		stdout.w, stderr.w = new(bytes.Buffer), new(bytes.Buffer)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		deadline := time.Now().Add(time.Minute)
		for !progress() {
			select {
			case <-done:
				t.Fatalf("%v ended before it was interrupted: %s", args, stderr.w)
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				<-done
				t.Fatalf("%v made no progress: %s", args, stderr.w)
			}
		}
		cmd.Process.Signal(sig)
		<-done
		return result{fmt.Sprint(stdout.w), fmt.Sprint(stderr.w), cmd.ProcessState.ExitCode()}
	}
	journal := filepath.Join(out, ".a.bin.share-partial", "have")
	journalSize := func() int64 {
		fi, err := os.Stat(journal)
		if err != nil {
			return 0
		}
		return fi.Size()
	}

	for _, tt := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGINT, 130}, {syscall.SIGTERM, 143}} {
		had := journalSize()
		r := interrupt(tt.sig, func() bool { return journalSize() > max(had, 64) }, out, "get", id)
		if r.code != tt.code || !strings.Contains(r.stderr, "get "+id+": interrupted; the ") ||
			!strings.Contains(r.stderr, " of 24 MiB fetched are kept: run the same command again to resume") || r.stdout != "" {
			t.Fatalf("get, %v: exit %d (want %d), stdout %q, stderr:\n%s", tt.sig, r.code, tt.code, r.stdout, r.stderr)
		}
	}
	if r := share(t, out, d.env(), "get", id); r.code != 0 {
		t.Fatalf("resumed get: %s", r.stderr)
	}
	sameFiles(t, filepath.Join(dir, "a.bin"), filepath.Join(out, "a.bin"))

	before := metric(t, d, "share_chunks_received_total")
	sending := func() bool { return metric(t, d, "share_chunks_received_total") > before }
	r = interrupt(syscall.SIGINT, sending, dir, "put", "--chunk-size", "256KiB", "b.bin")
	if r.code != 130 || !strings.Contains(r.stderr, "put b.bin: interrupted with ") ||
		!strings.Contains(r.stderr, " of 24 MiB confirmed by the server, which keeps what it received: run the same command again to send the rest") || r.stdout != "" {
		t.Fatalf("put, SIGINT: exit %d, stdout %q, stderr:\n%s", r.code, r.stdout, r.stderr)
	}
	// Chunks the client had written into the socket still arrive: wait
	// until the count stays put.
	received := metric(t, d, "share_chunks_received_total")
	for {
		time.Sleep(500 * time.Millisecond)
		now := metric(t, d, "share_chunks_received_total")
		if now == received {
			break
		}
		received = now
	}
	r = share(t, dir, d.env(), "put", "--chunk-size", "256KiB", "b.bin")
	if r.code != 0 {
		t.Fatalf("resumed put: %s", r.stderr)
	}
	if rerun, had := metric(t, d, "share_chunks_received_total")-received, received-before; rerun != 96-had || had == 0 {
		t.Fatalf("the rerun sent %v chunks, the server had %v of 96: it did not resume", rerun, had)
	}
}

// serve stops gracefully on SIGINT, like on SIGTERM (exit 0), letting a
// download in flight finish; a second signal ends it at once with 130.
func TestServeSecondSignal(t *testing.T) {
	d := startServe(t, "", "--upload-limit", "1MiB/s")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f.bin"), 8<<20, 5)
	r := share(t, dir, d.env(), "put", "--chunk-size", "1MiB", "f.bin") // 8 chunks in flight at 1 MiB/s: each takes seconds
	if r.code != 0 {
		t.Fatal(r.stderr)
	}
	get := exec.Command(shareBin, "get", strings.TrimSpace(r.stdout), "-o", filepath.Join(dir, "copy.bin"))
	get.Env = append(cleanEnv(dir), d.env()...)
	if err := get.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { get.Process.Kill(); get.Wait() }()
	deadline := time.Now().Add(time.Minute)
	sending := func() bool { v, _ := metricValue(t, d, `share_active_transfers{direction="send"}`); return v > 0 }
	for !sending() { // until a download is in flight
		if time.Now().After(deadline) {
			t.Fatal("the download did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-d.done:
		t.Fatalf("serve stopped at once with a download in flight: no grace; exit %v, stderr:\n%s", d.cmd.ProcessState, d.log)
	case <-time.After(500 * time.Millisecond):
	}
	start := time.Now()
	d.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
		t.Fatal("a second SIGINT did not stop serve")
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 130 || !strings.Contains(d.log.String(), "SIGINT again: stopping now") {
		t.Fatalf("exit %d after %v, want 130; stderr:\n%s", code, time.Since(start), d.log)
	}
}

// put and get wait for a server that is not (yet, or any more) there, at
// any request, the first included, under the one retry policy: a server
// stopped and started again on the same address is found again, and the
// user is told what is being waited for.
func TestTransfersSurviveServerRestart(t *testing.T) {
	data := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	url := "http://" + addr
	d := startServe(t, data, "--listen", addr)
	env := []string{"SHARE_SERVER=" + url, "SHARE_TOKEN=" + d.Token}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "first.bin"), 2<<20, 21)
	writeFile(t, filepath.Join(dir, "big.bin"), 40<<20, 22)

	// run starts share with args; wait waits for it, said reports whether
	// its stderr says s yet.
	run := func(in string, args ...string) (wait func() result, said func(s string) bool) {
		cmd := exec.Command(shareBin, args...)
		cmd.Dir, cmd.Env = in, append(cleanEnv(in), env...)
		stdout, stderr := &lockedWriter{w: new(bytes.Buffer)}, &lockedWriter{w: new(bytes.Buffer)}
		cmd.Stdout, cmd.Stderr = stdout, stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return func() result {
				cmd.Wait()
				return result{fmt.Sprint(stdout.w), fmt.Sprint(stderr.w), cmd.ProcessState.ExitCode()}
			}, func(s string) bool {
				stderr.mu.Lock()
				defer stderr.mu.Unlock()
				return strings.Contains(fmt.Sprint(stderr.w), s)
			}
	}

	// The first request: the server is down when put and get start.
	r := share(t, dir, env, "put", "first.bin")
	if r.code != 0 {
		t.Fatal(r.stderr)
	}
	firstID := strings.TrimSpace(r.stdout)
	d.stop(t)
	put, putSaid := run(dir, "put", "big.bin")
	out := t.TempDir()
	get, getSaid := run(out, "get", firstID)
	deadline := time.Now().Add(time.Minute)
	for !putSaid("retrying until") || !getSaid("retrying until") { // both tried and wait
		if time.Now().After(deadline) {
			t.Fatal("put and get did not say they wait for the server")
		}
		time.Sleep(50 * time.Millisecond)
	}
	d = startServe(t, data, "--listen", addr, "--download-limit", "20MiB/s")
	r = put()
	if r.code != 0 || !strings.Contains(r.stderr, "put big.bin: POST ") || !strings.Contains(r.stderr, "retrying until "+url+" answers again") {
		t.Fatalf("put started while the server was down: %d\n%s", r.code, r.stderr)
	}
	bigID := strings.TrimSpace(r.stdout)
	if r := get(); r.code != 0 || !strings.Contains(r.stderr, "retrying until") {
		t.Fatalf("get started while the server was down: %d\n%s", r.code, r.stderr)
	}
	sameFiles(t, filepath.Join(dir, "first.bin"), filepath.Join(out, "first.bin"))

	// In the middle of the chunk uploads (the server receives 20 MiB/s).
	share(t, dir, env, "rm", bigID)
	put, _ = run(dir, "put", "big.bin")
	time.Sleep(700 * time.Millisecond)
	d.stop(t)
	time.Sleep(500 * time.Millisecond)
	startServe(t, data, "--listen", addr)
	if r := put(); r.code != 0 || strings.TrimSpace(r.stdout) != bigID || !strings.Contains(r.stderr, "retrying until "+url) || !strings.Contains(r.stderr, "put big.bin: "+url+" answers again; going on") {
		t.Fatalf("put across a server restart: %d %q\n%s", r.code, r.stdout, r.stderr)
	}
	if r := share(t, out, env, "get", bigID); r.code != 0 {
		t.Fatal(r.stderr)
	}
	sameFiles(t, filepath.Join(dir, "big.bin"), filepath.Join(out, "big.bin"))

	// Nobody ever answers: the stall timeout ends it, saying why.
	r = share(t, dir, []string{"SHARE_SERVER=http://127.0.0.1:1", "SHARE_TOKEN=x"}, "put", "--stall-timeout", "1s", "first.bin")
	if r.code != 1 || !strings.Contains(r.stderr, "POST manifest: gave up after 1s without progress (the stall timeout): ") || !strings.Contains(r.stderr, "connection refused") {
		t.Fatalf("put to nobody: %d\n%s", r.code, r.stderr)
	}
}
