package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// netns is a private network of network namespaces: one holding a bridge,
// one per host, each host with a veth on the bridge and an address in
// 10.77.0.0/24. Nothing touches the machine's own interfaces.
type netns struct {
	t      testing.TB
	prefix string
	hosts  []string
}

func newNetns(t testing.TB, hosts int) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root; skipping the private-network test")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip(8) (iproute2); skipping the private-network test")
	}
	n := &netns{t: t, prefix: fmt.Sprintf("sh%04x", rand.IntN(1<<16))}
	t.Cleanup(n.destroy)
	br := n.prefix + "br"
	n.ip("netns", "add", br)
	n.ip("-n", br, "link", "add", "br0", "type", "bridge")
	n.ip("-n", br, "link", "set", "br0", "up")
	for k := 1; k <= hosts; k++ {
		h := fmt.Sprintf("%sh%d", n.prefix, k)
		n.ip("netns", "add", h)
		n.hosts = append(n.hosts, h)
		n.ip("link", "add", fmt.Sprintf("%sv%d", n.prefix, k), "netns", br, "type", "veth", "peer", "name", "eth0", "netns", h)
		n.ip("-n", br, "link", "set", fmt.Sprintf("%sv%d", n.prefix, k), "master", "br0", "up")
		n.ip("-n", h, "addr", "add", fmt.Sprintf("10.77.0.%d/24", k), "dev", "eth0")
		n.ip("-n", h, "link", "set", "eth0", "up")
		n.ip("-n", h, "link", "set", "lo", "up")
	}
	return n
}

func (n *netns) ip(args ...string) {
	n.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		n.t.Skipf("ip %s: %v %s (no network namespace support?)", strings.Join(args, " "), err, out)
	}
}

func (n *netns) destroy() {
	for _, h := range append(n.hosts, n.prefix+"br") {
		exec.Command("ip", "netns", "del", h).Run()
	}
}

// command returns cmd to run share inside host k's namespace.
func (n *netns) command(ctx context.Context, k int, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.hosts[k], shareBin}, args...)...)
}

// TestPeersOnPrivateNetwork runs peers on a private 10.x network, with the
// default listen addresses (0.0.0.0), as containers do: the DHT must work
// across those addresses, not only on loopback.
func TestPeersOnPrivateNetwork(t *testing.T) {
	const hosts = 3
	n := newNetns(t, hosts)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	type proc struct {
		cmd   *exec.Cmd
		addrs []string
		token string
		data  string
	}
	var procs []*proc
	for k := range hosts {
		p := &proc{data: t.TempDir()}
		args := []string{"peer", "--data", p.data}
		if k > 0 {
			// Bootstrap through the first peer's private address.
			var boot string
			for _, a := range procs[0].addrs {
				if strings.HasPrefix(a, "/ip4/10.77.0.1/tcp/") {
					boot = a
				}
			}
			if boot == "" {
				t.Fatalf("first peer has no 10.77.0.1 TCP address: %v", procs[0].addrs)
			}
			args = append(args, "--bootstrap", boot)
		}
		p.cmd = n.command(ctx, k, args...)
		p.cmd.Env = cleanEnv(p.data)
		stdout, _ := p.cmd.StdoutPipe()
		var stderr bytes.Buffer
		p.cmd.Stderr = &lockedWriter{w: &stderr}
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.cmd.Process.Signal(syscall.SIGTERM); p.cmd.Wait() })
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "/") {
				p.addrs = append(p.addrs, line)
			}
			if tok, ok := strings.CutPrefix(line, "token: "); ok {
				p.token = tok
				break
			}
		}
		go func() {
			for sc.Scan() {
			}
		}()
		if p.token == "" {
			t.Fatalf("peer %d did not start:\n%s", k+1, stderr.String())
		}
		procs = append(procs, p)
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f.bin"), 6<<20+3, 9)
	run := func(k int, dir string, args ...string) string {
		cmd := n.command(ctx, k, args...)
		cmd.Dir = dir
		cmd.Env = append(cleanEnv(dir), "SHARE_TOKEN="+procs[k].token) // API at 127.0.0.1:7070 inside the namespace
		out, err := cmd.Output()
		if err != nil {
			stderr := ""
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("host %d: share %v: %v\n%s", k+1, args, err, stderr)
		}
		return strings.TrimSpace(string(out))
	}
	id := run(1, dir, "put", "f.bin")
	out := t.TempDir()
	run(2, out, "get", id)
	sameFiles(t, filepath.Join(dir, "f.bin"), filepath.Join(out, "f.bin"))
	// The connection went over the private network.
	if st := run(2, out, "status"); !strings.Contains(st, "/ip4/10.77.0.") {
		t.Fatalf("peer 3 has no connection over 10.77.0.0/24:\n%s", st)
	}
}
