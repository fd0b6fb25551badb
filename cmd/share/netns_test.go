package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sharefiles/share/cmd/share/internal/netem"
)

// newNetns returns a private network (internal/netem) of hosts, each in
// its own network namespace with an address in 10.77.0.0/16 on one bridge;
// nothing touches the machine's own interfaces. It skips without root.
func newNetns(t testing.TB, hosts int) []*netem.Node {
	t.Helper()
	n, err := netem.New(netem.Options{})
	if errors.Is(err, netem.ErrNotRoot) {
		t.Skip("network namespaces need root; skipping the private-network test")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	var nodes []*netem.Node
	for k := 1; k <= hosts; k++ {
		d, err := n.AddNode(fmt.Sprintf("h%d", k), netem.Link{})
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, d)
	}
	return nodes
}

// TestPeersOnPrivateNetwork runs peers on a private 10.x network, with the
// default listen addresses (0.0.0.0), as containers do: the DHT must work
// across those addresses, not only on loopback.
func TestPeersOnPrivateNetwork(t *testing.T) {
	const hosts = 3
	n := newNetns(t, hosts)
	first := "/ip4/" + n[0].Addr().String() + "/tcp/"
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
				if strings.HasPrefix(a, first) {
					boot = a
				}
			}
			if boot == "" {
				t.Fatalf("first peer has no %s TCP address: %v", n[0].Addr(), procs[0].addrs)
			}
			args = append(args, "--bootstrap", boot)
		}
		p.cmd = n[k].CommandContext(ctx, shareBin, args...)
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
		cmd := n[k].CommandContext(ctx, shareBin, args...)
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
	if st := run(2, out, "status"); !strings.Contains(st, "/ip4/10.77.") {
		t.Fatalf("peer 3 has no connection over 10.77.0.0/16:\n%s", st)
	}
}
