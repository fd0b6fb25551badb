package bench

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/zeebo/blake3"

	"github.com/sharefiles/share/cmd/share/internal/netem"
	"golang.org/x/sync/errgroup"

	"github.com/sharefiles/share/transfer"
)

// Scenarios.
const (
	ScenarioScaling = "scaling"  // one file to N downloaders, N = each of Options.Peers
	ScenarioFault   = "fault"    // the server or seed is killed mid-way, and comes back
	ScenarioBadPeer = "bad-peer" // a peer (or the server) serves corrupted chunks
	ScenarioChurn   = "churn"    // peers leave as soon as they finish
	// ScenarioSecurity: an outsider without the swarm key, a lying member,
	// and (variant "flood") a member flooding the others; a wrong token, a
	// stolen one revoked by a restart (security.go).
	// Loopback only.
	ScenarioSecurity = "security"
	ScenarioRTT      = "rtt" // N downloaders at several round-trip times (emulated networks only)
)

// AllScenarios in the order they run. "all" runs these but rtt, which
// needs an emulated network.
var AllScenarios = []string{ScenarioScaling, ScenarioFault, ScenarioBadPeer, ScenarioChurn, ScenarioSecurity, ScenarioRTT}

// RTTs are the round-trip times of the rtt scenario.
var RTTs = []time.Duration{0, 20 * time.Millisecond, 80 * time.Millisecond}

// Modes.
const (
	ClientServer = "client-server"
	P2P          = "p2p"
	BitTorrent   = "bittorrent" // the reference: aria2c leechers and seeder, opentracker
)

// Options configures a benchmark run. Binary, Size, Peers, UploadCap, Runs
// and Out are required; the rest have working zero values.
type Options struct {
	Binary        string        // the share binary to run
	Size          int64         // F: bytes of the file distributed
	Peers         []int         // the N of the scaling scenario
	UploadCap     int64         // u: bytes/s every process may upload (server, seed, peers)
	DownloadCap   int64         // d: bytes/s every downloader may receive; 0: none
	ChunkSize     int64         // 0: share's default for Size (transfer.ChunkSizeFor)
	Scenarios     []string      // nil: AllScenarios
	Modes         []string      // nil: both
	ScenarioPeers int           // the N of the fault, bad-peer and churn scenarios; 0: 8
	Downtime      time.Duration // fault: how long the server or seed stays down; 0: 10 s
	Runs          int           // repetitions of each point
	Out           string        // results directory
	Work          string        // where clusters keep their data; "": a temporary directory
	Progress      io.Writer     // live progress; nil: none
	Command       string        // the command line, for the report
	// Net is the emulated network (root only); nil: loopback, rates
	// capped by share's own --upload-limit and --download-limit.
	// UploadCap and DownloadCap are then unused: the links are the caps.
	Net        *Profile
	ServerLink string // class of the server's link; "": the seed's
	Reference  string // "bittorrent": run the BitTorrent reference too; "": none
	RTTPeers   int    // the N of the rtt scenario; 0: 16
	// Pace is, on an emulated network, the fraction of its link's uplink
	// (file bytes: line rate × netem.PayloadFraction) at which every P2P
	// uploader (share peer, aria2c) limits its own upload, below the
	// kernel's cap; 0: none. See DefaultPace.
	Pace float64
	// Trace has every peer and seed of a P2P point write its scheduling
	// events (share peer --trace) to Out/traces/POINT/NAME.jsonl.
	Trace bool
}

// Point is one run of one scenario in one mode.
type Point struct {
	Scenario string `json:"scenario"`
	Variant  string `json:"variant,omitempty"` // fault: "half" (killed when downloaders held half) or "replicated" (after the first complete copy); security: VariantFlood
	Mode     string `json:"mode"`
	N        int    `json:"n"`
	Run      int    `json:"run"`
	// Distribution is the time, in seconds from the start of the
	// downloads, until every one of the N had a verified copy; -1 if some
	// never did.
	Distribution float64   `json:"distribution_s"`
	Completions  []float64 `json:"completions_s"` // per downloader; -1: did not finish
	Finished     int       `json:"finished"`      // downloads that finished
	Identical    int       `json:"identical"`     // finished copies byte-identical to the source
	Corrupt      int       `json:"corrupt"`       // outputs that differ from the source (a finished copy, or one a failed download left)
	Bound        float64   `json:"bound_s"`
	BoundTerm    string    `json:"bound_term"`             // the term of the max that binds: "N·F/u_s", "F/d_min", "F/u_s", "N·F/(u_s+Σu_i)"
	LineBound    float64   `json:"line_bound_s,omitempty"` // emulated: the bound with the links' line rates (Bound uses their TCP payload rates)
	RTT          float64   `json:"rtt_s,omitempty"`        // emulated: the largest RTT between the source and a downloader
	TCPStart     float64   `json:"tcp_start_s,omitempty"`  // emulated: slow start from 10 segments to the bottleneck's window, in RTTs
	Ratio        float64   `json:"ratio"`                  // Distribution / Bound
	SourceUpload int64     `json:"source_upload_bytes"`
	PeerUpload   int64     `json:"peer_upload_bytes"`
	FromSource   int64     `json:"chunks_from_seed"`
	FromPeers    int64     `json:"chunks_from_peers"`
	BadChunks    int64     `json:"bad_chunks"`
	Refused      int       `json:"refused"` // downloads that stopped on a chunk failing verification
	Fault        *Fault    `json:"fault,omitempty"`
	Security     *Security `json:"security,omitempty"`
	Cost         *Cost     `json:"cost,omitempty"`
	Startup      *Startup  `json:"startup,omitempty"`  // P2P: how the cluster formed
	Requests     *Requests `json:"requests,omitempty"` // P2P: the chunk protocol's requests
	// Emulation is what the emulated network did (nil on loopback).
	Emulation *Emulation `json:"emulation,omitempty"`
	Error     string     `json:"error,omitempty"`
}

// Clean reports whether no output differs from the source and no error
// occurred: the point's figures stand.
func (p Point) Clean() bool { return p.Corrupt == 0 && p.Error == "" }

// Fault is what a fault run observed.
type Fault struct {
	KilledAt        float64 `json:"killed_at_s"`
	HeldAtKill      float64 `json:"held_at_kill"`            // fraction of the file the downloaders held, on average
	PendingAtKill   int     `json:"pending_at_kill"`         // downloads not yet finished when it was killed
	FinishedWithout int     `json:"finished_without_source"` // of those, finished while it was down
	RestartedAt     float64 `json:"restarted_at_s"`
	AfterReturn     float64 `json:"after_return_s"` // from the restart until all finished; -1 if not all did
}

// Summary is the median of a point's runs.
type Summary struct {
	Scenario string  `json:"scenario"`
	Variant  string  `json:"variant,omitempty"`
	Mode     string  `json:"mode"`
	N        int     `json:"n"`
	Runs     int     `json:"runs"`
	Median   float64 `json:"median_s"`
	Min      float64 `json:"min_s"`
	Max      float64 `json:"max_s"`
	Bound    float64 `json:"bound_s"`
	Ratio    float64 `json:"ratio"` // Median / Bound
	// Cost: medians of the runs' CPU seconds, and the largest peak RSS
	// of one process of each kind over the runs.
	CPU       float64 `json:"cpu_s"`
	CPUPerGiB float64 `json:"cpu_s_per_gib"`
	// DelayLineCPU is the median CPU seconds of the emulated network's
	// delay line (not in CPU: it is the emulation's, not share's).
	DelayLineCPU float64          `json:"delay_line_cpu_s,omitempty"`
	PeakRSS      map[string]int64 `json:"peak_rss_bytes,omitempty"`
	// RequestsPerChunk and BusyPerChunk are the medians of the runs'
	// chunk-protocol requests and busy answers per chunk received (P2P;
	// see Requests).
	RequestsPerChunk float64 `json:"requests_per_chunk,omitempty"`
	BusyPerChunk     float64 `json:"busy_per_chunk,omitempty"`
}

// Results is everything a run measured.
type Results struct {
	Command     string    `json:"command"`
	Machine     Machine   `json:"machine"`
	Started     time.Time `json:"started"`
	Elapsed     float64   `json:"elapsed_s"`
	Size        int64     `json:"size_bytes"`
	ChunkSize   int64     `json:"chunk_size_bytes"`
	UploadCap   int64     `json:"upload_cap_bytes_per_s"`
	DownloadCap int64     `json:"download_cap_bytes_per_s"`
	// Network: "loopback" or the profile's name; Enforcement says what
	// enforced the rates (and delays); Links lists each node's link.
	Network     string `json:"network"`
	Enforcement string `json:"enforcement"`
	// PayloadFraction is, on an emulated network, the share of a link's
	// line rate that carries file bytes (TCP payload of a full Ethernet
	// frame): the bounds' u_s, u_i and d_i are line rates times it.
	PayloadFraction float64 `json:"payload_fraction,omitempty"`
	// Pace is Options.Pace where it was used (P2P uploaders on an emulated
	// network); 0: none.
	Pace    float64           `json:"pace,omitempty"`
	Profile *Profile          `json:"profile,omitempty"`
	Links   map[string]string `json:"links,omitempty"`
	// ServerLink is the server's link where --server-link gave it one of
	// its own (Links' source is then the seed's).
	ServerLink string    `json:"server_link,omitempty"`
	Cleaned    string    `json:"cleaned,omitempty"` // what the start removed of killed runs
	Points     []Point   `json:"points"`
	Summaries  []Summary `json:"summaries"`
}

// Bound returns the lower bound on the distribution time of F bytes to n
// downloaders, every upload capped at u and every download at d (0: none):
// client-server max(N F/u_s, F/d_min); P2P max(F/u_s, F/d_min, N F/(u_s +
// sum u_i)), with u_s = u_i = u.
func Bound(mode string, n int, f, u, d int64) float64 {
	b, _ := BoundOf(mode, n, f, u, d, int64(n)*u)
	return b
}

// BoundOf returns the lower bound with each node's own capacities (Kurose
// and Ross, Computer Networking, 2.5): us the source's upload, dmin the
// smallest download of the n downloaders (0: none), sumU the sum of their
// uploads; and the term of the max that binds. Client-server: max(N F/u_s,
// F/d_min); P2P (and BitTorrent): max(F/u_s, F/d_min, N F/(u_s + Σu_i)).
func BoundOf(mode string, n int, f, us, dmin, sumU int64) (float64, string) {
	fl := float64(f)
	type term struct {
		v    float64
		name string
	}
	var ts []term
	if mode == ClientServer {
		ts = append(ts, term{float64(n) * fl / float64(us), "N·F/u_s"})
	} else {
		ts = append(ts, term{fl / float64(us), "F/u_s"}, term{float64(n) * fl / float64(us+sumU), "N·F/(u_s+Σu_i)"})
	}
	if dmin > 0 {
		ts = append(ts, term{fl / float64(dmin), "F/d_min"})
	}
	best := ts[0]
	for _, t := range ts[1:] {
		if t.v > best.v*(1+1e-9) {
			best = t
		}
	}
	return best.v, best.name
}

// bencher runs the scenarios of one benchmark.
type bencher struct {
	opts    Options
	work    string
	src     string // the file distributed
	name    string
	srcHash [32]byte
	res     *Results
	prog    *progress
	usage   *meter // the cost of the point being run

	// An emulated network (nil: loopback), its nodes by name, and an
	// HTTP client per node for the APIs of the daemons on it.
	net   *netem.Network
	nodes map[string]*netem.Node
	// clients is filled by the goroutines that start a cluster's
	// daemons at once (startCluster), under clientsMu.
	clientsMu sync.Mutex
	clients   map[string]*http.Client
	torrent   *torrent  // the BitTorrent reference's torrent, made once
	started   time.Time // when the point's downloads started
}

// Run runs the benchmark and writes its results to opts.Out. With an
// emulated network it first removes what killed runs left (namespaces of
// dead owners, their work directories and processes) and says so in
// Results.Cleaned; its own network is removed on return, also when ctx is
// cancelled (Ctrl-C) or a point fails.
func Run(ctx context.Context, opts Options) (*Results, error) {
	if opts.Binary == "" || opts.Size <= 0 || len(opts.Peers) == 0 || opts.UploadCap <= 0 || opts.Runs < 1 || opts.Out == "" {
		return nil, errors.New("bench: Binary, Size, Peers, UploadCap, Runs and Out are required")
	}
	opts.ScenarioPeers = cmp.Or(opts.ScenarioPeers, 8)
	opts.RTTPeers = cmp.Or(opts.RTTPeers, 16)
	opts.Downtime = cmp.Or(opts.Downtime, 10*time.Second)
	opts.ChunkSize = cmp.Or(opts.ChunkSize, transfer.ChunkSizeFor(opts.Size))
	if opts.Scenarios == nil {
		opts.Scenarios = AllScenarios[:len(AllScenarios)-1]
		if opts.Net != nil {
			opts.Scenarios = slices.DeleteFunc(slices.Clone(AllScenarios), func(s string) bool { return s == ScenarioSecurity })
		}
	}
	if opts.Modes == nil {
		opts.Modes = []string{ClientServer, P2P}
	}
	for _, m := range opts.Modes {
		if m != ClientServer && m != P2P {
			return nil, fmt.Errorf("bench: unknown mode %q (want %s or %s)", m, ClientServer, P2P)
		}
	}
	switch opts.Reference {
	case "":
	case BitTorrent:
		if err := checkBitTorrent(); err != nil {
			return nil, err
		}
		opts.Modes = append(slices.Clone(opts.Modes), BitTorrent)
	default:
		return nil, fmt.Errorf("bench: unknown reference %q (want %s)", opts.Reference, BitTorrent)
	}
	for _, s := range opts.Scenarios {
		if !slices.Contains(AllScenarios, s) {
			return nil, fmt.Errorf("bench: unknown scenario %q (want %s)", s, strings.Join(AllScenarios, ", "))
		}
		if s == ScenarioRTT && opts.Net == nil {
			return nil, fmt.Errorf("bench: the rtt scenario needs an emulated network (--net lan, dsl, mixed or a file)")
		}
		if s == ScenarioSecurity && opts.Net != nil {
			return nil, fmt.Errorf("bench: the security scenario runs on loopback only (--net loopback)")
		}
	}
	if opts.Net != nil && opts.ServerLink != "" {
		if _, ok := opts.Net.Class(opts.ServerLink); !ok {
			return nil, fmt.Errorf("bench: --server-link %q: the profile has no such class (it has %s)", opts.ServerLink, classNames(opts.Net))
		}
	}
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return nil, err
	}
	b := &bencher{opts: opts, name: "bench.bin"}
	b.res = &Results{
		Command: opts.Command, Machine: readMachine(opts.Binary), Started: time.Now().UTC(),
		Size: opts.Size, ChunkSize: opts.ChunkSize, UploadCap: opts.UploadCap, DownloadCap: opts.DownloadCap,
		Network: NetLoopback, Enforcement: "share's own --upload-limit and --download-limit (token buckets in each process)",
	}
	b.res.Cleaned = cleanStale()
	work := opts.Work
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("", fmt.Sprintf("%s%d-", workPrefix, os.Getpid())); err != nil {
			return nil, err
		}
		defer os.RemoveAll(work)
	}
	b.work = work
	if opts.Net != nil {
		if err := b.startNetwork(); err != nil {
			return nil, err
		}
		defer b.net.Close()
	}
	b.prog = newProgress(opts.Progress, b.plan())
	defer b.prog.close()
	if b.res.Cleaned != "" {
		b.prog.note("cleaned what killed runs left: " + b.res.Cleaned)
	}
	if err := b.makeSource(); err != nil {
		return nil, err
	}
	for _, sc := range opts.Scenarios {
		for r := 1; r <= opts.Runs; r++ {
			for _, p := range b.points(sc) {
				if ctx.Err() != nil {
					return b.res, ctx.Err()
				}
				p.Run = r
				b.prog.begin(p)
				pt := b.runPoint(ctx, p)
				b.prog.end(pt)
				b.res.Points = append(b.res.Points, pt)
			}
		}
	}
	b.res.Elapsed = time.Since(b.res.Started).Seconds()
	b.res.Summaries = summarize(b.res.Points)
	return b.res, nil
}

// points lists the points of a scenario in the modes asked for, for one run.
func (b *bencher) points(sc string) []Point {
	var ps []Point
	for _, p := range b.allPoints(sc) {
		if slices.Contains(b.opts.Modes, p.Mode) {
			ps = append(ps, p)
		}
	}
	return ps
}

func (b *bencher) allPoints(sc string) []Point {
	n := b.opts.ScenarioPeers
	switch sc {
	case ScenarioScaling:
		var ps []Point
		for _, mode := range []string{ClientServer, P2P, BitTorrent} {
			for _, n := range b.opts.Peers {
				ps = append(ps, Point{Scenario: sc, Mode: mode, N: n})
			}
		}
		return ps
	case ScenarioRTT:
		var ps []Point
		for _, rtt := range RTTs {
			for _, mode := range []string{ClientServer, P2P, BitTorrent} {
				ps = append(ps, Point{Scenario: sc, Variant: rttVariant(rtt), Mode: mode, N: b.opts.RTTPeers})
			}
		}
		return ps
	case ScenarioFault:
		return []Point{
			{Scenario: sc, Variant: "half", Mode: ClientServer, N: n},
			{Scenario: sc, Variant: "half", Mode: P2P, N: n},
			{Scenario: sc, Variant: "replicated", Mode: P2P, N: n},
		}
	case ScenarioBadPeer:
		return []Point{{Scenario: sc, Mode: ClientServer, N: n}, {Scenario: sc, Mode: P2P, N: n}}
	case ScenarioChurn:
		return []Point{{Scenario: sc, Mode: P2P, N: n}}
	case ScenarioSecurity:
		return []Point{{Scenario: sc, Mode: ClientServer, N: n}, {Scenario: sc, Mode: P2P, N: n}, {Scenario: sc, Variant: VariantFlood, Mode: P2P, N: n}}
	}
	return nil
}

func (b *bencher) plan() int {
	total := 0
	for _, sc := range b.opts.Scenarios {
		total += len(b.points(sc)) * b.opts.Runs
	}
	return total
}

// makeSource writes the F-byte file every scenario distributes.
func (b *bencher) makeSource() error {
	b.src = filepath.Join(b.work, "src", b.name)
	if err := os.MkdirAll(filepath.Dir(b.src), 0o755); err != nil {
		return err
	}
	f, err := os.Create(b.src)
	if err != nil {
		return err
	}
	defer f.Close()
	var seed [32]byte
	binaryPut(seed[:], uint64(time.Now().UnixNano()))
	h := blake3.New()
	if _, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(rand.NewChaCha8(seed), b.opts.Size)); err != nil {
		return err
	}
	h.Sum(b.srcHash[:0])
	return f.Close()
}

func binaryPut(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (8 * i))
	}
}

// cluster is one fresh set of daemons for one point.
type cluster struct {
	b      *bencher
	mode   string
	n      int // downloaders
	dir    string
	source *daemon   // the server, or the seed
	peers  []*daemon // P2P: the downloaders' peers
	extra  []*daemon // P2P: other peers (a liar, an outsider)
	srcArg []string  // how the source was started, to restart it
	key    string    // P2P security: the members' swarm key file
	trace  string    // directory of the peers' --trace files; "": none
	// P2P: when the peers were launched (the seed up), and how long until
	// every one had printed its addresses and API.
	launched time.Time
	started  time.Duration
}

// command returns the command that runs the share binary with args on the
// node of the process called name (loopback: this machine).
func (c *cluster) command(name string, args ...string) *exec.Cmd {
	if c.b.net != nil {
		return c.b.nodes[nodeOf(name)].Command(c.b.opts.Binary, args...)
	}
	return exec.Command(c.b.opts.Binary, args...)
}

// start starts a daemon of the cluster on its node.
func (c *cluster) start(name, kind, data string, args []string) (*daemon, error) {
	d, err := startDaemon(c.command(name, args...), c.b.usage, kind, name, data)
	if err != nil {
		return nil, err
	}
	if c.b.net != nil {
		d.http = c.b.httpClient(nodeOf(name))
	}
	return d, nil
}

// listenIP is the address a daemon of the cluster listens on: its node's.
func (c *cluster) listenIP(name string) string {
	if c.b.net != nil {
		return c.b.nodes[nodeOf(name)].Addr().String()
	}
	return "127.0.0.1"
}

// cancelled is a context that is done: waiting on it kills.
var cancelled = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// capArgs are the rate caps share enforces itself: on loopback only (an
// emulated network's links are the caps).
func (b *bencher) capArgs() []string {
	if b.net != nil {
		return nil
	}
	args := []string{"--upload-limit", strconv.FormatInt(b.opts.UploadCap, 10)}
	if b.opts.DownloadCap > 0 {
		args = append(args, "--download-limit", strconv.FormatInt(b.opts.DownloadCap, 10))
	}
	return args
}

// startCluster starts a server, or a seed and n peers bootstrapped off it.
func (b *bencher) startCluster(p Point) (*cluster, error) {
	c := &cluster{b: b, mode: p.Mode, n: p.N, dir: filepath.Join(b.work, fmt.Sprintf("%s%s-%s-n%d-r%d", p.Scenario, p.Variant, p.Mode, p.N, p.Run))}
	if b.opts.Trace && p.Mode == P2P {
		c.trace = filepath.Join(b.opts.Out, "traces", pointName(p))
		if err := os.MkdirAll(c.trace, 0o755); err != nil {
			return nil, err
		}
	}
	if p.Mode == ClientServer {
		data := filepath.Join(c.dir, "server")
		c.srcArg = append([]string{"serve", "--data", data, "--listen", c.listenIP("server") + ":0", "--log-level", "warn", "--grace", "1s"}, b.capArgs()...)
		d, err := c.start("server", KindSource, data, c.srcArg)
		if err != nil {
			return nil, err
		}
		c.source = d
		c.srcArg[4] = strings.TrimPrefix(d.api, "http://") // restart on the same address
		return c, nil
	}
	if p.Scenario == ScenarioSecurity {
		var err error
		if c.key, err = swarmKey(c.dir); err != nil {
			return nil, err
		}
	}
	seed, err := c.startPeer("seed", nil)
	if err != nil {
		return nil, err
	}
	c.source = seed
	c.srcArg[4] = tcpAddr(seed.addrs)
	c.srcArg[6] = strings.TrimPrefix(seed.api, "http://")
	c.peers = make([]*daemon, p.N)
	c.launched = time.Now()
	var g errgroup.Group
	for k := range p.N {
		g.Go(func() error {
			d, err := c.startPeer(fmt.Sprintf("peer%d", k+1), []string{"--bootstrap", seed.addrs[0]})
			c.peers[k] = d
			return err
		})
	}
	if err := g.Wait(); err != nil {
		c.stop()
		return nil, err
	}
	c.started = time.Since(c.launched)
	return c, nil
}

// startPeer starts a peer of the cluster, TCP only (QUIC would only cost
// CPU on loopback; see node.tcpFirst).
func (c *cluster) startPeer(name string, extra []string) (*daemon, error) {
	data := filepath.Join(c.dir, name)
	args := append([]string{"peer", "--data", data, "--listen", "/ip4/" + c.listenIP(name) + "/tcp/0", "--api", "127.0.0.1:0", "--log-level", "warn", "--grace", "1s"}, c.b.capArgs()...)
	args = append(args, extra...)
	if c.key != "" {
		args = append(args, "--swarm-key", c.key)
	}
	if c.trace != "" {
		args = append(args, "--trace", filepath.Join(c.trace, name+".jsonl"))
	}
	if up := c.b.pacedUpload(nodeOf(name)); up > 0 {
		args = append(args, "--upload-limit", strconv.FormatInt(up, 10))
	}
	if name == "seed" {
		c.srcArg = slices.Clone(args)
	}
	kind := KindPeer
	if name == "seed" {
		kind = KindSource
	}
	return c.start(name, kind, data, args)
}

// tcpAddr returns the TCP listen address (/ip4/.../tcp/PORT) of a peer.
func tcpAddr(addrs []string) string {
	for _, a := range addrs {
		if i := strings.Index(a, "/p2p/"); i > 0 && strings.Contains(a, "/tcp/") {
			return a[:i]
		}
	}
	return "/ip4/127.0.0.1/tcp/0"
}

// restartSource starts the server or seed again, on its data and address.
func (c *cluster) restartSource() error {
	d, err := c.start(c.source.name, KindSource, c.source.data, c.srcArg)
	if err != nil {
		return err
	}
	c.source = d
	return nil
}

func (c *cluster) stop() {
	var wg sync.WaitGroup
	for _, d := range append(append([]*daemon{c.source}, c.peers...), c.extra...) {
		if d != nil {
			wg.Go(d.stop)
		}
	}
	wg.Wait()
}

// put adds the source file on d and, for a peer, waits until it is
// announced on the DHT, so every download starts from the same state.
func (c *cluster) put(ctx context.Context, d *daemon) (string, error) {
	cmd := c.command(d.name, "put", "--chunk-size", strconv.FormatInt(c.b.opts.ChunkSize, 10), c.b.src)
	id, err := shareCmd(cmd, c.b.usage, d, c.dir)
	if err != nil {
		return "", err
	}
	if c.mode == P2P {
		err = waitStatus(ctx, d, func(st status) bool {
			for _, s := range st.Shares {
				if s.ID == id && !s.Announced.IsZero() {
					return true
				}
			}
			return false
		})
	}
	return id, err
}

// Startup is how a P2P point's cluster formed before its downloads: the seed
// is started first; then its N peers (and any extra: a liar) are launched
// at once, bootstrapping off the seed's DHT. Times are seconds since that
// launch. (Issue 9's "start-up at scale": 128 peers on one machine ready in
// seconds.)
type Startup struct {
	Peers   int     `json:"peers"`     // peers launched
	Started float64 `json:"started_s"` // every peer printed its addresses and API (its host and API are up)
	Ready   float64 `json:"ready_s"`   // every peer's `share status` answered with a routing table holding another peer
	// TableMedian and TableMin are the sizes of the peers' DHT routing
	// tables right after the last peer was ready.
	TableMedian int `json:"routing_table_median"`
	TableMin    int `json:"routing_table_min"`
	// TableAfter is the median size after the downloads (the peers that
	// were still up): lookups and the swarm's traffic fill the tables.
	TableAfter int `json:"routing_table_after_median,omitempty"`
}

// Requests are the chunk-protocol requests the seed and the peers answered
// during a P2P point (share_peer_requests_served_total and
// share_peer_chunk_requests_busy_total, from the daemons still up at its
// end; so only in the scaling and rtt scenarios, where none is killed,
// stopped or flooded): each is two messages, a request and its answer.
// Divided by the chunks the downloaders received, they say what the
// protocol costs per chunk. The figure moves with the swarm's timing as much as CPU time does
// (two runs of the same N = 64 point: 6.41 and 7.78 requests per chunk,
// the have requests 13347 and 17217), so compare medians of several runs.
type Requests struct {
	Manifest int64 `json:"manifest"`
	Have     int64 `json:"have"`  // have requests and long polls
	Chunk    int64 `json:"chunk"` // chunk requests, busy ones included
	Busy     int64 `json:"busy"`  // chunk requests answered busy
}

// PerChunk returns the requests (every op) and the busy answers per chunk
// received, for chunks received; zeros if none was.
func (r *Requests) PerChunk(chunks int64) (requests, busy float64) {
	if r == nil || chunks <= 0 {
		return 0, 0
	}
	return float64(r.Manifest+r.Have+r.Chunk) / float64(chunks), float64(r.Busy) / float64(chunks)
}

// readyWait bounds waitReady: 30 s, and a quarter of a second more per
// peer, for a large cluster on two cores.
func readyWait(peers int) time.Duration {
	return 30*time.Second + time.Duration(peers)*250*time.Millisecond
}

// status is the part of GET /v1/status the harness reads.
type status struct {
	RoutingTable int `json:"routing_table"`
	Shares       []struct {
		ID        string    `json:"id"`
		Announced time.Time `json:"announced"`
	} `json:"shares"`
}

// waitStatus polls d's status until ok holds, for up to 30 s.
func waitStatus(ctx context.Context, d *daemon, ok func(status) bool) error {
	_, err := pollStatus(ctx, d, ok, 30*time.Second)
	return err
}

// pollStatus polls d's status until ok holds, for up to limit, and returns
// the status that did. The polls start 10 ms apart and back off to
// statusPollMax: a cluster of 128 starting peers polled every 20 ms took
// 6400 status requests a second from the CPU the peers start with.
func pollStatus(ctx context.Context, d *daemon, ok func(status) bool, limit time.Duration) (status, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	wait := 10 * time.Millisecond
	for {
		var st status
		if err := d.getJSON(ctx, "/v1/status", &st); err == nil && ok(st) {
			return st, nil
		}
		select {
		case <-time.After(wait):
			wait = min(2*wait, statusPollMax)
		case <-ctx.Done():
			return status{}, fmt.Errorf("%s: not ready: %w", d.name, ctx.Err())
		}
	}
}

// statusPollMax is the longest pause between two polls of a daemon's status.
const statusPollMax = 200 * time.Millisecond

// waitReady waits until every peer knows another through the DHT, and
// returns how the cluster formed (nil for a server).
func (c *cluster) waitReady(ctx context.Context) (*Startup, error) {
	if c.mode != P2P {
		return nil, nil
	}
	peers := append(slices.Clone(c.peers), c.extra...)
	su := &Startup{Peers: len(peers), Started: c.started.Seconds()}
	var g errgroup.Group
	for _, d := range peers {
		g.Go(func() error {
			_, err := pollStatus(ctx, d, func(st status) bool { return st.RoutingTable > 0 }, readyWait(len(peers)))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	su.Ready = time.Since(c.launched).Seconds()
	sizes := make([]int, len(peers))
	for k, d := range peers {
		g.Go(func() error {
			var st status
			err := d.getJSON(ctx, "/v1/status", &st)
			sizes[k] = st.RoutingTable
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	slices.Sort(sizes)
	su.TableMin, su.TableMedian = sizes[0], sizes[len(sizes)/2]
	return su, nil
}

// downloads starts a `share get` for each of the N downloaders.
func (c *cluster) downloads(id string, start time.Time, stall time.Duration) ([]*getRun, error) {
	gets := make([]*getRun, c.n)
	for k := range c.n {
		out := filepath.Join(c.dir, "out", strconv.Itoa(k+1), c.b.name)
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return nil, err
		}
		args := []string{"--stall-timeout", stall.String()}
		d, where := c.source, fmt.Sprintf("client%d", k+1)
		if c.mode == P2P {
			d, where = c.peers[k], c.peers[k].name
		} else if c.b.opts.DownloadCap > 0 && c.b.net == nil {
			args = append(args, "--download-limit", strconv.FormatInt(c.b.opts.DownloadCap, 10))
		}
		g, err := startGet(c.command(where, append([]string{"get", id, "-o", out}, args...)...), c.b.usage, d, k+1, out, start)
		if err != nil {
			for _, g := range gets[:k] {
				g.wait(cancelled)
			}
			return nil, err
		}
		gets[k] = g
	}
	return gets, nil
}

// runPoint runs one point, never failing: errors go into the point.
func (b *bencher) runPoint(ctx context.Context, p Point) Point {
	p.Distribution = -1
	b.usage = newMeter()
	b.started = time.Time{}
	var err error
	var sampler *linkSampler
	if b.net != nil {
		if err = b.linkPoint(&p); err == nil {
			sampler = b.startSampler(pointNodes(p))
		}
	} else {
		p.Bound, p.BoundTerm = BoundOf(p.Mode, p.N, b.opts.Size, b.opts.UploadCap, b.opts.DownloadCap, int64(p.N)*b.opts.UploadCap)
	}
	switch {
	case err != nil:
	case p.Mode == BitTorrent:
		err = b.bittorrent(ctx, &p)
	case p.Scenario == ScenarioScaling || p.Scenario == ScenarioChurn || p.Scenario == ScenarioRTT:
		err = b.distribute(ctx, &p)
	case p.Scenario == ScenarioFault:
		err = b.fault(ctx, &p)
	case p.Scenario == ScenarioBadPeer:
		err = b.badPeer(ctx, &p)
	case p.Scenario == ScenarioSecurity:
		err = b.security(ctx, &p)
	}
	if err != nil {
		p.Error = err.Error()
	}
	if sampler != nil {
		span := time.Duration(slices.Max(append(p.Completions, p.Distribution, 0)) * float64(time.Second))
		if b.started.IsZero() {
			b.started, span = time.Now(), 0
		}
		p.Emulation = sampler.finish(b.started, span, samplesFile(b.opts.Out, p))
	}
	if p.Distribution > 0 && p.Bound > 0 {
		p.Ratio = p.Distribution / p.Bound
	}
	p.Cost = b.usage.cost(int64(p.Finished) * b.opts.Size) // every process of the point has exited
	return p
}

// stallFor is the --stall-timeout of a point's downloads: a minute, or the
// bound if longer. Where N clients share one uplink, a client can wait long
// for its first byte: on --net dsl at N = 64 (128 connections into a 10
// Mbit/s link that drops from its queue), a client whose connections all
// lost packets back to back waited more than a minute (TCP's retransmission
// timeout doubles from 1 s), and a download that gives up is no figure.
func stallFor(bound float64) time.Duration {
	return max(time.Minute, time.Duration(bound*float64(time.Second)))
}

// timeout bounds one point's downloads.
func (b *bencher) timeout(bound float64) time.Duration {
	return time.Duration(3*bound*float64(time.Second)) + 60*time.Second + b.opts.Downtime
}

// setup starts a cluster with the share on its source, ready to download.
func (b *bencher) setup(ctx context.Context, p *Point) (*cluster, string, error) {
	c, err := b.startCluster(*p)
	if err != nil {
		return nil, "", err
	}
	if p.Startup, err = c.waitReady(ctx); err != nil {
		c.stop()
		return nil, "", err
	}
	id, err := c.put(ctx, c.source)
	if err != nil {
		c.stop()
		return nil, "", err
	}
	return c, id, nil
}

// distribute runs the scaling (or, with p.Scenario == ScenarioChurn, the churn)
// scenario: every downloader gets the file; with churn each peer leaves as
// soon as its download is done.
func (b *bencher) distribute(ctx context.Context, p *Point) error {
	c, id, err := b.setup(ctx, p)
	if err != nil {
		return err
	}
	defer c.stop()
	start := time.Now()
	b.started = start
	gets, err := c.downloads(id, start, stallFor(p.Bound))
	if err != nil {
		return err
	}
	b.prog.track(gets, start)
	wctx, cancel := context.WithTimeout(ctx, b.timeout(p.Bound))
	defer cancel()
	var wg sync.WaitGroup
	for k, g := range gets {
		wg.Go(func() {
			if g.wait(wctx) == nil && p.Scenario == ScenarioChurn {
				c.peers[k].stop() // it leaves at once: it serves nobody after its own download
			}
		})
	}
	wg.Wait()
	return b.collect(ctx, c, p, gets)
}

// collect fills a point from its downloads, outputs and metrics.
func (b *bencher) collect(ctx context.Context, c *cluster, p *Point, gets []*getRun) error {
	var errs []error
	for _, g := range gets {
		if g.err != nil {
			p.Completions = append(p.Completions, -1)
			errs = append(errs, g.err)
			if strings.Contains(g.err.Error(), "failed verification") {
				p.Refused++
			}
			if _, err := os.Stat(g.out); err == nil {
				p.Corrupt++ // a failed download must not leave its output
			}
			continue
		}
		p.Completions = append(p.Completions, g.finished.Seconds())
		p.Finished++
		if b.identical(g.out) {
			p.Identical++
		} else {
			p.Corrupt++
			errs = append(errs, fmt.Errorf("node %d: copy differs from the source", g.node))
		}
	}
	if p.Finished == len(gets) {
		p.Distribution = slices.Max(p.Completions)
	}
	b.meter(ctx, c, p)
	if len(errs) > 0 && p.Scenario != ScenarioBadPeer {
		return errors.Join(errs...)
	}
	return nil
}

// identical reports whether the file at path is the source, byte for byte.
func (b *bencher) identical(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	h := blake3.New()
	if _, err := io.Copy(h, f); err != nil {
		return false
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum == b.srcHash
}

// meter reads the upload and chunk counters of the cluster's daemons.
// Daemons that were stopped (churn) or killed lose theirs; the point then
// reports what the live ones counted.
func (b *bencher) meter(ctx context.Context, c *cluster, p *Point) {
	read := func(d *daemon) metrics {
		if d == nil || !d.alive() {
			return metrics{}
		}
		m, err := d.metrics(ctx)
		if err != nil {
			return metrics{}
		}
		return m
	}
	if c.mode == ClientServer {
		p.SourceUpload = int64(read(c.source)["share_bytes_served_total"])
		return
	}
	src := read(c.source)
	p.SourceUpload = int64(src.sum("share_peer_bytes_sent_total"))
	var reqs Requests
	count := func(m metrics) {
		reqs.Manifest += int64(m["share_peer_requests_served_total|op=manifest"])
		reqs.Have += int64(m["share_peer_requests_served_total|op=have"])
		reqs.Chunk += int64(m["share_peer_requests_served_total|op=chunk"])
		reqs.Busy += int64(m.sum("share_peer_chunk_requests_busy_total"))
	}
	count(src)
	var tables []int
	for _, d := range c.peers {
		m := read(d)
		count(m)
		if v, ok := m["share_dht_routing_table_size|*"]; ok {
			tables = append(tables, int(v))
		}
		p.PeerUpload += int64(m.sum("share_peer_bytes_sent_total"))
		p.FromSource += int64(m["share_peer_chunks_received_total|from=seed"])
		p.FromPeers += int64(m["share_peer_chunks_received_total|from=peer"])
		p.BadChunks += int64(m.sum("share_peer_bad_chunks_total"))
	}
	if c.mode == P2P && (p.Scenario == ScenarioScaling || p.Scenario == ScenarioRTT) {
		p.Requests = &reqs // not where daemons are killed, stopped or flooded
	}
	if p.Startup != nil && len(tables) > 0 {
		slices.Sort(tables)
		p.Startup.TableAfter = tables[len(tables)/2]
	}
}

// held returns the fraction of the file the downloaders hold on average,
// from the source's and the peers' metrics.
func (c *cluster) held(ctx context.Context, n int) float64 {
	total := float64(n) * float64(c.b.opts.Size)
	if c.mode == ClientServer {
		m, err := c.source.metrics(ctx)
		if err != nil {
			return 0
		}
		return m["share_bytes_served_total"] / total
	}
	var got float64
	for _, d := range c.peers {
		if m, err := d.metrics(ctx); err == nil {
			got += m.sum("share_peer_bytes_received_total")
		}
	}
	return got / total
}

// fault runs the fault scenario: the server or seed is killed (SIGKILL)
// when the downloaders hold half the file on average ("half") or when the
// first of them has a complete copy ("replicated"), stays down for
// Downtime, and comes back on the same address and data.
func (b *bencher) fault(ctx context.Context, p *Point) error {
	c, id, err := b.setup(ctx, p)
	if err != nil {
		return err
	}
	defer c.stop()
	start := time.Now()
	b.started = start
	stall := b.opts.Downtime + time.Minute
	gets, err := c.downloads(id, start, stall)
	if err != nil {
		return err
	}
	b.prog.track(gets, start)
	f := &Fault{AfterReturn: -1}
	p.Fault = f
	wctx, cancel := context.WithTimeout(ctx, b.timeout(p.Bound))
	defer cancel()
	// Wait for the moment to kill.
	for {
		if p.Variant == "half" {
			if f.HeldAtKill = c.held(wctx, p.N); f.HeldAtKill >= 0.5 {
				break
			}
		} else if slices.ContainsFunc(gets, func(g *getRun) bool { return !g.running() }) {
			f.HeldAtKill = c.held(wctx, p.N)
			break
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-wctx.Done():
			return fmt.Errorf("fault: the kill point never came: %w", wctx.Err())
		}
	}
	srcUp := int64(0)
	if m, err := c.source.metrics(wctx); err == nil {
		srcUp = int64(m["share_bytes_served_total"] + m.sum("share_peer_bytes_sent_total"))
	}
	c.source.kill()
	f.KilledAt = time.Since(start).Seconds()
	for _, g := range gets {
		if g.running() {
			f.PendingAtKill++
		}
	}
	select {
	case <-time.After(b.opts.Downtime):
	case <-wctx.Done():
	}
	for _, g := range gets {
		if !g.running() && g.err == nil && g.finished.Seconds() > f.KilledAt {
			f.FinishedWithout++
		}
	}
	if err := c.restartSource(); err != nil {
		return err
	}
	f.RestartedAt = time.Since(start).Seconds()
	for _, g := range gets {
		g.wait(wctx)
	}
	err = b.collect(ctx, c, p, gets)
	p.SourceUpload += srcUp // the killed process's counters died with it
	if p.Distribution > 0 {
		f.AfterReturn = p.Distribution - f.RestartedAt
		if f.AfterReturn < 0 {
			f.AfterReturn = 0 // all finished while it was down
		}
	}
	return err
}

// badPeer runs the hostile scenario. P2P: one extra peer holds the file but
// its stored copy is corrupted on disk (every chunk), so it serves only bad
// chunks; every download must still be byte-identical. Client-server: one
// chunk is corrupted on the server's disk; every client must refuse it.
func (b *bencher) badPeer(ctx context.Context, p *Point) error {
	c, id, err := b.setup(ctx, p)
	if err != nil {
		return err
	}
	defer c.stop()
	bad := c.source
	every := int64(1) // a liar: every chunk it serves is bad
	if p.Mode == P2P {
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
		bad = liar
	} else {
		every = b.opts.Size/b.opts.ChunkSize + 1 // one chunk: the first
	}
	if err := corrupt(filepath.Join(bad.data, "shares", id, "data", b.name), b.opts.ChunkSize, every); err != nil {
		return err
	}
	start := time.Now()
	b.started = start
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
	err = b.collect(ctx, c, p, gets)
	if p.Mode == ClientServer && p.Refused != p.N {
		return fmt.Errorf("bad-peer: %d of %d clients refused the corrupted chunk: %v", p.Refused, p.N, err)
	}
	if p.Mode == P2P && p.Identical != p.N {
		return fmt.Errorf("bad-peer: %d of %d downloads finished identical: %v", p.Finished, p.N, err)
	}
	return nil
}

// corrupt damages a stored copy in place: a few bytes in every every-th
// chunk, as disk rot or a malicious peer would.
func corrupt(path string, chunkSize, every int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("corrupt the stored copy: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	for off := int64(0); off < fi.Size(); off += every * chunkSize {
		if _, err := f.WriteAt([]byte("corrupted by share bench"), off+chunkSize/3); err != nil {
			return err
		}
	}
	return f.Sync()
}

// summarize computes the median of each point's runs.
func summarize(points []Point) []Summary {
	type key struct {
		sc, variant, mode string
		n                 int
	}
	groups := map[key][]Point{}
	var order []key
	for _, p := range points {
		k := key{p.Scenario, p.Variant, p.Mode, p.N}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], p)
	}
	var out []Summary
	for _, k := range order {
		ps := groups[k]
		var ds []float64
		for _, p := range ps {
			if p.Distribution > 0 {
				ds = append(ds, p.Distribution)
			}
		}
		s := Summary{Scenario: k.sc, Variant: k.variant, Mode: k.mode, N: k.n, Runs: len(ps), Bound: ps[0].Bound, Median: -1, Min: -1, Max: -1}
		if len(ds) == len(ps) {
			slices.Sort(ds)
			s.Median, s.Min, s.Max = median(ds), ds[0], ds[len(ds)-1]
			s.Ratio = s.Median / s.Bound
		}
		var cpu, perGiB, dl, reqs, busy []float64
		for _, p := range ps {
			if p.Emulation != nil {
				dl = append(dl, p.Emulation.DelayLineCPU)
			}
			if r, b := p.Requests.PerChunk(p.FromSource + p.FromPeers); r > 0 {
				reqs, busy = append(reqs, r), append(busy, b)
			}
			if p.Cost == nil {
				continue
			}
			cpu = append(cpu, p.Cost.CPU)
			if p.Cost.PerGiB > 0 {
				perGiB = append(perGiB, p.Cost.PerGiB)
			}
			for _, kc := range p.Cost.Kinds {
				if s.PeakRSS == nil {
					s.PeakRSS = map[string]int64{}
				}
				s.PeakRSS[kc.Kind] = max(s.PeakRSS[kc.Kind], kc.PeakRSS)
			}
		}
		if len(cpu) > 0 {
			slices.Sort(cpu)
			s.CPU = median(cpu)
		}
		if len(perGiB) > 0 {
			slices.Sort(perGiB)
			s.CPUPerGiB = median(perGiB)
		}
		if len(dl) > 0 {
			slices.Sort(dl)
			s.DelayLineCPU = median(dl)
		}
		if len(reqs) > 0 {
			slices.Sort(reqs)
			slices.Sort(busy)
			s.RequestsPerChunk, s.BusyPerChunk = median(reqs), median(busy)
		}
		out = append(out, s)
	}
	return out
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n == 0 {
		return math.NaN()
	}
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// getJSON reads an API path of d into v.
func (d *daemon) getJSON(ctx context.Context, path string, v any) error {
	resp, err := d.get(ctx, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, io.LimitReader(resp.Body, 16<<20)); err != nil {
		return err
	}
	return json.Unmarshal(buf.Bytes(), v)
}
