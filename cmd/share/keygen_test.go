package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeygenAndPrivatePeers(t *testing.T) {
	dir := t.TempDir()
	r := share(t, dir, nil, "keygen", "--swarm")
	key := filepath.Join(dir, "swarm.key")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "swarm.key\n") {
		t.Fatalf("keygen: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	if r := share(t, dir, nil, "keygen", "--swarm"); r.code != 1 || !strings.Contains(r.stderr, "exists") {
		t.Fatalf("keygen over an existing key: %d %q", r.code, r.stderr)
	}
	if r := share(t, dir, nil, "keygen"); r.code != 2 {
		t.Fatalf("keygen without --swarm: %d %q", r.code, r.stderr)
	}

	// Two peers of the swarm find each other and transfer; status shows the
	// key's fingerprint and TCP only.
	first := startPeer(t, "", "--swarm-key", key)
	second := startPeer(t, "", "--swarm-key", key, "--bootstrap", first.Addrs[0])
	for _, a := range append(first.Addrs, second.Addrs...) {
		if strings.Contains(a, "/udp/") {
			t.Fatalf("a private peer listens on %s", a)
		}
	}
	writeFile(t, filepath.Join(dir, "f.bin"), 3<<20+1, 5)
	r = share(t, dir, first.env(), "put", "f.bin")
	if r.code != 0 {
		t.Fatalf("put: %s", r.stderr)
	}
	out := t.TempDir()
	if r := share(t, out, second.env(), "get", strings.TrimSpace(r.stdout)); r.code != 0 {
		t.Fatalf("get: %s", r.stderr)
	}
	sameFiles(t, filepath.Join(dir, "f.bin"), filepath.Join(out, "f.bin"))
	fp := strings.Fields(share(t, dir, nil, "keygen", "--swarm", "-o", filepath.Join(t.TempDir(), "k")).stdout)[3]
	if st := share(t, dir, second.env(), "status"); !strings.Contains(st.stdout, "swarm:    private, swarm key ") || strings.Contains(st.stdout, fp) {
		t.Fatalf("status:\n%s", st.stdout)
	}
	if st := second.status(t); st.Private.SwarmKey != first.status(t).Private.SwarmKey || st.Private.SwarmKey == "" {
		t.Fatalf("fingerprints differ: %+v", st.Private)
	}

	// A peer refuses a key file others may read, and says how to fix it.
	os.Chmod(key, 0o640)
	r = share(t, dir, nil, "peer", "--swarm-key", key, "--data", t.TempDir(), "--api", "127.0.0.1:0")
	if r.code != 1 || !strings.Contains(r.stderr, "accessible to other users") || !strings.Contains(r.stderr, "chmod 600 "+key) {
		t.Fatalf("peer with a 0640 key: %d %q", r.code, r.stderr)
	}
}

func TestAllowPeerFlags(t *testing.T) {
	dir := t.TempDir()
	if r := share(t, dir, nil, "peer", "--allow-peer", "nobody", "--data", t.TempDir(), "--api", "127.0.0.1:0"); r.code != 2 || !strings.Contains(r.stderr, "not a peer ID") {
		t.Fatalf("bad --allow-peer: %d %q", r.code, r.stderr)
	}
	empty := filepath.Join(dir, "allow")
	os.WriteFile(empty, []byte("# nobody yet\n"), 0o644)
	if r := share(t, dir, nil, "peer", "--allow-peers-file", empty, "--data", t.TempDir(), "--api", "127.0.0.1:0"); r.code != 2 || !strings.Contains(r.stderr, "no peer ID") {
		t.Fatalf("empty --allow-peers-file: %d %q", r.code, r.stderr)
	}
	// Two peers that allow each other (one by flag, one by file); a third is
	// refused by both.
	a := startPeer(t, "")
	a.stop(t)
	b := startPeer(t, "")
	b.stop(t)
	list := filepath.Join(dir, "machines")
	os.WriteFile(list, []byte("# my machines\n"+a.ID+"\n"+b.ID+"\n"), 0o644)
	a = startPeer(t, a.Data, "--allow-peer", b.ID)
	b = startPeer(t, b.Data, "--allow-peers-file", list, "--bootstrap", a.Addrs[0])
	c := startPeer(t, "", "--bootstrap", a.Addrs[0], "--bootstrap", b.Addrs[0])
	writeFile(t, filepath.Join(dir, "f.bin"), 1<<20, 6)
	r := share(t, dir, a.env(), "put", "f.bin")
	if r.code != 0 {
		t.Fatalf("put: %s", r.stderr)
	}
	id := strings.TrimSpace(r.stdout)
	if r := share(t, t.TempDir(), b.env(), "get", id); r.code != 0 {
		t.Fatalf("get on an allowed peer: %s", r.stderr)
	}
	if r := share(t, t.TempDir(), c.env(), "get", id); r.code == 0 {
		t.Fatal("a peer not allowed got the share")
	}
	st := b.status(t)
	if len(st.Private.AllowPeers) != 2 || st.RoutingTable != 1 {
		t.Fatalf("b: allow-list %v, routing table %d (want a only)", st.Private.AllowPeers, st.RoutingTable)
	}
	if st := share(t, dir, a.env(), "status"); !strings.Contains(st.stdout, "allowed:  only these 1 peers") {
		t.Fatalf("a's status:\n%s", st.stdout)
	}
}
