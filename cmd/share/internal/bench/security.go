package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sharefiles/share/node"
)

// The security scenario: who gets the file who should not.
//
// P2P: every member of the swarm (the seed, the N downloaders and a liar)
// shares a swarm key; the liar serves a corrupted copy, as in the bad-peer
// scenario. An outsider without the key is told the seed's address and the
// share's ID and tries to fetch it while the N download. Measured: the bytes
// of the file it obtained (verified chunks it received), whether it joined
// (a routing table entry or a connection kept), the bad chunks the
// downloaders dropped, and their copies.
//
// Client-server: a client with a wrong token tries to get the file; a thief
// with the server's stolen token gets it, then the server is restarted with
// a new token (the revocation a server operator has) and the thief tries
// again; the N honest clients, given the new token, then download it.
// Measured: the bytes each of them obtained.
//
// Not measured here: a peer flooding requests. The resource manager's
// per-peer limits are node's (limits.go), tested there with a hostile libp2p
// host (TestFloodingPeerDoesNotStallOthers); the bench has no flooding
// process.

// Security is what a security point measured. Bytes are of the file:
// verified chunks a peer received, or a finished output a client wrote.
type Security struct {
	OutsiderBytes   int64  `json:"outsider_bytes"`           // P2P: got by the peer without the swarm key
	OutsiderJoined  bool   `json:"outsider_joined"`          // P2P: it is in a routing table or keeps a connection
	OutsiderError   string `json:"outsider_error,omitempty"` // P2P: what its share get said
	WrongTokenBytes int64  `json:"wrong_token_bytes"`        // client-server
	WrongTokenError string `json:"wrong_token_error,omitempty"`
	StolenBefore    int64  `json:"stolen_token_bytes_before"` // with the stolen token, before the restart
	StolenAfter     int64  `json:"stolen_token_bytes_after"`  // with it after the restart with a new token
	StolenError     string `json:"stolen_token_error,omitempty"`
}

// security runs one point of the security scenario.
func (b *bencher) security(ctx context.Context, p *Point) error {
	if p.Mode == P2P {
		return b.securityP2P(ctx, p)
	}
	return b.securityCS(ctx, p)
}

func (b *bencher) securityP2P(ctx context.Context, p *Point) error {
	sec := &Security{}
	p.Security = sec
	c, id, err := b.setup(ctx, p) // members get the swarm key: see startCluster
	if err != nil {
		return err
	}
	defer c.stop()
	liar, err := c.startPeer("liar", []string{"--bootstrap", c.source.addrs[0]})
	if err != nil {
		return err
	}
	c.extra = append(c.extra, liar)
	if err := waitStatus(ctx, liar, func(st status) bool { return st.RoutingTable > 0 }); err != nil {
		return err
	}
	if _, err := c.put(ctx, liar); err != nil {
		return err
	}
	if err := corrupt(filepath.Join(liar.data, "shares", id, "data", b.name), b.opts.ChunkSize, 1); err != nil {
		return err
	}
	// The outsider: a peer like the others, but without the key.
	data := filepath.Join(c.dir, "outsider")
	out, err := c.start("outsider", KindPeer, data, append([]string{"peer", "--data", data, "--listen", "/ip4/127.0.0.1/tcp/0",
		"--api", "127.0.0.1:0", "--log-level", "warn", "--grace", "1s", "--bootstrap", c.source.addrs[0]}, b.capArgs()...))
	if err != nil {
		return err
	}
	c.extra = append(c.extra, out)

	start := time.Now()
	gets, err := c.downloads(id, start, 30*time.Second)
	if err != nil {
		return err
	}
	b.prog.track(gets, start)
	outFile := filepath.Join(c.dir, "out", "outsider", b.name)
	os.MkdirAll(filepath.Dir(outFile), 0o755)
	_, oerr := shareCmd(c.command("outsider", "get", id, "-o", outFile, "--stall-timeout", "20s"), b.usage, out, filepath.Dir(outFile))
	if oerr != nil {
		sec.OutsiderError = why(oerr.Error())
	}
	wctx, cancel := context.WithTimeout(ctx, b.timeout(p.Bound))
	defer cancel()
	for _, g := range gets {
		g.wait(wctx)
	}
	sec.OutsiderBytes, sec.OutsiderJoined = outsiderState(ctx, out, outFile)
	for _, m := range append(append([]*daemon{c.source}, c.peers...), liar) {
		var st peerStatus
		if m.getJSON(ctx, "/v1/status", &st) == nil && st.connectedTo(out) {
			sec.OutsiderJoined = true
		}
	}
	err = b.collect(ctx, c, p, gets)
	if p.Identical != p.N {
		return fmt.Errorf("security: %d of %d downloads finished identical: %v", p.Identical, p.N, err)
	}
	if sec.OutsiderBytes > 0 || sec.OutsiderJoined {
		return fmt.Errorf("security: the outsider without the swarm key got %d bytes (joined: %v)", sec.OutsiderBytes, sec.OutsiderJoined)
	}
	return nil
}

// peerStatus is the part of a peer's status the security scenario reads.
type peerStatus struct {
	PeerID       string `json:"peer_id"`
	RoutingTable int    `json:"routing_table"`
	Peers        []struct {
		ID string `json:"id"`
	} `json:"peers"`
	Shares []struct {
		BytesDown int64 `json:"bytes_down"`
		Have      int   `json:"have"`
	} `json:"shares"`
}

func (st peerStatus) connectedTo(d *daemon) bool {
	var other peerStatus
	if d.getJSON(context.Background(), "/v1/status", &other) != nil {
		return false
	}
	for _, p := range st.Peers {
		if p.ID == other.PeerID {
			return true
		}
	}
	return false
}

// outsiderState returns the bytes of the file the outsider obtained (the
// chunks its peer received, or its output) and whether it joined the swarm.
func outsiderState(ctx context.Context, d *daemon, outFile string) (int64, bool) {
	var st peerStatus
	if err := d.getJSON(ctx, "/v1/status", &st); err != nil {
		return 0, false
	}
	var got int64
	for _, s := range st.Shares {
		got += s.BytesDown
	}
	if fi, err := os.Stat(outFile); err == nil {
		got = max(got, fi.Size())
	}
	return got, st.RoutingTable > 0 || len(st.Peers) > 0
}

func (b *bencher) securityCS(ctx context.Context, p *Point) error {
	sec := &Security{}
	p.Security = sec
	c, id, err := b.setup(ctx, p)
	if err != nil {
		return err
	}
	defer c.stop()
	dir := filepath.Join(c.dir, "out", "attackers")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// attempt runs share get as name with token; it returns the bytes of
	// the finished output and the error's first line.
	attempt := func(name, token string) (int64, string) {
		out := filepath.Join(dir, name+"-"+b.name)
		os.Remove(out)
		cmd := c.command(name, "get", id, "-o", out, "--stall-timeout", "20s")
		cmd.Env = append(c.source.env(), "SHARE_TOKEN="+token)
		cmd.Dir = dir
		o, err := cmd.CombinedOutput()
		b.usage.add(KindClient, cmd.ProcessState)
		var n int64
		if fi, serr := os.Stat(out); serr == nil && b.identical(out) {
			n = fi.Size()
		}
		if err != nil {
			return n, why(strings.TrimSpace(string(o)))
		}
		return n, ""
	}
	sec.WrongTokenBytes, sec.WrongTokenError = attempt("client-wrong", "not-the-token")
	stolen := c.source.token
	sec.StolenBefore, _ = attempt("client-thief", stolen)
	// Revoke: restart the server with a new token.
	c.source.stop()
	newToken := fmt.Sprintf("bench-new-token-%d", time.Now().UnixNano())
	c.srcArg = append(c.srcArg, "--token", newToken)
	if err := c.restartSource(); err != nil {
		return err
	}
	c.source.token = newToken // it prints "(from --token ...)"
	sec.StolenAfter, sec.StolenError = attempt("client-thief", stolen)

	start := time.Now()
	gets, err := c.downloads(id, start, 30*time.Second)
	if err != nil {
		return err
	}
	b.prog.track(gets, start)
	wctx, cancel := context.WithTimeout(ctx, b.timeout(p.Bound))
	defer cancel()
	for _, g := range gets {
		g.wait(wctx)
	}
	if err := b.collect(ctx, c, p, gets); err != nil {
		return err
	}
	if sec.WrongTokenBytes > 0 || sec.StolenAfter > 0 || sec.StolenBefore == 0 {
		return fmt.Errorf("security: wrong token got %d bytes; stolen token %d before, %d after the restart", sec.WrongTokenBytes, sec.StolenBefore, sec.StolenAfter)
	}
	return nil
}

// swarmKey writes a new swarm key for a cluster's members.
func swarmKey(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, node.SwarmKeyFile)
	_, err := node.WriteSwarmKey(path)
	return path, err
}

// why is what a share command said of its error: the first line, after
// the last "share: " (shareCmd prefixes the command line).
func why(s string) string {
	s = firstLine(s)
	if i := strings.LastIndex(s, "share: "); i >= 0 {
		s = s[i+len("share: "):]
	}
	return s
}

// describeSecurity is the report's paragraph on a security point.
func describeSecurity(p Point) string {
	s := p.Security
	if s == nil {
		return ""
	}
	if p.Mode == P2P {
		return fmt.Sprintf("Security, P2P, N=%d, in a private swarm (swarm key): an outsider without the key, given the seed's address and the ID, obtained %d bytes (joined: %v; %q); a member serving a corrupted copy had %d bad chunks dropped; %d/%d copies byte-identical, in %s.",
			p.N, s.OutsiderBytes, s.OutsiderJoined, s.OutsiderError, p.BadChunks, p.Identical, p.N, secs(p.Distribution))
	}
	return fmt.Sprintf("Security, client-server: a client with a wrong token obtained %d bytes (%q); a stolen token got %d bytes, and after the server's restart with a new token %d (%q); then %d/%d clients with the new token got byte-identical copies in %s.",
		s.WrongTokenBytes, s.WrongTokenError, s.StolenBefore, s.StolenAfter, s.StolenError, p.Identical, p.N, secs(p.Distribution))
}
