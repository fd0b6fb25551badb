//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// cluster is one docker-compose project.
type cluster struct {
	t       *testing.T
	compose []string // the compose command: docker compose, or docker-compose
	project string
	file    string
	files   string // the host folder mounted at /files
	env     []string
}

// commandTimeout bounds every docker command.
const commandTimeout = 3 * time.Minute

func newCluster(t *testing.T, env ...string) *cluster {
	t.Helper()
	if err := exec.Command("docker", "info").Run(); err != nil {
		t.Skip("no Docker engine answers (docker info failed); skipping the multi-host tests")
	}
	var compose []string
	if exec.Command("docker", "compose", "version").Run() == nil {
		compose = []string{"docker", "compose"}
	} else if exec.Command("docker-compose", "version").Run() == nil {
		compose = []string{"docker-compose"}
	} else {
		t.Skip("neither `docker compose` nor docker-compose is installed")
	}
	image := os.Getenv("SHARE_IMAGE")
	if image == "" {
		image = "share:latest"
	}
	if err := exec.Command("docker", "image", "inspect", image).Run(); err != nil {
		t.Fatalf("image %s not found: build it with `make image` (make e2e does)", image)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	files := t.TempDir()
	os.Chmod(files, 0o777) // the containers run as uid 10001
	project := fmt.Sprintf("share-e2e-%04x", rand.IntN(1<<16))
	c := &cluster{
		t: t, compose: compose, project: project, files: files,
		file: filepath.Join(wd, "..", "..", "..", "..", "docker-compose.yml"),
		env: append(os.Environ(), "SHARE_IMAGE="+image, "SHARE_FILES="+files, "SHARE_NETWORK_PREFIX="+project,
			"SERVER_PORT=127.0.0.1:0", "SHARE_TOKEN=e2e-"+project),
	}
	// The p2p-nat networks have fixed subnets, which Docker refuses to
	// overlap: each run takes its own.
	r := 200 + rand.IntN(50)
	c.env = append(c.env, fmt.Sprintf("SHARE_NAT_INTERNET=192.0.0.%d/26", 64*(1+rand.IntN(3))),
		fmt.Sprintf("SHARE_NAT_HOME_A=10.%d.1.0/24", r), fmt.Sprintf("SHARE_NAT_ROUTER_A=10.%d.1.254", r),
		fmt.Sprintf("SHARE_NAT_HOME_B=10.%d.2.0/24", r), fmt.Sprintf("SHARE_NAT_ROUTER_B=10.%d.2.254", r))
	c.env = append(c.env, env...)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := c.run("logs", "--tail", "40")
			t.Logf("logs:\n%s", out)
		}
		c.run(append(allProfiles, "down", "-v", "--remove-orphans", "-t", "5")...)
	})
	return c
}

// run runs a compose command and returns its combined output.
func (c *cluster) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	return c.runCtx(ctx, args...)
}

func (c *cluster) runCtx(ctx context.Context, args ...string) (string, error) {
	full := append(append(c.compose[1:], "-p", c.project, "-f", c.file), args...)
	cmd := exec.CommandContext(ctx, c.compose[0], full...)
	cmd.Env = c.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %v\n%s", strings.Join(c.compose, " "), strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(stdout.String()), nil
}

func (c *cluster) must(args ...string) string {
	c.t.Helper()
	out, err := c.run(args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// allProfiles activates every profile: Compose v2 checks the dependencies of
// a service (the newcomer's on boot) even for ps.
var allProfiles = []string{"--profile", "server", "--profile", "p2p", "--profile", "newcomer", "--profile", "p2p-nat"}

// container returns the container ID of a service.
func (c *cluster) container(service string) string {
	c.t.Helper()
	id := c.must(append(allProfiles, "ps", "-q", service)...)
	if id == "" {
		c.t.Fatalf("no container for %s", service)
	}
	return strings.Fields(id)[0]
}

// waitHealthy waits until the services' containers report healthy.
func (c *cluster) waitHealthy(services ...string) {
	c.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for _, s := range services {
		id := c.container(s)
		for {
			out, _ := exec.Command("docker", "inspect", "-f", "{{.State.Health.Status}}", id).Output()
			if strings.TrimSpace(string(out)) == "healthy" {
				break
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("%s is not healthy: %s", s, out)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
}

// writeFile writes n random bytes to the shared folder.
func (c *cluster) writeFile(name string, n int64) {
	c.t.Helper()
	f, err := os.Create(filepath.Join(c.files, name))
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	var seed [32]byte
	seed[0] = byte(rand.Uint32())
	if _, err := io.CopyN(f, rand.NewChaCha8(seed), n); err != nil {
		c.t.Fatal(err)
	}
	os.Chmod(f.Name(), 0o644)
}

func (c *cluster) sum(name string) [32]byte {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(c.files, name))
	if err != nil {
		c.t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func (c *cluster) same(a, b string) {
	c.t.Helper()
	if c.sum(a) != c.sum(b) {
		c.t.Fatalf("%s and %s differ", a, b)
	}
}

// TestServerProfile: a file put from one client container is got
// byte-identical by others; the server is stopped in the middle of a
// download and started again, and the download resumes and finishes.
func TestServerProfile(t *testing.T) {
	c := newCluster(t)
	c.must("--profile", "server", "up", "-d", "server")
	c.waitHealthy("server")
	c.writeFile("big.bin", 40<<20)
	id := c.must("--profile", "server", "run", "--rm", "-T", "client", "put", "big.bin")
	if !strings.HasPrefix(id, "bag") {
		t.Fatalf("put printed %q", id)
	}
	var wg sync.WaitGroup
	for k := range 3 {
		wg.Go(func() {
			if _, err := c.run("--profile", "server", "run", "--rm", "-T", "client", "get", id, "-o", fmt.Sprintf("copy%d.bin", k)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for k := range 3 {
		c.same("big.bin", fmt.Sprintf("copy%d.bin", k))
	}

	// A slow download (capped at 4 MiB/s: 10 s), during which the server
	// container is stopped for 3 s.
	done := make(chan error, 1)
	go func() {
		_, err := c.run("--profile", "server", "run", "--rm", "-T", "client", "get", id, "-o", "resumed.bin", "--download-limit", "4MiB/s")
		done <- err
	}()
	journal := filepath.Join(c.files, ".resumed.bin.share-partial", "have")
	deadline := time.Now().Add(time.Minute)
	for {
		if fi, err := os.Stat(journal); err == nil && fi.Size() > 8+8*8 {
			break // some chunks are in
		}
		if time.Now().After(deadline) {
			t.Fatal("the slow download made no progress")
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.must("--profile", "server", "stop", "-t", "5", "server")
	time.Sleep(3 * time.Second)
	c.must("--profile", "server", "start", "server")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("download across a server restart: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the download did not finish after the server came back")
	}
	c.same("big.bin", "resumed.bin")
}

// exec runs share in a service's container.
func (c *cluster) exec(ctx context.Context, service string, args ...string) (string, error) {
	return c.runCtx(ctx, append(append(allProfiles, "exec", "-T", service, "share"), args...)...)
}

// TestP2PProfile: a file added on one peer is got by the others through the
// DHT across container addresses; the first holder is stopped after the
// others have it, and a new peer still gets it; a peer is cut off the
// network in the middle of a swarm download, and the others still finish.
func TestP2PProfile(t *testing.T) {
	c := newCluster(t, "PEER_UPLOAD_LIMIT=8MiB/s")
	c.must("--profile", "p2p", "up", "-d")
	peers := []string{"boot", "peer1", "peer2", "peer3", "peer4", "peer5"}
	c.waitHealthy(peers...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	c.writeFile("a.bin", 24<<20)
	id, err := c.exec(ctx, "peer1", "put", "/files/a.bin")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, p := range peers[2:] {
		wg.Go(func() {
			if _, err := c.exec(ctx, p, "get", id, "-o", "/files/a-"+p+".bin"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for _, p := range peers[2:] {
		c.same("a.bin", "a-"+p+".bin")
	}
	// They found each other over the container network, not loopback.
	st, err := c.exec(ctx, "peer3", "status")
	if err != nil || !strings.Contains(st, "/ip4/") || strings.Contains(st, "0 connected") {
		t.Fatalf("status of peer3: %v\n%s", err, st)
	}

	// The first holder leaves; a newcomer still gets the file.
	c.must("--profile", "p2p", "stop", "-t", "5", "peer1")
	c.must("--profile", "p2p", "--profile", "newcomer", "up", "-d", "newcomer")
	c.waitHealthy("newcomer")
	if _, err := c.exec(ctx, "newcomer", "get", id, "-o", "/files/a-newcomer.bin"); err != nil {
		t.Fatalf("newcomer, with the first holder gone: %v", err)
	}
	c.same("a.bin", "a-newcomer.bin")

	// A swarm download from peer2, during which peer4 is cut off the network.
	c.writeFile("b.bin", 48<<20)
	id2, err := c.exec(ctx, "peer2", "put", "/files/b.bin")
	if err != nil {
		t.Fatal(err)
	}
	getters := []string{"peer3", "peer4", "peer5", "newcomer"}
	errs := make(map[string]chan error)
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	for _, p := range getters {
		errs[p] = make(chan error, 1)
		go func() {
			_, err := c.exec(pctx, p, "get", id2, "-o", "/files/b-"+p+".bin", "--stall-timeout", "2m")
			errs[p] <- err
		}()
	}
	time.Sleep(2 * time.Second)
	network := c.project + "-p2p" // SHARE_NETWORK_PREFIX is the project name
	if out, err := exec.Command("docker", "network", "disconnect", network, c.container("peer4")).CombinedOutput(); err != nil {
		t.Fatalf("disconnect peer4: %v %s", err, out)
	}
	for _, p := range []string{"peer3", "peer5", "newcomer"} {
		select {
		case err := <-errs[p]:
			if err != nil {
				t.Fatalf("%s, with peer4 cut off: %v", p, err)
			}
			c.same("b.bin", "b-"+p+".bin")
		case <-time.After(3 * time.Minute):
			t.Fatalf("%s did not finish with peer4 cut off", p)
		}
	}
	// Plugged back in, peer4 finishes too.
	if out, err := exec.Command("docker", "network", "connect", network, c.container("peer4")).CombinedOutput(); err != nil {
		t.Fatalf("reconnect peer4: %v %s", err, out)
	}
	select {
	case err := <-errs["peer4"]:
		if err != nil {
			t.Fatalf("peer4 after reconnecting: %v", err)
		}
		c.same("b.bin", "b-peer4.bin")
	case <-time.After(3 * time.Minute):
		t.Fatal("peer4 did not finish after it was reconnected")
	}
}

// TestP2PNATProfile: two homes, each a peer behind its own NAT router
// container, and a relay on an "internet" network. A file added in home A
// is fetched byte-identical in home B, over a connection hole-punched
// through both NATs.
func TestP2PNATProfile(t *testing.T) {
	c := newCluster(t)
	c.must("--profile", "p2p-nat", "up", "-d")
	c.waitHealthy("relay", "home-a", "home-b")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	type status struct {
		Peers []struct {
			ID, Addr string
			Relayed  bool
		}
		PeerID string `json:"peer_id"`
		NAT    struct {
			Reachability string
			RelayAddrs   []string                       `json:"relay_addrs"`
			HolePunches  struct{ Tried, Succeeded int } `json:"hole_punches"`
			BytesDirect  int64                          `json:"bytes_direct"`
		}
	}
	statusOf := func(service string) status {
		out, err := c.exec(ctx, service, "status", "--json")
		if err != nil {
			t.Fatal(err)
		}
		var st status
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("%s status: %v\n%s", service, err, out)
		}
		return st
	}
	// AutoNAT finds each home behind its NAT; each reserves a relay slot.
	for _, h := range []string{"home-a", "home-b"} {
		deadline := time.Now().Add(2 * time.Minute)
		for {
			st := statusOf(h)
			if st.NAT.Reachability == "private" && len(st.NAT.RelayAddrs) > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not behind a NAT with a relay slot after 2 minutes: %+v", h, st.NAT)
			}
			time.Sleep(time.Second)
		}
	}
	c.writeFile("home.bin", 16<<20)
	id, err := c.exec(ctx, "home-a", "put", "/files/home.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.exec(ctx, "home-b", "get", id, "-o", "/files/home-b.bin"); err != nil {
		t.Fatal(err)
	}
	c.same("home.bin", "home-b.bin")
	a, b := statusOf("home-a"), statusOf("home-b")
	for _, p := range b.Peers {
		if p.ID == a.PeerID && p.Relayed {
			t.Fatalf("home B reaches home A only through the relay: %+v", p)
		}
	}
	if b.NAT.BytesDirect < 16<<20 || a.NAT.HolePunches.Succeeded+b.NAT.HolePunches.Succeeded == 0 {
		t.Fatalf("not hole punched: A %+v, B %+v", a.NAT, b.NAT)
	}
	t.Logf("home B: %d bytes direct; hole punches A %+v, B %+v", b.NAT.BytesDirect, a.NAT.HolePunches, b.NAT.HolePunches)
}
