package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sharefiles/share/cmd/share/internal/netem"
	"github.com/sharefiles/share/node"
)

// Peers behind NAT routers, in network namespaces (netem.AddHome): an
// "internet" with a public-looking subnet (netem.InternetSubnet) holding a
// bootstrap peer that relays, and homes, each a host behind its own router
// that masquerades and drops unsolicited inbound packets. Root only.

// newInternet returns an emulated internet, or skips the test.
func newInternet(t *testing.T) *netem.Network {
	t.Helper()
	if testing.Short() {
		t.Skip("NAT traversal tests take minutes; skipped with -short")
	}
	n, err := netem.New(netem.Options{Prefix: "sharenat", Subnet: netem.InternetSubnet})
	if errors.Is(err, netem.ErrNotRoot) {
		t.Skip("NAT traversal tests need network namespaces: run as root")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// addHome adds a host behind its own router; it returns the host and the
// router's public address.
func addHome(t *testing.T, n *netem.Network, name string, symmetric bool) (*netem.Node, string) {
	t.Helper()
	router, host, err := n.AddHome(name, netem.Link{}, netem.HomeOptions{Symmetric: symmetric})
	if err != nil {
		t.Fatal(err)
	}
	return host, router.Addr().String()
}

// nsPeer is a share peer process in a namespace; its API is on
// 127.0.0.1:7070 of that namespace.
type nsPeer struct {
	node  *netem.Node
	ID    string
	Addrs []string
	token string
	cmd   *exec.Cmd
	log   *lockedWriter
}

func startNSPeer(t *testing.T, d *netem.Node, args ...string) *nsPeer {
	t.Helper()
	data := t.TempDir()
	p := &nsPeer{node: d, log: &lockedWriter{w: new(bytes.Buffer)}}
	p.cmd = d.Command(shareBin, append([]string{"peer", "--data", data, "--api", "127.0.0.1:7070"}, args...)...)
	p.cmd.Env = cleanEnv(data)
	p.cmd.Stderr = p.log
	stdout, _ := p.cmd.StdoutPipe()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			p.cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("peer %s (%s) log:\n%s", d.Name(), p.ID, p.log.w)
		}
	})
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if id, ok := strings.CutPrefix(line, "share peer "); ok {
			p.ID = id
		} else if strings.HasPrefix(line, "/") {
			p.Addrs = append(p.Addrs, line)
		} else if tok, ok := strings.CutPrefix(line, "token: "); ok {
			p.token = tok
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	if p.token == "" {
		t.Fatalf("peer in %s did not start:\n%s", d.Name(), p.log.w)
	}
	return p
}

// addr returns the peer's TCP address on its node's own address.
func (p *nsPeer) addr(t *testing.T) string {
	t.Helper()
	for _, a := range p.Addrs {
		if strings.HasPrefix(a, "/ip4/"+p.node.Addr().String()+"/tcp/") {
			return a
		}
	}
	t.Fatalf("peer in %s has no TCP address on %s: %v", p.node.Name(), p.node.Addr(), p.Addrs)
	return ""
}

// run runs a share client command in the peer's namespace, in dir.
func (p *nsPeer) run(t *testing.T, dir string, args ...string) result {
	t.Helper()
	cmd := p.node.Command(shareBin, args...)
	cmd.Dir = dir
	cmd.Env = append(cleanEnv(dir), "SHARE_TOKEN="+p.token)
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

func (p *nsPeer) status(t *testing.T) node.Status {
	t.Helper()
	r := p.run(t, t.TempDir(), "status", "--json")
	if r.code != 0 {
		t.Fatalf("status in %s: %s", p.node.Name(), r.stderr)
	}
	var st node.Status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// waitBehindNAT waits until AutoNAT found the peer private and it holds a
// relay reservation.
func (p *nsPeer) waitBehindNAT(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		st := p.status(t)
		if st.NAT.Reachability == "private" && len(st.NAT.RelayAddrs) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("peer in %s: not found behind a NAT with a relay slot after 90 s: %+v", p.node.Name(), st.NAT)
		}
		time.Sleep(time.Second)
	}
}

func connectedTo(st node.Status, id string) (node.PeerStatus, bool) {
	for _, p := range st.Peers {
		if p.ID == id {
			return p, true
		}
	}
	return node.PeerStatus{}, false
}

// TestNATHolePunch: two homes, each behind its own NAT, in one private
// swarm (a swarm key: TCP only) with a public relay. A share added in home A
// is fetched byte-identical in home B, over a direct connection that a hole
// punch opened; only requests went through the relay. An outsider on the
// internet without the key gets nothing and is in nobody's tables.
func TestNATHolePunch(t *testing.T) {
	t.Parallel() // each NAT test has a network of its own
	n := newInternet(t)
	relayNode, err := n.AddNode("relay", netem.Link{})
	if err != nil {
		t.Fatal(err)
	}
	outNode, err := n.AddNode("outsider", netem.Link{})
	if err != nil {
		t.Fatal(err)
	}
	homeA, routerA := addHome(t, n, "homea", false)
	homeB, _ := addHome(t, n, "homeb", false)
	dir := t.TempDir()
	if r := share(t, dir, nil, "keygen", "--swarm"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	key := filepath.Join(dir, "swarm.key")
	relay := startNSPeer(t, relayNode, "--swarm-key", key, "--relay-service")
	boot := relay.addr(t)
	a := startNSPeer(t, homeA, "--swarm-key", key, "--bootstrap", boot)
	b := startNSPeer(t, homeB, "--swarm-key", key, "--bootstrap", boot)
	a.waitBehindNAT(t)
	b.waitBehindNAT(t)

	writeFile(t, filepath.Join(dir, "f.bin"), 6<<20+5, 11)
	r := a.run(t, dir, "put", "f.bin")
	if r.code != 0 {
		t.Fatalf("put in home A: %s", r.stderr)
	}
	id := strings.TrimSpace(r.stdout)
	out := t.TempDir()
	if r := b.run(t, out, "get", id); r.code != 0 {
		t.Fatalf("get in home B: %s\n%+v", r.stderr, b.status(t).Shares)
	}
	sameFiles(t, filepath.Join(dir, "f.bin"), filepath.Join(out, "f.bin"))

	// The data path ended up direct: B's connection to A is to A's router's
	// public address, not through the relay, and carried the chunks.
	sb, sa := b.status(t), a.status(t)
	pa, ok := connectedTo(sb, a.ID)
	if !ok || pa.Relayed || !strings.Contains(pa.Addr, "/ip4/"+routerA+"/") {
		t.Fatalf("B's connection to A: %+v (want direct, to A's router %s); peers %+v", pa, routerA, sb.Peers)
	}
	if sb.NAT.BytesDirect < 6<<20 || sb.NAT.BytesRelayed > 64<<10 {
		t.Fatalf("B: %d bytes direct, %d relayed; want the file direct and only requests relayed", sb.NAT.BytesDirect, sb.NAT.BytesRelayed)
	}
	if sa.NAT.HolePunches.Succeeded+sb.NAT.HolePunches.Succeeded == 0 {
		t.Fatalf("no hole punch succeeded: A %+v, B %+v", sa.NAT.HolePunches, sb.NAT.HolePunches)
	}
	if !slices.Equal(sb.Private.Transports, []string{"tcp"}) {
		t.Fatalf("a private peer's transports: %v", sb.Private.Transports)
	}
	t.Logf("hole punches: A %+v, B %+v; B got %d bytes direct, %d relayed", sa.NAT.HolePunches, sb.NAT.HolePunches, sb.NAT.BytesDirect, sb.NAT.BytesRelayed)

	// An outsider without the key, on the internet beside the relay.
	o := startNSPeer(t, outNode, "--bootstrap", boot)
	if r := o.run(t, t.TempDir(), "get", id); r.code == 0 {
		t.Fatal("the outsider got the share")
	}
	so := o.status(t)
	if so.RoutingTable != 0 || len(so.Peers) != 0 {
		t.Fatalf("the outsider joined: routing table %d, peers %+v", so.RoutingTable, so.Peers)
	}
	for _, s := range so.Shares {
		if s.Have != 0 || s.BytesDown != 0 {
			t.Fatalf("the outsider holds %d chunks, %d bytes", s.Have, s.BytesDown)
		}
	}
	for _, m := range []*nsPeer{relay, a, b} {
		if _, ok := connectedTo(m.status(t), o.ID); ok {
			t.Fatalf("member in %s is connected to the outsider", m.node.Name())
		}
	}
}

// TestNATSymmetricRelayOnly: the same homes behind symmetric NATs (a random
// port per connection), where hole punching cannot work. The relay's limits
// (128 KiB, 2 minutes per relayed connection) do not let chunks through:
// the download fails, and says why.
func TestNATSymmetricRelayOnly(t *testing.T) {
	t.Parallel()
	n := newInternet(t)
	relayNode, err := n.AddNode("relay", netem.Link{})
	if err != nil {
		t.Fatal(err)
	}
	homeA, _ := addHome(t, n, "homea", true)
	homeB, _ := addHome(t, n, "homeb", true)
	relay := startNSPeer(t, relayNode, "--relay-service")
	boot := relay.addr(t)
	a := startNSPeer(t, homeA, "--bootstrap", boot)
	b := startNSPeer(t, homeB, "--bootstrap", boot)
	a.waitBehindNAT(t)
	b.waitBehindNAT(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f.bin"), 2<<20, 12)
	r := a.run(t, dir, "put", "f.bin")
	if r.code != 0 {
		t.Fatalf("put in home A: %s", r.stderr)
	}
	id := strings.TrimSpace(r.stdout)
	// The client waits longer than the peer (60 s), so that the peer's own
	// download has failed and its reason is in the client's error.
	r = b.run(t, t.TempDir(), "get", "--stall-timeout", "75s", id)
	if r.code == 0 {
		t.Fatal("got the share through a limited relay")
	}
	t.Logf("share get in home B:\n%s", r.stderr)
	for _, want := range []string{"reachable only through a limited relay", "128 KiB each way and 2m0s per relayed connection", "hole punching failed"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("the error does not say %q", want)
		}
	}
	sb := b.status(t)
	if pa, ok := connectedTo(sb, a.ID); !ok || !pa.Limited {
		t.Errorf("B's connection to A: %+v, want a limited relayed one", pa)
	}
	if sb.NAT.HolePunches.Tried+a.status(t).NAT.HolePunches.Tried == 0 {
		t.Error("no hole punch was tried")
	}
	if len(sb.Shares) != 1 || sb.Shares[0].Have != 0 {
		t.Errorf("B's share: %+v", sb.Shares)
	}
}
