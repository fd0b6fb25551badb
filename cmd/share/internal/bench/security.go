package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"

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
// P2P, variant "flood": the same, plus a member flooding the others: the
// hidden `share flood` (node.Flood), with the swarm key, connected to the
// seed and the N peers, holds floodStreams streams per target open that
// never negotiate a protocol (reopened as soon as the target resets one)
// and floodRequests chunk requests per target, each on its own stream,
// asked again at once whatever the answer (an honest peer waits after
// "busy"). It starts once the seed has refused its first stream, before the
// N downloads, and stops when they are done (its --duration bounds it; it
// dies with the bench). Measured: what the flooder did (its JSON line), the
// victims' share_peer_streams_refused_total by reason, and the
// distribution time, which the report sets beside the point without the
// flood of the same run. On loopback the flooder also takes CPU from the
// processes under test: its CPU time is reported (it is not in Cost).
// The per-peer limits themselves are node's (limits.go), tested there with
// a hostile host (TestFloodingPeerDoesNotStallOthers).

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
	Flood           *Flood `json:"flood,omitempty"` // P2P, VariantFlood
}

// VariantFlood is the security scenario's P2P point with a flooding member.
const VariantFlood = "flood"

// The flooder's workers per target (share flood --streams, --requests):
// streams far beyond a peer's inbound cap (node's peerStreamsInbound, 128
// by default), requests beyond its MaxStreamsPerPeer (32).
const (
	floodStreams  = 300
	floodRequests = 64
)

// Flood is what the flooding member did, and what its targets counted.
type Flood struct {
	Targets        int     `json:"targets"`
	Streams        int64   `json:"streams"`         // unnegotiated streams it opened
	StreamsReset   int64   `json:"streams_reset"`   // of those, reset by a target
	Requests       int64   `json:"requests"`        // chunk requests it sent
	Served         int64   `json:"served"`          // of those, answered with a chunk
	Busy           int64   `json:"busy"`            // answered busy
	RequestsFailed int64   `json:"requests_failed"` // refused otherwise (a stream over a limit)
	Bytes          int64   `json:"bytes_received"`  // chunk bytes it got
	Seconds        float64 `json:"seconds"`         // how long it flooded
	CPU            float64 `json:"cpu_s"`           // its CPU time (user + system)
	// Refused is share_peer_streams_refused_total summed over the seed and
	// the N peers, by reason ("limit", "negotiation", "memory", "busy");
	// SeedRefused the seed's alone.
	Refused     map[string]int64 `json:"refused"`
	SeedRefused map[string]int64 `json:"seed_refused"`
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

	var fl *flooder
	if p.Variant == VariantFlood {
		if fl, err = c.startFlood(ctx, id, b.timeout(p.Bound)+time.Minute); err != nil {
			return err
		}
		defer fl.kill()
	}
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
	if fl != nil {
		if sec.Flood, err = fl.finish(ctx, c); err != nil {
			return err
		}
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
	if f := sec.Flood; f != nil && (f.Streams == 0 || f.Refused[refusedLimit] == 0) {
		return fmt.Errorf("security: the flood did not reach the limits: %d streams opened, %d refused by a limit", f.Streams, f.Refused[refusedLimit])
	}
	return nil
}

// refusedLimit is the reason of share_peer_streams_refused_total for a
// stream refused by the resource manager (node's limits.go).
const refusedLimit = "limit"

// flooder is a running `share flood`.
type flooder struct {
	cmd    *exec.Cmd
	lines  chan string // its stdout, closed at its end
	stderr bytes.Buffer
	done   chan struct{}
}

// startFlood starts the flooding member against the seed and the peers,
// asking for share id, for at most d, and returns once the seed has
// refused one of its streams.
func (c *cluster) startFlood(ctx context.Context, id string, d time.Duration) (*flooder, error) {
	args := []string{"flood", "--swarm-key", c.key, "--share", id, "--duration", d.String(),
		"--streams", strconv.Itoa(floodStreams), "--requests", strconv.Itoa(floodRequests), "--target", c.source.addrs[0]}
	for _, p := range c.peers {
		args = append(args, "--target", p.addrs[0])
	}
	f := &flooder{cmd: orphanSafe(c.command("flooder", args...)), lines: make(chan string, 4), done: make(chan struct{})}
	f.cmd.Dir = c.dir
	f.cmd.Stderr = &f.stderr
	stdout, err := f.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := f.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f.lines <- sc.Text()
		}
		close(f.lines)
		f.cmd.Wait()
		close(f.done)
	}()
	wctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	select {
	case line, ok := <-f.lines:
		if !ok || !strings.HasPrefix(line, "flooding as ") {
			f.kill()
			return nil, fmt.Errorf("share flood did not start: %q %s", line, strings.TrimSpace(f.stderr.String()))
		}
	case <-wctx.Done():
		f.kill()
		return nil, fmt.Errorf("share flood: not connected in %v", startTimeout)
	}
	for {
		if m, err := c.source.metrics(wctx); err == nil && m["share_peer_streams_refused_total|reason="+refusedLimit] > 0 {
			return f, nil
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-wctx.Done():
			f.kill()
			return nil, fmt.Errorf("share flood: the seed refused none of its streams in %v", startTimeout)
		}
	}
}

// finish stops the flood (SIGTERM), reads what it did and what its
// targets, the seed and the peers, counted.
func (f *flooder) finish(ctx context.Context, c *cluster) (*Flood, error) {
	refused := func(d *daemon) map[string]int64 {
		out := map[string]int64{}
		m, err := d.metrics(ctx)
		if err != nil {
			return out
		}
		for _, r := range []string{"limit", "negotiation", "memory", "busy"} {
			out[r] = int64(m["share_peer_streams_refused_total|reason="+r])
		}
		return out
	}
	f.cmd.Process.Signal(syscall.SIGTERM)
	var last string
	for line := range f.lines {
		last = line
	}
	<-f.done
	var st node.FloodStats
	if err := json.Unmarshal([]byte(last), &st); err != nil {
		return nil, fmt.Errorf("share flood: no report (%q): %s", last, strings.TrimSpace(f.stderr.String()))
	}
	fl := &Flood{
		Targets: 1 + len(c.peers), Streams: st.Streams, StreamsReset: st.StreamsReset,
		Requests: st.Requests, Served: st.Served, Busy: st.Busy, RequestsFailed: st.RequestsFailed,
		Bytes: st.Bytes, Seconds: st.Seconds,
		SeedRefused: refused(c.source), Refused: map[string]int64{},
	}
	if ps := f.cmd.ProcessState; ps != nil {
		fl.CPU = (ps.UserTime() + ps.SystemTime()).Seconds()
	}
	for _, d := range append([]*daemon{c.source}, c.peers...) {
		for r, v := range refused(d) {
			fl.Refused[r] += v
		}
	}
	return fl, nil
}

// kill ends the flood at once, if it still runs.
func (f *flooder) kill() {
	select {
	case <-f.done:
	default:
		f.cmd.Process.Signal(syscall.SIGKILL)
		for range f.lines {
		}
		<-f.done
	}
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
		b.usage.add(KindClient, cmd.ProcessState, 0) // a short attempt: its CPU, not its memory
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
func describeSecurity(p Point, res *Results) string {
	s := p.Security
	if s == nil {
		return ""
	}
	if p.Variant == VariantFlood && s.Flood == nil {
		return fmt.Sprintf("Security, P2P, N=%d, with a flooding member: not measured (%s).", p.N, p.Error)
	}
	if s.Flood != nil {
		return "Security, P2P, N=" + strconv.Itoa(p.N) + ", with a flooding member: " + describeFlood(p, res, false) + "."
	}
	if p.Mode == P2P {
		return fmt.Sprintf("Security, P2P, N=%d, in a private swarm (swarm key): an outsider without the key, given the seed's address and the ID, obtained %d bytes (joined: %v; %q); a member serving a corrupted copy had %d bad chunks dropped; %d/%d copies byte-identical, in %s.",
			p.N, s.OutsiderBytes, s.OutsiderJoined, s.OutsiderError, p.BadChunks, p.Identical, p.N, secs(p.Distribution))
	}
	return fmt.Sprintf("Security, client-server: a client with a wrong token obtained %d bytes (%q); a stolen token got %d bytes, and after the server's restart with a new token %d (%q); then %d/%d clients with the new token got byte-identical copies in %s.",
		s.WrongTokenBytes, s.WrongTokenError, s.StolenBefore, s.StolenAfter, s.StolenError, p.Identical, p.N, secs(p.Distribution))
}

// describeFlood says what a flooding member did, what its targets refused,
// and the honest downloads' time beside the same run's point without it;
// short is the report's table cell.
func describeFlood(p Point, res *Results, short bool) string {
	f := p.Security.Flood
	without, vs := "", ""
	for _, q := range res.points(ScenarioSecurity, "", P2P) {
		if q.Run == p.Run && q.N == p.N && q.Distribution > 0 && p.Distribution > 0 {
			without = fmt.Sprintf(" (%s without the flood, %.2fx)", secs(q.Distribution), p.Distribution/q.Distribution)
			vs = fmt.Sprintf(" against %s without it (%.2fx", secs(q.Distribution), p.Distribution/q.Distribution)
		}
	}
	got := humanize.IBytes(uint64(f.Bytes))
	if short {
		if vs != "" {
			vs += fmt.Sprintf("; the flooder took %.1f CPU-s of this machine)", f.CPU)
		}
		return fmt.Sprintf("a member flooding the seed and the %d peers (%d streams that never negotiated, %d chunk requests ignoring \"busy\", %s of chunks got) had %d streams refused by the resource manager's limits and %d reset unnegotiated; %d/%d honest copies identical in %s%s",
			f.Targets-1, f.Streams, f.Requests, got, f.Refused["limit"], f.Refused["negotiation"], p.Identical, p.N, secs(p.Distribution), vs)
	}
	return fmt.Sprintf("a member with the swarm key flooding the seed and the %d peers for %s opened %d streams that never negotiated a protocol (%d reset by their target) and sent %d chunk requests ignoring \"busy\" (%d served, %s in all; %d busy; %d refused); the targets refused %d streams by a limit, reset %d unnegotiated, answered %d busy for want of memory and %d for too many requests in progress (the seed: %d, %d, %d, %d); %d/%d honest copies byte-identical, in %s%s; the flooder used %.1f CPU-s of the machine's",
		f.Targets-1, secs(f.Seconds), f.Streams, f.StreamsReset, f.Requests, f.Served, got, f.Busy, f.RequestsFailed,
		f.Refused["limit"], f.Refused["negotiation"], f.Refused["memory"], f.Refused["busy"],
		f.SeedRefused["limit"], f.SeedRefused["negotiation"], f.SeedRefused["memory"], f.SeedRefused["busy"],
		p.Identical, p.N, secs(p.Distribution), without, f.CPU)
}
