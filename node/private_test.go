package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"

	"github.com/sharefiles/share/transfer"
	"github.com/sharefiles/share/transfer/transfertest"
)

func TestParseSwarmKey(t *testing.T) {
	key := bytes.Repeat([]byte{0xab}, 32)
	hexKey := hex.EncodeToString(key)
	b64 := base64.StdEncoding.EncodeToString(key)
	for _, tc := range []struct {
		name, in string
		ok       bool
	}{
		{"base16", "/key/swarm/psk/1.0.0/\n/base16/\n" + hexKey + "\n", true},
		{"base16, no final newline", "/key/swarm/psk/1.0.0/\n/base16/\n" + hexKey, true},
		{"base16, CRLF", "/key/swarm/psk/1.0.0/\r\n/base16/\r\n" + hexKey + "\r\n", true},
		{"base16, upper case", "/key/swarm/psk/1.0.0/\n/base16/\n" + strings.ToUpper(hexKey) + "\n", true},
		{"base64", "/key/swarm/psk/1.0.0/\n/base64/\n" + b64 + "\n", true},
		{"bin", "/key/swarm/psk/1.0.0/\n/bin/\n" + string(key), true},
		{"empty", "", false},
		{"no header", hexKey + "\n", false},
		{"other header", "/key/swarm/psk/2.0.0/\n/base16/\n" + hexKey + "\n", false},
		{"unknown encoding", "/key/swarm/psk/1.0.0/\n/base32/\n" + hexKey + "\n", false},
		{"short key", "/key/swarm/psk/1.0.0/\n/base16/\n" + hexKey[:62] + "\n", false},
		{"long key", "/key/swarm/psk/1.0.0/\n/base16/\n" + hexKey + "ab\n", false},
		{"not hex", "/key/swarm/psk/1.0.0/\n/base16/\n" + strings.Repeat("zz", 32) + "\n", false},
		{"two keys", "/key/swarm/psk/1.0.0/\n/base16/\n" + hexKey + "\n" + hexKey + "\n", false},
		{"bin, short", "/key/swarm/psk/1.0.0/\n/bin/\n" + string(key[:20]), false},
		{"huge", "/key/swarm/psk/1.0.0/\n/base16/\n" + hexKey + strings.Repeat(" ", maxSwarmKeyFile), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			psk, err := ParseSwarmKey([]byte(tc.in))
			if tc.ok != (err == nil) {
				t.Fatalf("ok=%v, got err %v", tc.ok, err)
			}
			if tc.ok && !bytes.Equal(psk, key) {
				t.Fatalf("key %x, want %x", psk, key)
			}
		})
	}
}

func TestNewSwarmKeyIsKubosFormat(t *testing.T) {
	b, err := NewSwarmKey()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 3 || lines[0] != "/key/swarm/psk/1.0.0/" || lines[1] != "/base16/" || len(lines[2]) != 64 {
		t.Fatalf("not kubo's swarm.key layout:\n%s", b)
	}
	psk, err := pnet.DecodeV1PSK(bytes.NewReader(b)) // what kubo and go-libp2p read
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(psk) != lines[2] {
		t.Fatal("decoded key differs")
	}
	c, _ := NewSwarmKey()
	if bytes.Equal(b, c) {
		t.Fatal("two keys are equal")
	}
}

func TestLoadSwarmKeyPermissions(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "swarm.key")
	want, err := WriteSwarmKey(src)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(src); fi.Mode().Perm() != 0o600 {
		t.Fatalf("written with mode %04o, want 0600", fi.Mode().Perm())
	}
	if _, err := WriteSwarmKey(src); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("overwrote an existing key: %v", err)
	}
	for _, tc := range []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true}, {0o400, true}, {0o700, true},
		{0o640, false}, {0o644, false}, {0o604, false}, {0o620, false}, {0o602, false}, {0o666, false},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			if err := os.Chmod(src, tc.mode); err != nil {
				t.Fatal(err)
			}
			psk, err := LoadSwarmKey(src)
			if tc.ok {
				if err != nil || !bytes.Equal(psk, want) {
					t.Fatalf("got %x, %v", psk, err)
				}
				return
			}
			if !errors.Is(err, ErrSwarmKeyExposed) || !strings.Contains(err.Error(), "chmod 600 "+src) {
				t.Fatalf("want a refusal saying chmod 600, got %v", err)
			}
		})
	}
	if _, err := LoadSwarmKey(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("loaded a missing file")
	}
	if _, err := LoadSwarmKey(dir); err == nil {
		t.Fatal("loaded a directory")
	}
}

func TestParsePeerIDs(t *testing.T) {
	a, b := testNode(t, "", nil).ID(), testNode(t, "", nil).ID()
	for _, tc := range []struct {
		name, in string
		want     []peer.ID
		ok       bool
	}{
		{"lines", a.String() + "\n" + b.String() + "\n", []peer.ID{a, b}, true},
		{"comments and blanks", "# my machines\n\n" + a.String() + "  # laptop\n\t" + b.String() + "\r\n", []peer.ID{a, b}, true},
		{"commas", a.String() + "," + b.String(), []peer.ID{a, b}, true},
		{"empty", "", nil, true},
		{"garbage", a.String() + "\nnot-a-peer\n", nil, false},
		{"a multiaddr", "/ip4/1.2.3.4/tcp/1/p2p/" + a.String(), nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePeerIDs([]byte(tc.in))
			if tc.ok != (err == nil) {
				t.Fatalf("ok=%v, got %v", tc.ok, err)
			}
			if tc.ok && !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func FuzzParseSwarmKey(f *testing.F) {
	k, _ := NewSwarmKey()
	f.Add(k)
	f.Add([]byte("/key/swarm/psk/1.0.0/\n/base64/\n" + base64.StdEncoding.EncodeToString(make([]byte, 32))))
	f.Add([]byte("/key/swarm/psk/1.0.0/\n/bin/\n" + string(make([]byte, 32))))
	f.Fuzz(func(t *testing.T, b []byte) {
		psk, err := ParseSwarmKey(b)
		if err == nil && len(psk) != 32 {
			t.Fatalf("accepted a key of %d bytes", len(psk))
		}
	})
}

func FuzzParsePeerIDs(f *testing.F) {
	f.Add([]byte("12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN # a\n\n"))
	f.Add([]byte("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N,12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ids, err := ParsePeerIDs(b)
		if err != nil {
			return
		}
		for _, id := range ids {
			if id.Validate() != nil {
				t.Fatalf("accepted an invalid ID %q", id)
			}
		}
	})
}

func testKey(t testing.TB) pnet.PSK {
	b, err := NewSwarmKey()
	if err != nil {
		t.Fatal(err)
	}
	psk, err := ParseSwarmKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return psk
}

// outsiderGetsNothing checks that out could not join the swarm of members:
// it keeps no connection to any (with a swarm key it cannot even complete
// one: handshakeFails), is in none's routing table, and fetching the share
// gets it no chunk.
func outsiderGetsNothing(t *testing.T, out *Node, id transfer.ID, handshakeFails bool, members ...*Node) {
	t.Helper()
	for _, m := range members {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := out.host.Connect(ctx, peer.AddrInfo{ID: m.ID(), Addrs: m.host.Addrs()})
		cancel()
		// Refused by a gater, a TLS 1.3 dialer may finish its side of the
		// handshake before the listener closes the connection.
		if err == nil && handshakeFails {
			t.Fatalf("outsider connected to member %s", m.ID())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	_, err := out.Fetch(ctx, id)
	cancel()
	if err == nil {
		t.Fatal("outsider fetched the share")
	}
	if sh, err := out.Get(id); err == nil && sh.HaveCount() > 0 {
		t.Fatalf("outsider holds %d chunks", sh.HaveCount())
	}
	for _, m := range members {
		if m.dht.RoutingTable().Find(out.ID()) != "" {
			t.Fatalf("outsider in the routing table of %s", m.ID())
		}
		if got := m.m.peerSent.value(out.ID().String()); got != 0 {
			t.Fatalf("member %s sent the outsider %v bytes", m.ID(), got)
		}
		if c := m.host.Network().ConnsToPeer(out.ID()); len(c) > 0 {
			t.Fatalf("member %s is connected to the outsider: %v", m.ID(), c[0].RemoteMultiaddr())
		}
	}
}

func TestPrivateSwarm(t *testing.T) {
	key := testKey(t)
	private := func(o *Options) { o.SwarmKey = key; o.Listen = []string{"/ip4/127.0.0.1/tcp/0"} }
	boot := testNode(t, "", private)
	a := testNode(t, "", private, boot)
	b := testNode(t, "", private, boot)
	content := transfertest.Bytes(7, 2<<20+11)
	sh := importShare(t, a, "private.bin", content, 256<<10)
	fetch(t, b, sh.ID())
	sameContent(t, waitComplete(t, b, sh.ID(), 30*time.Second), content)
	st := b.Status(context.Background()).(Status)
	if st.Private.SwarmKey != SwarmKeyFingerprint(key) || !slices.Equal(st.Private.Transports, []string{"tcp"}) {
		t.Fatalf("status: %+v", st.Private)
	}

	t.Run("no key", func(t *testing.T) {
		out := testNode(t, "", func(o *Options) { o.Bootstrap = []string{boot.Addrs()[0].String()} })
		outsiderGetsNothing(t, out, sh.ID(), true, boot, a, b)
	})
	t.Run("another key", func(t *testing.T) {
		other := testKey(t)
		out := testNode(t, "", func(o *Options) {
			o.SwarmKey = other
			o.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
			o.Bootstrap = []string{boot.Addrs()[0].String()}
		})
		outsiderGetsNothing(t, out, sh.ID(), true, boot, a, b)
	})
}

func TestPrivateSwarmIsTCPOnly(t *testing.T) {
	key := testKey(t)
	n := testNode(t, "", func(o *Options) { o.SwarmKey = key; o.Listen = nil })
	for _, a := range n.Addrs() {
		if strings.Contains(a.String(), "/udp/") {
			t.Fatalf("a private peer listens on %s", a)
		}
	}
	st, err := transfer.OpenStore(t.TempDir(), transfer.StoreOptions{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, err = New(context.Background(), Options{Store: st, DataDir: t.TempDir(), SwarmKey: key, Logger: quiet,
		Listen: []string{"/ip4/127.0.0.1/udp/0/quic-v1"}})
	if err == nil || !strings.Contains(err.Error(), "TCP only") {
		t.Fatalf("QUIC in a private swarm: %v", err)
	}
}

func testIdentity(t testing.TB) (crypto.PrivKey, peer.ID) {
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, id
}

func TestAllowList(t *testing.T) {
	// Three machines that know each other's IDs, and an outsider that knows
	// their addresses.
	var keys []crypto.PrivKey
	var ids []peer.ID
	for range 3 {
		k, id := testIdentity(t)
		keys, ids = append(keys, k), append(ids, id)
	}
	member := func(k int) func(*Options) {
		return func(o *Options) { o.Identity = keys[k]; o.AllowPeers = ids }
	}
	boot := testNode(t, "", member(0))
	a := testNode(t, "", member(1), boot)
	b := testNode(t, "", member(2), boot)
	content := transfertest.Bytes(8, 1<<20+3)
	sh := importShare(t, a, "allowed.bin", content, 256<<10)
	fetch(t, b, sh.ID())
	sameContent(t, waitComplete(t, b, sh.ID(), 30*time.Second), content)

	out := testNode(t, "", func(o *Options) { o.Bootstrap = []string{boot.Addrs()[0].String()} })
	outsiderGetsNothing(t, out, sh.ID(), false, boot, a, b)
	if boot.gater.refused.Load() == 0 {
		t.Fatal("no refusal counted")
	}
	// Members do not dial it either.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.host.Connect(ctx, peer.AddrInfo{ID: out.ID(), Addrs: out.host.Addrs()}); err == nil {
		t.Fatal("a member dialled a peer not on its list")
	}
	st := a.Status(context.Background()).(Status)
	if len(st.Private.AllowPeers) != 3 || st.Private.SwarmKey != "" {
		t.Fatalf("status: %+v", st.Private)
	}

}

func TestAllowListAddsBootstrapAndRelays(t *testing.T) {
	_, a := testIdentity(t)
	_, boot := testIdentity(t)
	_, relay := testIdentity(t)
	g, err := allowListFor(Options{AllowPeers: []peer.ID{a},
		Bootstrap: []string{"/ip4/127.0.0.1/tcp/1/p2p/" + boot.String()},
		Relays:    []string{"/ip4/127.0.0.1/tcp/2/p2p/" + relay.String()}})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []peer.ID{a, boot, relay} {
		if !g.InterceptPeerDial(id) {
			t.Fatalf("%s refused", id)
		}
	}
	_, other := testIdentity(t)
	if g.InterceptPeerDial(other) || g.InterceptSecured(0, other, nil) {
		t.Fatal("a peer not on the list was let through")
	}
	if g.refused.Load() != 2 {
		t.Fatalf("refused %d, want 2", g.refused.Load())
	}
	if g, _ := allowListFor(Options{Bootstrap: []string{"/ip4/127.0.0.1/tcp/1/p2p/" + boot.String()}}); g != nil {
		t.Fatal("a gater without an allow-list")
	}
}
