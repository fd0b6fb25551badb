package node

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/sharefiles/share/transfer/transfertest"
)

// Peers behind a NAT cannot be emulated on loopback in one process; these
// tests make one reachable only through a relay by having the other refuse
// to dial its direct addresses. Hole punching needs public addresses and
// is tested with real NATs in network namespaces (cmd/share, as root).

// natPeers starts a relay (also the bootstrap peer), a peer "home" that
// is told it is behind a NAT, and a peer "away" that can reach home only
// through the relay. It returns once away is connected to home through the
// relay. (On loopback, home does not advertise its relayed address:
// autorelay advertises only public relay addresses; away dials it.)
func natPeers(t *testing.T, limits RelayLimits, viaBootstrap bool) (relay, home, away *Node) {
	t.Helper()
	relay = testNode(t, "", func(o *Options) { o.RelayService = true; o.RelayLimits = limits })
	// Neither may dial the other directly, as if each were behind a NAT.
	homeKey, homeID := testIdentity(t)
	awayKey, awayID := testIdentity(t)
	home = testNode(t, "", func(o *Options) {
		o.Identity = homeKey
		o.Reachability = network.ReachabilityPrivate
		if !viaBootstrap {
			o.Relays = []string{relay.Addrs()[0].String()}
		}
		o.denyDial = func(p peer.ID, a ma.Multiaddr) bool { return p == awayID && !isRelayAddr(a) }
	}, relay)
	away = testNode(t, "", func(o *Options) {
		o.Identity = awayKey
		o.StallTimeout = 3 * time.Second
		o.denyDial = func(p peer.ID, a ma.Multiaddr) bool { return p == homeID && !isRelayAddr(a) }
	}, relay)
	circuit := ma.StringCast(relay.Addrs()[0].String() + "/p2p-circuit")
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(network.WithAllowLimitedConn(context.Background(), "test"), 5*time.Second)
		err := away.host.Connect(ctx, peer.AddrInfo{ID: home.ID(), Addrs: []ma.Multiaddr{circuit}})
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("away cannot reach home through the relay after 20 s (no reservation?): %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return relay, home, away
}

func TestLimitedRelayCarriesNoChunks(t *testing.T) {
	// Restored after the nodes are closed (cleanups run last first), so
	// that no download goroutine reads it meanwhile.
	saved := holePunchWait
	t.Cleanup(func() { holePunchWait = saved })
	holePunchWait = time.Second
	// The relay is found among the bootstrap peers.
	relay, home, away := natPeers(t, RelayLimits{}, true)
	if st := home.natStatus(); st.Reachability != "private" {
		t.Fatalf("home's NAT status: %+v", st)
	}
	if !strings.Contains(relay.natStatus().RelayService, "128 KiB each way and 2m0s per relayed connection") {
		t.Fatalf("relay service status: %q", relay.natStatus().RelayService)
	}
	content := transfertest.Bytes(3, 1<<20)
	sh := importShare(t, home, "home.bin", content, 256<<10)

	// The manifest comes over the relay: the download starts...
	fetch(t, away, sh.ID())
	if c := away.host.Network().ConnsToPeer(home.ID()); len(c) == 0 || !c[0].Stat().Limited {
		t.Fatalf("away is not connected to home through the limited relay: %v", c)
	}
	// ...but no chunk does, and the download ends saying why.
	deadline := time.Now().Add(30 * time.Second)
	var lastErr string
	for {
		st := away.Status(context.Background()).(Status)
		if len(st.Shares) == 1 && st.Shares[0].LastError != "" {
			lastErr = st.Shares[0].LastError
			if st.Shares[0].Have != 0 {
				t.Fatalf("away got %d chunks through a limited relay", st.Shares[0].Have)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("download did not end: %+v", st.Shares)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("the download's error:\n%s", lastErr)
	for _, want := range []string{"reachable only through a limited relay", relay.ID().String(), "128 KiB each way and 2m0s per relayed connection", "chunks go over direct connections only"} {
		if !strings.Contains(lastErr, want) {
			t.Fatalf("error does not say %q:\n%s", want, lastErr)
		}
	}
	if st := away.natStatus(); st.BytesRelayed == 0 || st.BytesDirect != 0 {
		t.Fatalf("away's bytes: %d relayed (manifest, have), %d direct (want 0)", st.BytesRelayed, st.BytesDirect)
	}
	if st := home.natStatus(); st.BytesRelayed >= int64(len(content))/4 {
		t.Fatalf("home sent %d bytes through the relay", st.BytesRelayed)
	}
	// The chunk stream itself is refused with ErrRelayOnly.
	_, err := away.openChunkStream(context.Background(), home.ID())
	if !errors.Is(err, ErrRelayOnly) {
		t.Fatalf("chunk stream over a limited relay: %v", err)
	}
}

func TestUnlimitedRelayCarriesChunks(t *testing.T) {
	_, home, away := natPeers(t, RelayLimits{Unlimited: true}, false)
	content := transfertest.Bytes(4, 1<<20+17)
	sh := importShare(t, home, "home.bin", content, 256<<10)
	fetch(t, away, sh.ID())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("away's status: %+v\nconnections to home: %v", away.Status(context.Background()).(Status).Shares, away.host.Network().ConnsToPeer(home.ID()))
		}
	})
	sameContent(t, waitComplete(t, away, sh.ID(), time.Minute), content)
	st := away.natStatus()
	if st.BytesRelayed < int64(len(content)) || st.BytesDirect != 0 {
		t.Fatalf("away's bytes: %d relayed, %d direct; want the whole file relayed", st.BytesRelayed, st.BytesDirect)
	}
	ps := away.Status(context.Background()).(Status).Peers
	for _, p := range ps {
		if p.ID == home.ID().String() && (!p.Relayed || p.Limited) {
			t.Fatalf("home's connection: %+v", p)
		}
	}
}

func TestRelayLimitsString(t *testing.T) {
	for _, tc := range []struct {
		l    RelayLimits
		want string
	}{
		{RelayLimits{}, "128 KiB each way and 2m0s per relayed connection; 128 reservations, 16 relayed connections per peer"},
		{RelayLimits{Data: 1 << 20, Duration: time.Minute, MaxReservations: 4, MaxCircuits: 2}, "1.0 MiB each way and 1m0s per relayed connection; 4 reservations, 2 relayed connections per peer"},
		{RelayLimits{Unlimited: true, Data: 5}, "no limit per relayed connection; 128 reservations, 16 relayed connections per peer"},
	} {
		if got := tc.l.String(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.l, got, tc.want)
		}
	}
}

func TestParseReachability(t *testing.T) {
	for in, want := range map[string]network.Reachability{"": network.ReachabilityUnknown, "auto": network.ReachabilityUnknown,
		"public": network.ReachabilityPublic, "private": network.ReachabilityPrivate} {
		if got, err := ParseReachability(in); err != nil || got != want {
			t.Errorf("%q: %v, %v", in, got, err)
		}
	}
	if _, err := ParseReachability("nat"); err == nil {
		t.Error("accepted nat")
	}
}

func TestPunchError(t *testing.T) {
	in := `failed to dial: failed to dial 12D3KooWNn: all dials failed
  * [/ip4/127.0.0.1/tcp/7071] dial to self attempted
  * [/ip4/192.168.1.2/tcp/7071] dial to self attempted
  * [/ip4/192.0.0.67/tcp/44343] dial tcp4 0.0.0.0:7071->192.0.0.67:44343: i/o timeout`
	want := "failed to dial: failed to dial 12D3KooWNn: all dials failed; [/ip4/192.0.0.67/tcp/44343] dial tcp4 0.0.0.0:7071->192.0.0.67:44343: i/o timeout"
	if got := punchError(in); got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}
