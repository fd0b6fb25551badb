package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/sharefiles/share/cmd/share/internal/bench"
	"github.com/sharefiles/share/transfer"
)

type benchOptions struct {
	quick         bool
	size          string
	peers         string
	uploadLimit   transfer.Rate
	downloadLimit transfer.Rate
	chunkSize     string
	scenario      string
	mode          string
	scenarioPeers int
	downtime      time.Duration
	runs          int
	out           string
	net           string
	serverLink    string
	reference     string
	trace         bool
	pace          float64
	netSeed       uint64
}

func newBenchCmd(stdout, stderr io.Writer) *cobra.Command {
	o := benchOptions{uploadLimit: 8 << 20}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure client-server against peer-to-peer on the same work",
		Long: `Measure share's two modes on the same work with real processes: one server
or seed distributes an F-byte file to N downloaders. Scenarios: scaling (N =
each of --peers), fault (the server or seed is killed mid-way), bad-peer
(corrupted chunks), churn (peers leave when done), security (loopback only: an
outsider without the swarm key, a lying member, a member flooding the others;
a wrong and a revoked token), rtt (N=16 at RTT 0, 20 and 80 ms; emulated
networks only). Prints a table and writes results.json,
results.csv, chart.svg and report.md to --out. --quick finishes in about two
and a half minutes.

--net loopback (the default) runs every process on loopback, every process
capping its own upload at --upload-limit. --net lan, dsl, mixed or a YAML or
JSON file (as root) gives each process a network namespace of its own and a
link shaped by the kernel: lan 1 Gbit/s, 0.5 ms RTT; dsl 50 Mbit/s down, 10
Mbit/s up, 30 ms RTT, 0.1 % loss; mixed a seeded draw of fibre 300/300, cable
200/20 and dsl 16/1 Mbit/s with 10-60 ms RTT (the seed on fibre). A file:

` + bench.ProfileExample + `
--reference bittorrent runs aria2c leechers and a seeder with a local
opentracker on the same nodes, links, file and N (apt-get install -y aria2
opentracker mktorrent).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runBench(cmd.Context(), o, cmd.Flags().Changed, stdout, stderr)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.quick, "quick", false, "a small run: 16 MiB, N=1,2,4, fault etc. at N=4 (about two and a half minutes)")
	f.StringVar(&o.size, "size", "64MiB", "F: size of the file distributed")
	f.StringVar(&o.peers, "peers", "1,2,4,8,16", fmt.Sprintf("the N of the scaling scenario: numbers from 1 to %d, comma separated", maxPeers))
	f.Var(&o.uploadLimit, "upload-limit", "upload cap of every process")
	f.Var(&o.downloadLimit, "download-limit", "download cap of every downloader")
	f.StringVar(&o.chunkSize, "chunk-size", "auto", "chunk size (auto: the share's default for --size)")
	f.StringVar(&o.scenario, "scenario", "all", "scaling, fault, bad-peer, churn, security, rtt, or all (comma separated; all has rtt only on an emulated network, security only on loopback)")
	f.StringVar(&o.mode, "mode", "both", "client-server, p2p, or both")
	f.IntVar(&o.scenarioPeers, "scenario-peers", 8, "the N of the fault, bad-peer, churn and security scenarios")
	f.DurationVar(&o.downtime, "downtime", 10*time.Second, "fault: how long the server or seed stays down")
	f.IntVar(&o.runs, "runs", 1, "runs of each point; the table shows the median and the spread")
	f.StringVar(&o.out, "out", "bench-results", "directory for results.json, results.csv, chart.svg and report.md")
	f.StringVar(&o.net, "net", bench.NetLoopback, "network: loopback, lan, dsl, mixed, or a YAML/JSON profile file (all but loopback need root)")
	f.StringVar(&o.serverLink, "server-link", "", "emulated networks: the class of the server's link (default: the seed's)")
	f.StringVar(&o.reference, "reference", "", "bittorrent: also run aria2c and opentracker on the same work")
	f.Float64Var(&o.pace, "pace", bench.DefaultPace, "emulated networks: every P2P uploader (share peer, aria2c) limits its upload to this fraction of its link's uplink, below the kernel's cap, so that its send buffers stay short; 0: none (the server is never paced)")
	f.BoolVar(&o.trace, "trace", false, "P2P: every peer and the seed write each chunk request, answer and send to --out/traces/POINT/NAME.jsonl (share peer --trace)")
	f.Uint64Var(&o.netSeed, "net-seed", 1, "seeds the draw of each downloader's link (mixed and files with several peer classes)")
	return cmd
}

func runBench(ctx context.Context, o benchOptions, changed func(string) bool, stdout, stderr io.Writer) error {
	if o.quick {
		// Flags given explicitly win over the preset.
		if !changed("size") {
			o.size = "16MiB"
		}
		if !changed("peers") {
			o.peers = "1,2,4"
		}
		if !changed("scenario-peers") {
			o.scenarioPeers = 4
		}
		if !changed("downtime") {
			o.downtime = 3 * time.Second
		}
	}
	rttPeers := 16
	if o.quick {
		rttPeers = o.scenarioPeers
	}
	size, err := transfer.ParseSize(o.size)
	if err != nil || size <= 0 {
		return usageError{fmt.Errorf("--size %q: want a size such as 64MiB", o.size)}
	}
	cs, err := parseChunkSize(o.chunkSize)
	if err != nil {
		return usageError{err}
	}
	var peers []int
	for _, s := range strings.Split(o.peers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > maxPeers {
			return usageError{fmt.Errorf("--peers %q: want numbers from 1 to %d, comma separated", o.peers, maxPeers)}
		}
		peers = append(peers, n)
	}
	var scenarios, modes []string
	if o.scenario != "all" {
		scenarios = strings.Split(o.scenario, ",")
	}
	if o.mode != "both" {
		modes = []string{o.mode}
	}
	if o.uploadLimit <= 0 {
		return usageError{fmt.Errorf("--upload-limit: the bounds need an upload cap")}
	}
	var prof *bench.Profile
	switch o.net {
	case bench.NetLoopback, "":
	case bench.NetLAN, bench.NetDSL, bench.NetMixed:
		prof, _ = bench.BuiltinProfile(o.net, o.netSeed)
	default:
		if prof, err = bench.LoadProfile(o.net, o.netSeed); err != nil {
			return usageError{fmt.Errorf("--net: %w", err)}
		}
	}
	if o.serverLink != "" && prof == nil {
		return usageError{fmt.Errorf("--server-link needs an emulated network (--net)")}
	}
	if o.pace < 0 || o.pace > 1 {
		return usageError{fmt.Errorf("--pace %v: a fraction of the uplink, from 0 (none) to 1", o.pace)}
	}
	if o.runs < 1 || o.scenarioPeers < 1 || o.scenarioPeers > maxPeers {
		return usageError{fmt.Errorf("--runs and --scenario-peers must be positive (at most %d peers)", maxPeers)}
	}
	warnMemory(stderr, slices.Max(append(peers, o.scenarioPeers)), modes)
	bin, err := os.Executable()
	if err != nil {
		return err
	}
	out, err := filepath.Abs(o.out)
	if err != nil {
		return err
	}
	res, err := bench.Run(ctx, bench.Options{
		Binary:        bin,
		Size:          size,
		Peers:         peers,
		UploadCap:     int64(o.uploadLimit),
		DownloadCap:   int64(o.downloadLimit),
		ChunkSize:     cs,
		Scenarios:     scenarios,
		Modes:         modes,
		ScenarioPeers: o.scenarioPeers,
		Downtime:      o.downtime,
		Runs:          o.runs,
		Out:           out,
		Progress:      stderr,
		Command:       "share " + strings.Join(os.Args[1:], " "),
		Net:           prof,
		ServerLink:    o.serverLink,
		Reference:     o.reference,
		Trace:         o.trace,
		Pace:          o.pace,
		RTTPeers:      rttPeers,
	})
	if err != nil {
		return err
	}
	bench.Table(stdout, res)
	if err := bench.Write(res, out); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "results in %s\n", out)
	for _, p := range res.Points {
		if !p.Clean() {
			return fmt.Errorf("%s %s N=%d: %d of %d downloads finished byte-identical, %d outputs differ from the source: %s",
				p.Scenario, p.Mode, p.N, p.Identical, p.N, p.Corrupt, p.Error)
		}
	}
	return nil
}

// maxPeers is the largest N the bench accepts: 128 real peers (and as many
// clients) fit on one machine of a few GiB (MemoryNeeded).
const maxPeers = 128

// warnMemory warns when the machine has less memory available than a run
// of n downloaders needs; it runs anyway, since the estimate is rough.
func warnMemory(w io.Writer, n int, modes []string) {
	avail := bench.MemoryAvailable()
	need := bench.MemoryNeeded(bench.ClientServer, n)
	if len(modes) == 0 || slices.Contains(modes, bench.P2P) {
		need = bench.MemoryNeeded(bench.P2P, n)
	}
	if avail > 0 && need > avail {
		fmt.Fprintf(w, "warning: N=%d needs about %s of memory (peak RSS per process measured by share bench), and %s is available: expect swapping or the OOM killer; use smaller --peers\n",
			n, humanize.IBytes(uint64(need)), humanize.IBytes(uint64(avail)))
	}
}
