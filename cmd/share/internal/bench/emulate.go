package bench

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sharefiles/share/cmd/share/internal/netem"
)

// netPrefix names the bench's namespaces (netem.Options.Prefix).
const netPrefix = "sharebench"

// workPrefix starts the name of a run's work directory in the temporary
// directory, followed by the bench's PID: a killed run's is found by it.
const workPrefix = "share-bench-"

// Node names of an emulated cluster: the source (server or seed), the
// downloaders d1..dN (a client, or a peer and its client), an extra peer
// (the liar) and the BitTorrent tracker.
const (
	nodeSource  = "src"
	nodeLiar    = "liar"
	nodeTracker = "tracker"
)

// nodeOf returns the node a process of the cluster runs on.
func nodeOf(name string) string {
	for _, p := range []string{"peer", "client", "leecher"} {
		if k, ok := strings.CutPrefix(name, p); ok {
			if _, err := strconv.Atoi(k); err == nil {
				return "d" + k
			}
		}
	}
	switch name {
	case "server", "seed":
		return nodeSource
	}
	return name
}

// startNetwork creates the run's emulated network.
func (b *bencher) startNetwork() error {
	latency := b.opts.Net.Latency() || containsString(b.opts.Scenarios, ScenarioRTT)
	n, err := netem.New(netem.Options{Prefix: netPrefix, Latency: latency})
	if errors.Is(err, netem.ErrNotRoot) {
		return fmt.Errorf("bench: --net %s needs root (it creates network namespaces); run it as root, or use --net loopback", b.opts.Net.Name)
	}
	if err != nil {
		return err
	}
	b.net = n
	b.nodes = map[string]*netem.Node{}
	b.clients = map[string]*http.Client{}
	b.res.Network = b.opts.Net.Name
	b.res.PayloadFraction = netem.PayloadFraction
	b.res.Pace = b.opts.Pace
	b.res.Profile = b.opts.Net
	b.res.Links = map[string]string{}
	b.res.Enforcement = "the kernel: HTB on both ends of each node's veth (rates, counting whole Ethernet frames); delay, jitter and loss: "
	switch n.DelayLine() {
	case netem.DelayNetem:
		b.res.Enforcement += "netem qdiscs"
	case netem.DelayUserspace:
		b.res.Enforcement += "a delay-line switch in the bench process (this kernel has no netem qdisc)"
	default:
		b.res.Enforcement += "none in this profile"
	}
	if b.opts.Pace > 0 {
		b.res.Enforcement += fmt.Sprintf("; every P2P uploader (share peer, aria2c) limits its own upload to %.0f %% of its link's uplink in file bytes (--pace), below the kernel's cap; the server does not", 100*b.opts.Pace)
	}
	return nil
}

// DefaultPace is the default of Options.Pace: P2P uploaders send at 95 %
// of their uplink. A peer that sends as fast as its socket takes data puts
// a whole chunk into the kernel's and the multiplexer's send buffers at
// once; the next chunk it sends, to another peer, then queues behind it on
// the uplink, and so do its chunk requests and have polls, which share the
// connections. On the dsl profile, N = 16 (traced, see BENCHMARKS.md), a
// chunk's first byte reached its asker a median 220 ms after the uploader
// began to send it (the one-way delay is 15 ms): one chunk's time on a
// 10 Mbit/s uplink, so every hop through the swarm took about two. Paced a
// little below the link, the buffers stay near empty: 1.29-1.30x the bound
// against 1.42x (94.5 %; 90 % and 96 % were slower). BitTorrent users are
// told the same: limit the upload below the line, or requests and ACKs
// queue behind it. A server is not paced: its clients have no other
// source, so every byte per second it holds back is lost.
const DefaultPace = 0.95

// pacedUpload returns the upload limit (bytes/s of file data) of a P2P
// uploader on node, or 0 where none is set (loopback, where share's own
// --upload-limit is the cap; no --pace; an unshaped uplink).
func (b *bencher) pacedUpload(node string) int64 {
	if b.net == nil || b.opts.Pace <= 0 {
		return 0
	}
	d := b.nodes[node]
	if d == nil {
		return 0
	}
	return pacedRate(b.opts.Pace, d.Link().Up)
}

// pacedRate is the upload limit, in file bytes per second, of pace of an
// uplink of up bytes/s of Ethernet frames (0: unshaped, no limit).
func pacedRate(pace float64, up int64) int64 {
	if pace <= 0 || up <= 0 {
		return 0
	}
	return int64(pace * float64(up) * netem.PayloadFraction)
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// node returns the node called name with link, creating it or changing
// its link as needed. The run's list of links shows the profile's class
// (the rtt scenario changes the RTT of each point).
func (b *bencher) node(name string, c LinkClass) (*netem.Node, error) {
	return b.nodeShown(name, c, c)
}

func (b *bencher) nodeShown(name string, c, shown LinkClass) (*netem.Node, error) {
	l := c.Link()
	if name == nodeTracker {
		l = netem.Link{}
	}
	d := b.nodes[name]
	if d == nil {
		var err error
		if d, err = b.net.AddNode(name, l); err != nil {
			return nil, err
		}
		b.nodes[name] = d
	} else if d.Link() != l {
		if err := d.SetLink(l); err != nil {
			return nil, err
		}
	}
	if name != nodeTracker {
		b.res.Links[name] = shown.String()
	}
	return d, nil
}

// httpClient returns a client that reaches the API of a daemon on node
// through the node's own loopback, crossing no shaped link.
func (b *bencher) httpClient(node string) *http.Client {
	b.clientsMu.Lock()
	defer b.clientsMu.Unlock()
	if c := b.clients[node]; c != nil {
		return c
	}
	d := b.nodes[node]
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 4}}
	b.clients[node] = c
	return c
}

// rttVariant names a point of the rtt scenario: its RTT.
func rttVariant(rtt time.Duration) string { return rtt.String() }

// linkPoint gives the nodes of point p their links, and sets its bound from
// them: u_s the source's upload, d_min the smallest download of the N, Σu_i
// the sum of their uploads, each the TCP payload its line carries; with the
// largest RTT between the source and a downloader and the time TCP's slow
// start takes to reach the bottleneck's window.
func (b *bencher) linkPoint(p *Point) error {
	prof := b.opts.Net
	srcName := prof.Seed
	if p.Mode == ClientServer && b.opts.ServerLink != "" {
		srcName = b.opts.ServerLink
	}
	src, _ := prof.Class(srcName)
	var rtt time.Duration = -1
	if p.Scenario == ScenarioRTT {
		rtt, _ = time.ParseDuration(p.Variant)
	}
	fix := func(c LinkClass) LinkClass {
		if rtt >= 0 {
			c.RTT = rtt
		}
		return c
	}
	if _, err := b.nodeShown(nodeSource, fix(src), src); err != nil {
		return err
	}
	if srcName != prof.Seed {
		// The source node is the server this point: list the server's
		// link apart, and the source's as the seed's.
		b.res.ServerLink = src.String()
		seed, _ := prof.Class(prof.Seed)
		b.res.Links[nodeSource] = seed.String()
	}
	src = fix(src)
	var dmin, sumU int64
	var maxRTT time.Duration
	for k := 1; k <= p.N; k++ {
		c := fix(prof.Downloader(k))
		if _, err := b.nodeShown("d"+strconv.Itoa(k), c, prof.Downloader(k)); err != nil {
			return err
		}
		if c.Down > 0 && (dmin == 0 || c.Down < dmin) {
			dmin = c.Down
		}
		sumU += c.Up
		maxRTT = max(maxRTT, (src.RTT+c.RTT)/2)
	}
	if p.Scenario == ScenarioBadPeer && p.Mode == P2P {
		if _, err := b.node(nodeLiar, fix(prof.Downloader(p.N+1))); err != nil {
			return err
		}
	}
	if p.Mode == BitTorrent {
		if _, err := b.node(nodeTracker, LinkClass{}); err != nil {
			return err
		}
	}
	// The bound's capacities are rates of file bytes: what TCP carries
	// over each link, its line rate × the payload fraction of a full frame
	// (Results.PayloadFraction); the bound at line rate is kept beside it.
	fb := func(r int64) int64 { return int64(math.Round(float64(r) * netem.PayloadFraction)) }
	p.Bound, p.BoundTerm = BoundOf(p.Mode, p.N, b.opts.Size, fb(src.Up), fb(dmin), fb(sumU))
	p.LineBound, _ = BoundOf(p.Mode, p.N, b.opts.Size, src.Up, dmin, sumU)
	p.RTT = maxRTT.Seconds()
	bottleneck := src.Up
	if dmin > 0 {
		bottleneck = min(bottleneck, dmin)
	}
	p.TCPStart = tcpStart(bottleneck, maxRTT)
	return nil
}

// pointNodes names the nodes of point p whose links the bench samples: the
// source, the downloaders and the liar.
func pointNodes(p Point) []string {
	names := []string{nodeSource}
	for k := 1; k <= p.N; k++ {
		names = append(names, "d"+strconv.Itoa(k))
	}
	if p.Scenario == ScenarioBadPeer && p.Mode == P2P {
		names = append(names, nodeLiar)
	}
	return names
}

// tcpStart estimates the time TCP's slow start takes to open its window
// from 10 segments (RFC 6928) to a path's bandwidth-delay product, the
// window doubling every round trip (RFC 5681).
func tcpStart(rate int64, rtt time.Duration) float64 {
	if rate <= 0 || rtt <= 0 {
		return 0
	}
	bdp := float64(rate) * rtt.Seconds()
	rounds := math.Ceil(math.Log2(bdp / (10 * 1448)))
	return max(rounds, 0) * rtt.Seconds()
}

func classNames(p *Profile) string {
	var s []string
	for _, c := range p.Classes {
		s = append(s, c.Name)
	}
	return strings.Join(s, ", ")
}

// cleanStale removes what killed runs left: namespaces of dead owners (with
// the processes left in them: netem.Cleanup) and work directories of dead
// bench processes, with any process still using one (a BitTorrent tracker
// drops its privileges, and with them the signal that ends it with the
// bench). It returns what it removed, "" if nothing.
func cleanStale() string {
	var parts []string
	if os.Geteuid() == 0 {
		if c, err := netem.Cleanup(netPrefix); err != nil {
			parts = append(parts, fmt.Sprintf("%v (cleanup failed: %v)", c, err))
		} else if len(c.Namespaces) > 0 {
			parts = append(parts, c.String())
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), workPrefix+"*"))
	re := regexp.MustCompile(`^` + workPrefix + `([0-9]+)-`)
	var removed []string
	killed := 0
	for _, dir := range dirs {
		m := re.FindStringSubmatch(filepath.Base(dir))
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if err := syscall.Kill(pid, 0); pid == os.Getpid() || !errors.Is(err, syscall.ESRCH) {
			continue // its bench runs (or may: not ours to judge)
		}
		killed += killUsing(dir)
		if os.RemoveAll(dir) == nil {
			removed = append(removed, dir)
		}
	}
	if len(removed) > 0 {
		s := fmt.Sprintf("%d work directories of dead runs (%s)", len(removed), strings.Join(removed, ", "))
		if killed > 0 {
			s += fmt.Sprintf(", and %d processes still using them", killed)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// killUsing kills every process whose command line names a path under dir.
func killUsing(dir string) int {
	procs, _ := os.ReadDir("/proc")
	n := 0
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), dir+"/") {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				n++
			}
		}
	}
	return n
}
