package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sharefiles/share/node"
)

// peerProc is a share peer process.
type peerProc struct {
	ID    string
	Addrs []string // full multiaddrs
	API   string
	Token string
	Data  string
	Pprof string // the profiles' index, with --pprof
	cmd   *exec.Cmd
	done  chan struct{}
	log   *lockedWriter
}

// startPeer runs `share peer` on loopback with free ports.
func startPeer(t testing.TB, data string, args ...string) *peerProc {
	t.Helper()
	return startPeerIn(t, "", data, args...)
}

// startPeerIn runs `share peer` with HOME=home (default: its data
// directory), so that clients with the same HOME share its index of daemons.
func startPeerIn(t testing.TB, home, data string, args ...string) *peerProc {
	t.Helper()
	if data == "" {
		data = t.TempDir()
	}
	if home == "" {
		home = data
	}
	listen := []string{"--listen", "/ip4/127.0.0.1/tcp/0", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1"}
	if slices.Contains(args, "--swarm-key") {
		listen = listen[:2] // a private swarm is TCP only
	}
	cmd := exec.Command(shareBin, append(append([]string{"peer", "--data", data, "--api", "127.0.0.1:0"}, listen...), args...)...)
	cmd.Env = cleanEnv(home)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &peerProc{Data: data, cmd: cmd, done: make(chan struct{}), log: &lockedWriter{w: new(bytes.Buffer)}}
	cmd.Stderr = p.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop(t) })
	timer := time.AfterFunc(30*time.Second, func() { cmd.Process.Kill() })
	defer timer.Stop()
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "share peer "):
			p.ID = strings.TrimPrefix(line, "share peer ")
		case strings.HasPrefix(line, "/"):
			p.Addrs = append(p.Addrs, line)
		case strings.HasPrefix(line, "api:"):
			p.API = strings.TrimSpace(strings.TrimPrefix(line, "api:"))
		case strings.HasPrefix(line, "token:"):
			p.Token = strings.TrimSpace(strings.TrimPrefix(line, "token:"))
		case strings.HasPrefix(line, "pprof:"):
			p.Pprof = strings.TrimSpace(strings.TrimPrefix(line, "pprof:"))
		}
		if p.Token != "" {
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	if p.ID == "" || len(p.Addrs) == 0 || p.API == "" || p.Token == "" {
		t.Fatalf("peer printed id %q addrs %v api %q; stderr:\n%s", p.ID, p.Addrs, p.API, p.log.w)
	}
	for _, a := range p.Addrs {
		if !strings.HasSuffix(a, "/p2p/"+p.ID) {
			t.Fatalf("address %q does not end in /p2p/%s", a, p.ID)
		}
	}
	return p
}

func (p *peerProc) stop(t testing.TB) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		t.Errorf("share peer did not stop on SIGTERM")
	}
}

func (p *peerProc) env() []string {
	return []string{"SHARE_SERVER=" + p.API, "SHARE_TOKEN=" + p.Token}
}

func (p *peerProc) status(t testing.TB) node.Status {
	t.Helper()
	r := share(t, t.TempDir(), p.env(), "status", "--json")
	if r.code != 0 {
		t.Fatalf("status: %s", r.stderr)
	}
	var st node.Status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestFivePeers is issue 3's acceptance test: five share peer processes on
// loopback, each bootstrapped off the first; a 256 MiB file added on the
// second is fetched byte-identical by the other three with share get, found
// through the DHT.
func TestFivePeers(t *testing.T) {
	size := int64(256 << 20)
	if testing.Short() {
		size = 8 << 20
	}
	first := startPeer(t, "")
	peers := []*peerProc{first}
	for range 4 {
		peers = append(peers, startPeer(t, "", "--bootstrap", first.Addrs[0]))
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "big.bin"), size, 7)
	r := share(t, dir, peers[1].env(), "put", "big.bin")
	if r.code != 0 {
		t.Fatalf("put on the second peer: %s", r.stderr)
	}
	id := strings.TrimSpace(r.stdout)

	// A read never starts a fetch: the manifest of a share a peer does not
	// hold is a 404, and the peer still holds nothing (share get asks with
	// POST /v1/shares/ID/fetch).
	req, _ := http.NewRequest("GET", peers[2].API+"/v1/shares/"+id+"/manifest", nil)
	req.Header.Set("Authorization", "Bearer "+peers[2].Token)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET manifest of a share not held: %v %v", err, resp.Status)
	} else {
		resp.Body.Close()
	}
	if st := peers[2].status(t); len(st.Shares) != 0 {
		t.Fatalf("a GET made the peer fetch: %+v", st.Shares)
	}

	var wg sync.WaitGroup
	for k, p := range peers[2:] {
		wg.Go(func() {
			out := t.TempDir()
			r := share(t, out, p.env(), "get", id)
			if r.code != 0 {
				t.Errorf("get on peer %d: %s\n%s", k+3, r.stderr, p.log.w)
				return
			}
			sameFiles(t, filepath.Join(dir, "big.bin"), filepath.Join(out, "big.bin"))
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	// Each getter found providers through the DHT (it was only told about
	// the first peer, which never had the file), and the second peer served.
	for k, p := range peers[2:] {
		st := p.status(t)
		if len(st.Shares) != 1 || !st.Shares[0].Complete || st.Shares[0].Providers < 1 {
			t.Errorf("peer %d status: %+v", k+3, st.Shares)
		}
	}
	if st := first.status(t); len(st.Shares) != 0 {
		t.Errorf("the bootstrap peer holds shares: %+v", st.Shares)
	}
	if st := peers[1].status(t); st.Shares[0].BytesUp == 0 {
		t.Errorf("the second peer sent nothing: %+v", st.Shares)
	}
}

// A peer keeps its ID across restarts: the key is in the data directory.
func TestPeerKeepsIdentity(t *testing.T) {
	data := t.TempDir()
	p := startPeer(t, data)
	p.stop(t)
	if fi, err := os.Stat(filepath.Join(data, "identity.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity key: %v %v", fi, err)
	}
	p2 := startPeer(t, data)
	if p2.ID != p.ID {
		t.Fatalf("peer ID changed: %s -> %s", p.ID, p2.ID)
	}
}

func TestPeerAPIRefusesForeignHost(t *testing.T) {
	p := startPeer(t, "")
	r := share(t, t.TempDir(), []string{"SHARE_SERVER=" + strings.Replace(p.API, "127.0.0.1", "localhost", 1), "SHARE_TOKEN=" + p.Token}, "ls")
	if r.code != 0 {
		t.Fatalf("ls via localhost: %s", r.stderr)
	}
	req := exec.Command("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: evil.example", "-H", "Authorization: Bearer "+p.Token, p.API+"/v1/shares")
	out, err := req.Output()
	if err != nil {
		t.Skipf("curl: %v", err)
	}
	if string(out) != "403" {
		t.Fatalf("rebound Host got %s, want 403", out)
	}
}

func TestBootstrapFile(t *testing.T) {
	dir := t.TempDir()
	addrs := filepath.Join(dir, "shared", "boot.addrs")
	first := startPeer(t, "", "--addrs-file", addrs)
	b, err := os.ReadFile(addrs)
	if err != nil || !strings.Contains(string(b), "/p2p/"+first.ID) {
		t.Fatalf("addrs file: %q %v", b, err)
	}
	second := startPeer(t, "", "--bootstrap-file", addrs)
	deadline := time.Now().Add(10 * time.Second)
	for second.status(t).RoutingTable == 0 {
		if time.Now().After(deadline) {
			t.Fatal("joined nobody through the bootstrap file")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGetThroughLocalPeer: share get against a peer on this machine makes
// its output from the peer's verified copy: a hard link on the same file
// system (said on stderr), a copy on another (tmpfs); both byte-identical.
func TestGetThroughLocalPeer(t *testing.T) {
	first := startPeer(t, "")
	second := startPeer(t, "", "--bootstrap", first.Addrs[0])
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f.bin"), 5<<20+3, 11)
	r := share(t, dir, first.env(), "put", "f.bin")
	if r.code != 0 {
		t.Fatalf("put: %s", r.stderr)
	}
	id := strings.TrimSpace(r.stdout)
	out := t.TempDir()
	r = share(t, out, second.env(), "get", id, "-o", "copy.bin")
	if r.code != 0 {
		t.Fatalf("get: %s\n%s", r.stderr, second.log.w)
	}
	sameFiles(t, filepath.Join(dir, "f.bin"), filepath.Join(out, "copy.bin"))
	if !strings.Contains(r.stderr, "hard link") || !strings.Contains(r.stderr, "edit a copy, not in place") {
		t.Fatalf("stderr does not say how the output was made: %q", r.stderr)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(out, "copy.bin"), &st); err != nil || st.Nlink != 2 {
		t.Fatalf("output: %v, %d links; want the peer's file", err, st.Nlink)
	}
	if shm, err := os.MkdirTemp("/dev/shm", "share-test-"); err == nil {
		defer os.RemoveAll(shm)
		r = share(t, shm, second.env(), "get", id, "-o", "copy.bin")
		if r.code != 0 || !strings.Contains(r.stderr, "copy") {
			t.Fatalf("get to tmpfs: %d %s", r.code, r.stderr)
		}
		sameFiles(t, filepath.Join(dir, "f.bin"), filepath.Join(shm, "copy.bin"))
	}
}

// Several daemons of one user on one machine: a client finds each one's URL
// and token from its data directory (--data, SHARE_DATA) or, given only
// --server, from the per-user index of daemons; a daemon that stopped
// cleanly leaves nothing behind, and one that was killed is named as such.
func TestLocalDaemons(t *testing.T) {
	home := t.TempDir()
	data := func(name string) string { return filepath.Join(home, name) }
	p1 := startPeerIn(t, home, data("p1"), "--fetch-timeout", "1s")
	p2 := startPeerIn(t, home, data("p2"), "--bootstrap", p1.Addrs[0])
	p3 := startPeerIn(t, home, data("p3"), "--bootstrap", p1.Addrs[0])
	srv := startServeIn(t, home, data("srv"))
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f.bin"), 3<<20, 9)
	env := []string{"HOME=" + home} // the same user: no token, no URL given

	r := share(t, dir, env, "put", "f.bin", "--data", data("p1"))
	if r.code != 0 {
		t.Fatalf("put --data p1: %s", r.stderr)
	}
	id := strings.TrimSpace(r.stdout)
	out := t.TempDir()
	if r := share(t, out, append(env, "SHARE_DATA="+data("p3")), "get", id); r.code != 0 {
		t.Fatalf("get with SHARE_DATA=p3: %s", r.stderr)
	}
	sameFiles(t, filepath.Join(dir, "f.bin"), filepath.Join(out, "f.bin"))
	for _, server := range []string{p2.API, strings.TrimPrefix(p2.API, "http://"), strings.Replace(p2.API, "127.0.0.1", "localhost", 1)} {
		if r := share(t, dir, env, "status", "--server", server); r.code != 0 || !strings.Contains(r.stdout, "peer:") {
			t.Fatalf("status --server %s alone: %d %s", server, r.code, r.stderr)
		}
	}
	if r := share(t, dir, env, "ls", "--server", srv.URL); r.code != 0 {
		t.Fatalf("ls --server of a local serve alone: %s", r.stderr)
	}
	// A share nobody has: the peer's reason, not a bare "not found".
	absent := "bagaaihrazwenjbczufgr2i6zr7jn6xrmcmjkg4wzjljr6bbihe2aowg3rb3q"
	if r := share(t, dir, env, "get", absent, "--data", data("p1")); r.code != 1 ||
		!strings.Contains(r.stderr, "no share "+absent+" on "+p1.API+": no peer provides "+absent+": ") ||
		!strings.Contains(r.stderr, "DHT lookup") || !strings.Contains(r.stderr, "peers connected") || strings.Contains(r.stderr, "resume") {
		t.Fatalf("get of a share nobody has: %d %s", r.code, r.stderr)
	}
	// A token given explicitly wins, and a wrong one is named as such.
	if r := share(t, dir, append(env, "SHARE_TOKEN=nope"), "ls", "--data", data("p2")); r.code != 1 || !strings.Contains(r.stderr, "SHARE_TOKEN is not this server's") {
		t.Fatalf("wrong SHARE_TOKEN with --data: %d %s", r.code, r.stderr)
	}
	// Another user's index is not this user's: with another HOME, no token.
	if r := share(t, dir, []string{"HOME=" + t.TempDir()}, "ls", "--server", p2.API); r.code != 1 || !strings.Contains(r.stderr, "no token was given") {
		t.Fatalf("ls from another home: %d %s", r.code, r.stderr)
	}

	// A clean stop removes the api file and the index entry.
	p2.stop(t)
	if r := share(t, dir, env, "ls", "--data", data("p2")); r.code != 1 || !strings.Contains(r.stderr, "no share daemon runs with this data directory") {
		t.Fatalf("ls --data of a stopped peer: %d %s", r.code, r.stderr)
	}
	// A killed daemon leaves its api file: the client says what happened.
	p3.cmd.Process.Kill()
	<-p3.done
	if r := share(t, dir, env, "ls", "--data", data("p3")); r.code != 1 || !strings.Contains(r.stderr, "the daemon of "+data("p3")+" is not running") {
		t.Fatalf("ls --data of a killed peer: %d %s", r.code, r.stderr)
	}
	// ...and a new daemon of that directory replaces it.
	p3 = startPeerIn(t, home, data("p3"), "--bootstrap", p1.Addrs[0])
	if r := share(t, dir, env, "ls", "--data", data("p3")); r.code != 0 || !strings.Contains(r.stdout, id) {
		t.Fatalf("ls --data of a restarted peer: %d %s", r.code, r.stderr)
	}
}
