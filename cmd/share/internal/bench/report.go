package bench

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/dustin/go-humanize"
)

// Files Write produces in the results directory.
const (
	ResultsJSON = "results.json"
	ResultsCSV  = "results.csv"
	ChartSVG    = "chart.svg"
	ReportMD    = "report.md"
)

// Write writes results.json, results.csv, chart.svg and report.md to dir.
func Write(res *Results, dir string) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, ResultsJSON), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := writeCSV(res, filepath.Join(dir, ResultsCSV)); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, ChartSVG), []byte(Chart(res)), 0o644); err != nil {
		return err
	}
	var md strings.Builder
	Report(&md, res)
	return os.WriteFile(filepath.Join(dir, ReportMD), []byte(md.String()), 0o644)
}

func writeCSV(res *Results, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := csv.NewWriter(f)
	// An empty cell is a figure that does not exist: a distribution time
	// (and ratio) when some download did not finish, the fault columns of
	// other scenarios.
	w.Write([]string{"scenario", "variant", "mode", "n", "run", "distribution_s", "bound_s", "ratio", "finished", "identical", "corrupt",
		"source_upload_bytes", "peer_upload_bytes", "chunks_from_seed", "chunks_from_peers", "bad_chunks", "refused",
		"killed_at_s", "held_at_kill", "finished_without_source", "restarted_at_s", "after_return_s",
		"cpu_s", "cpu_s_per_gib", "peak_rss_source_bytes", "peak_rss_peer_bytes", "peak_rss_client_bytes",
		"line_bound_s", "source_up_use", "downloaders_up_use", "downloaders_up_idle", "delay_line_cpu_s", "delay_line_late_over_1ms",
		"startup_started_s", "startup_ready_s", "routing_table_median", "requests_manifest", "requests_have", "requests_chunk", "requests_busy", "error"})
	ff := func(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }
	pos := func(v float64) string { // a time or ratio that exists only when positive
		if v <= 0 || math.IsNaN(v) {
			return ""
		}
		return ff(v)
	}
	for _, p := range res.Points {
		row := []string{p.Scenario, p.Variant, p.Mode, strconv.Itoa(p.N), strconv.Itoa(p.Run), pos(p.Distribution), ff(p.Bound), pos(p.Ratio),
			strconv.Itoa(p.Finished), strconv.Itoa(p.Identical), strconv.Itoa(p.Corrupt), strconv.FormatInt(p.SourceUpload, 10), strconv.FormatInt(p.PeerUpload, 10),
			strconv.FormatInt(p.FromSource, 10), strconv.FormatInt(p.FromPeers, 10), strconv.FormatInt(p.BadChunks, 10), strconv.Itoa(p.Refused)}
		if f := p.Fault; f != nil {
			after := ""
			if f.AfterReturn >= 0 {
				after = ff(f.AfterReturn)
			}
			row = append(row, ff(f.KilledAt), ff(f.HeldAtKill), strconv.Itoa(f.FinishedWithout), ff(f.RestartedAt), after)
		} else {
			row = append(row, "", "", "", "", "")
		}
		if c := p.Cost; c != nil {
			row = append(row, ff(c.CPU), pos(c.PerGiB))
			for _, k := range []string{KindSource, KindPeer, KindClient} {
				if kc := c.Kind(k); kc.Procs > 0 {
					row = append(row, strconv.FormatInt(kc.PeakRSS, 10))
				} else {
					row = append(row, "")
				}
			}
		} else {
			row = append(row, "", "", "", "", "")
		}
		row = append(row, pos(p.LineBound))
		if e := p.Emulation; e != nil && len(e.Links) > 0 {
			a := e.aggregate()
			row = append(row, ff(a.src.UpUse), ff(a.up), ff(a.upIdle), ff(e.DelayLineCPU), ff(e.LateOver1ms))
		} else {
			row = append(row, "", "", "", "", "")
		}
		if su := p.Startup; su != nil {
			row = append(row, ff(su.Started), ff(su.Ready), strconv.Itoa(su.TableMedian))
		} else {
			row = append(row, "", "", "")
		}
		if r := p.Requests; r != nil {
			row = append(row, strconv.FormatInt(r.Manifest, 10), strconv.FormatInt(r.Have, 10), strconv.FormatInt(r.Chunk, 10), strconv.FormatInt(r.Busy, 10))
		} else {
			row = append(row, "", "", "", "")
		}
		w.Write(append(row, p.Error))
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return err
	}
	return f.Close()
}

func secs(v float64) string {
	if v < 0 || math.IsNaN(v) {
		return "—"
	}
	return fmt.Sprintf("%.2f s", v)
}

// copies expresses bytes as copies of the file.
func copies(b, f int64) string { return fmt.Sprintf("%.2f F", float64(b)/float64(f)) }

func rate(r int64) string {
	if r <= 0 {
		return "none"
	}
	return humanize.IBytes(uint64(r)) + "/s"
}

// points returns the points of a scenario (and variant), in order.
func (res *Results) points(sc, variant, mode string) []Point {
	var out []Point
	for _, p := range res.Points {
		if p.Scenario == sc && p.Variant == variant && (mode == "" || p.Mode == mode) {
			out = append(out, p)
		}
	}
	return out
}

// summary returns a point's summary; one not run has negative values.
func (res *Results) summary(sc, variant, mode string, n int) (Summary, bool) {
	for _, s := range res.Summaries {
		if s.Scenario == sc && s.Variant == variant && s.Mode == mode && s.N == n {
			return s, true
		}
	}
	return Summary{Median: -1, Min: -1, Max: -1, Bound: -1}, false
}

// Table writes the human summary of a run.
func Table(w io.Writer, res *Results) {
	f := res.Size
	if res.emulated() {
		fmt.Fprintf(w, "F = %s, chunks of %s, network %s: %s\nRates enforced by %s.\n",
			humanize.IBytes(uint64(f)), humanize.IBytes(uint64(res.ChunkSize)), res.Network, linkSummary(res), res.Enforcement)
	} else {
		fmt.Fprintf(w, "F = %s, chunks of %s, every upload capped at %s, download cap %s\n",
			humanize.IBytes(uint64(f)), humanize.IBytes(uint64(res.ChunkSize)), rate(res.UploadCap), rate(res.DownloadCap))
	}
	if res.Cleaned != "" {
		fmt.Fprintf(w, "Cleaned at the start (left by killed runs): %s\n", res.Cleaned)
	}
	ns := scalingNs(res)
	bt := slices.ContainsFunc(res.Summaries, func(s Summary) bool { return s.Mode == BitTorrent })
	if len(ns) > 0 {
		// The [min-max] columns appear only when some point ran more than once.
		multi := slices.ContainsFunc(res.Summaries, func(s Summary) bool { return s.Runs > 1 })
		head := "N\tclient-server\tbound\tratio\tp2p\tbound\tratio\tseed up\tpeers up\t"
		what := "distribution time to N downloaders"
		if multi {
			head = "N\tclient-server\t[min-max]\tbound\tratio\tp2p\t[min-max]\tbound\tratio\tseed up\tpeers up\t"
			what += " (median of runs [min-max])"
		}
		if bt {
			head += "bittorrent\tratio\tbt÷p2p\t"
		}
		fmt.Fprintf(w, "\nScaling: %s, bound, ratio; bytes uploaded in copies of F\n", what)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, head)
		for _, n := range ns {
			cs, _ := res.summary(ScenarioScaling, "", ClientServer, n)
			pp, _ := res.summary(ScenarioScaling, "", P2P, n)
			seed, peers := uploads(res.points(ScenarioScaling, "", P2P), n, f)
			cols := []string{strconv.Itoa(n), secs(cs.Median), spread(cs), secs(cs.Bound), ratio(cs.Ratio),
				secs(pp.Median), spread(pp), secs(pp.Bound), ratio(pp.Ratio), seed, peers}
			if !multi {
				cols = slices.Delete(slices.Delete(cols, 6, 7), 2, 3)
			}
			if bt {
				b, _ := res.summary(ScenarioScaling, "", BitTorrent, n)
				cols = append(cols, secs(b.Median), ratio(b.Ratio), speedup(pp.Median, b.Median))
			}
			fmt.Fprintln(tw, strings.Join(cols, "\t")+"\t")
		}
		tw.Flush()
		boundNotes(w, res, ScenarioScaling)
	}
	rttTable(w, res)
	costTable(w, res)
	startupTable(w, res)
	linksTable(w, res)
	for _, p := range res.points(ScenarioFault, "half", "") {
		fmt.Fprintf(w, "\n%s\n", describeFault(p, res))
	}
	for _, p := range res.points(ScenarioFault, "replicated", "") {
		fmt.Fprintf(w, "\n%s\n", describeFault(p, res))
	}
	for _, p := range res.points(ScenarioBadPeer, "", "") {
		fmt.Fprintf(w, "\n%s\n", describeBad(p, res))
	}
	for _, p := range res.points(ScenarioChurn, "", "") {
		fmt.Fprintf(w, "\n%s\n", describeChurn(p, res))
	}
	for _, v := range []string{"", VariantFlood} {
		for _, p := range res.points(ScenarioSecurity, v, "") {
			fmt.Fprintf(w, "\n%s\n", describeSecurity(p, res))
		}
	}
	bad, finished, identical, downloads := 0, 0, 0, 0
	for _, p := range res.Points {
		if p.Corrupt > 0 {
			bad++
		}
		finished += p.Finished
		identical += p.Identical
		downloads += p.N
	}
	switch {
	case bad > 0:
		fmt.Fprintf(w, "\n%d points had an output that was not byte-identical to the source.\n", bad)
	case finished == 0:
		fmt.Fprintf(w, "\nNo download finished (%d points, %d downloads).\n", len(res.Points), downloads)
	default:
		fmt.Fprintf(w, "\n%d of %d downloads finished, and every one was byte-identical to the source (%d identical, %d points).\n",
			finished, downloads, identical, len(res.Points))
	}
}

// costTable writes what each point's processes consumed.
func costTable(w io.Writer, res *Results) {
	if !slices.ContainsFunc(res.Summaries, func(s Summary) bool { return s.CPU > 0 }) {
		return
	}
	what := "CPU seconds of every process of the point (user+system, median of runs), per GiB distributed, and the peak RSS of one process of each kind"
	dl := slices.ContainsFunc(res.Summaries, func(s Summary) bool { return s.DelayLineCPU > 0 })
	if dl {
		what += "; the delay line's CPU seconds apart (the emulation's, not in CPU)"
	}
	rq := slices.ContainsFunc(res.Summaries, func(s Summary) bool { return s.RequestsPerChunk > 0 })
	if rq {
		what += "; for P2P, the chunk protocol's requests per chunk received (each a request and an answer), and of them busy answers"
	}
	fmt.Fprintf(w, "\nCost: %s\n", what)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := "scenario\tmode\tN\tCPU\tCPU/GiB\tsource RSS\tpeer RSS\tclient RSS\t"
	if dl {
		head += "delay line\t"
	}
	if rq {
		head += "requests/chunk\tbusy/chunk\t"
	}
	fmt.Fprintln(tw, head)
	for _, s := range res.Summaries {
		sc := s.Scenario
		if s.Variant != "" {
			sc += "(" + s.Variant + ")"
		}
		row := fmt.Sprintf("%s\t%s\t%d\t%.1f s\t%s\t%s\t%s\t%s\t", sc, s.Mode, s.N, s.CPU, perGiB(s.CPUPerGiB),
			mib(s.PeakRSS[KindSource]), mib(s.PeakRSS[KindPeer]), mib(s.PeakRSS[KindClient]))
		if dl {
			row += fmt.Sprintf("%.1f s\t", s.DelayLineCPU)
		}
		if rq {
			if s.RequestsPerChunk > 0 {
				row += fmt.Sprintf("%.2f\t%.2f\t", s.RequestsPerChunk, s.BusyPerChunk)
			} else {
				row += "—\t—\t"
			}
		}
		fmt.Fprintln(tw, row)
	}
	tw.Flush()
}

// startupTable writes how each P2P cluster formed before its downloads.
func startupTable(w io.Writer, res *Results) {
	var ps []Point
	for _, p := range res.Points {
		if p.Startup != nil {
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return
	}
	fmt.Fprintf(w, "\nStart-up: the seed up, its peers launched at once; seconds until every peer's host and API were up, and until every\n"+
		"peer's `share status` showed a DHT routing table holding another peer; the routing tables' sizes then (median, smallest)\n"+
		"and after the downloads (median)\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tN\trun\tpeers\tup\tin the DHT\trouting table\tafter\t")
	for _, p := range ps {
		sc := p.Scenario
		if p.Variant != "" {
			sc += "(" + p.Variant + ")"
		}
		su := p.Startup
		after := "—"
		if su.TableAfter > 0 {
			after = strconv.Itoa(su.TableAfter)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%d (min %d)\t%s\t\n", sc, p.N, p.Run, su.Peers, secs(su.Started), secs(su.Ready), su.TableMedian, su.TableMin, after)
	}
	tw.Flush()
}

// linksTable writes, for each point on an emulated network (its first run),
// how busy the links were while the downloads ran and what the delay line
// did.
func linksTable(w io.Writer, res *Results) {
	var ps []Point
	for _, p := range res.Points {
		if p.Emulation != nil && len(p.Emulation.Links) > 0 && p.Run == 1 {
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return
	}
	fmt.Fprintf(w, "\nLinks while the downloads ran (first run of each point): use of the source's uplink and, on average, of the downloaders' uplinks and downlinks\n"+
		"(share of the line rate; idle: share of %v samples under %.0f %% of it), when the last downloader had its first %s, packets lost to the links'\n"+
		"loss and dropped by full queues, and the delay line: frames more than 1 ms late after their release time\n", sampleEvery, 100*idleBelow, humanize.IBytes(firstBytes))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tmode\tN\tsource up\tidle\tdownloaders up\tidle\tdown\tfirst data\tlost\tqueue drops\tlate >1 ms\t")
	for _, p := range ps {
		e := p.Emulation
		sc := p.Scenario
		if p.Variant != "" {
			sc += "(" + p.Variant + ")"
		}
		a := e.aggregate()
		pct := func(v float64) string { return fmt.Sprintf("%.0f %%", 100*v) }
		peersUp, peersIdle, peersDown := "—", "—", "—"
		if a.n > 0 {
			peersUp, peersIdle, peersDown = pct(a.up), pct(a.upIdle), pct(a.down)
		}
		lost := "—"
		if a.packets > 0 {
			lost = fmt.Sprintf("%.3f %%", 100*float64(a.lost)/float64(a.packets))
		}
		late := "—"
		if e.DelayLine != "" {
			late = fmt.Sprintf("%.1f %%", 100*e.LateOver1ms)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t\n", sc, p.Mode, p.N, pct(a.src.UpUse), pct(a.src.UpIdle),
			peersUp, peersIdle, peersDown, secs(a.first), lost, a.drops, late)
	}
	tw.Flush()
}

func perGiB(v float64) string {
	if v <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f s", v)
}

func mib(b int64) string {
	if b <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20))
}

func spread(s Summary) string {
	if s.Runs < 2 || s.Min < 0 {
		return ""
	}
	return fmt.Sprintf("[%.2f-%.2f]", s.Min, s.Max)
}

func ratio(r float64) string {
	if r <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.2fx", r)
}

func scalingNs(res *Results) []int {
	var ns []int
	for _, s := range res.Summaries {
		if s.Scenario == ScenarioScaling && !slices.Contains(ns, s.N) {
			ns = append(ns, s.N)
		}
	}
	slices.Sort(ns)
	return ns
}

// uploads returns the median seed and peer uploads of the P2P points at n.
func uploads(ps []Point, n int, f int64) (string, string) {
	var seed, peers []float64
	for _, p := range ps {
		if p.N == n {
			seed = append(seed, float64(p.SourceUpload))
			peers = append(peers, float64(p.PeerUpload))
		}
	}
	if len(seed) == 0 {
		return "", ""
	}
	slices.Sort(seed)
	slices.Sort(peers)
	return copies(int64(median(seed)), f), copies(int64(median(peers)), f)
}

func describeFault(p Point, res *Results) string {
	f := p.Fault
	what := "the server"
	if p.Mode == P2P {
		what = "the seed"
	}
	if f == nil {
		return fmt.Sprintf("Fault %s %s N=%d: %s", p.Variant, p.Mode, p.N, p.Error)
	}
	when := fmt.Sprintf("when the downloaders held %.0f%% of the file on average", 100*f.HeldAtKill)
	if p.Variant == "replicated" {
		when = fmt.Sprintf("once the first downloader had a complete copy (they held %.0f%% on average)", 100*f.HeldAtKill)
	}
	s := fmt.Sprintf("Fault, %s, N=%d: %s was killed at %.2f s, %s.\n  %d/%d downloads still under way finished while it was down (%.0f s).",
		p.Mode, p.N, what, f.KilledAt, when, f.FinishedWithout, f.PendingAtKill, f.RestartedAt-f.KilledAt)
	if f.FinishedWithout < f.PendingAtKill {
		s += fmt.Sprintf(" It came back at %.2f s;", f.RestartedAt)
		if f.AfterReturn >= 0 {
			s += fmt.Sprintf(" all had finished %.2f s later (%.2f s in all, %.2fx the bound).", f.AfterReturn, p.Distribution, p.Ratio)
		} else {
			s += fmt.Sprintf(" %d/%d finished in the end.", p.Finished, p.N)
		}
	} else {
		s += fmt.Sprintf(" All done at %.2f s.", p.Distribution)
	}
	return s
}

func describeBad(p Point, res *Results) string {
	if p.Mode == ClientServer {
		kept := "no client kept an unverified byte"
		if p.Corrupt > 0 {
			kept = fmt.Sprintf("%d clients kept an output that differs from the source", p.Corrupt)
		}
		return fmt.Sprintf("Hostile, client-server, N=%d: one chunk corrupted on the server's disk: %d/%d clients refused it (a chunk failed verification), and %s.",
			p.N, p.Refused, p.N, kept)
	}
	clean := ""
	if s, ok := res.summary(ScenarioScaling, "", P2P, p.N); ok && s.Median > 0 && p.Distribution > 0 {
		clean = fmt.Sprintf(", against %.2f s without it (%+.0f%%)", s.Median, 100*(p.Distribution/s.Median-1))
	}
	return fmt.Sprintf("Hostile, p2p, N=%d: one peer serves a copy corrupted on its disk (every chunk): %d bad chunks detected and dropped, %d/%d downloads finished byte-identical, done in %s%s.",
		p.N, p.BadChunks, p.Identical, p.N, secs(p.Distribution), clean)
}

func describeChurn(p Point, res *Results) string {
	clean := ""
	if s, ok := res.summary(ScenarioScaling, "", P2P, p.N); ok && s.Median > 0 && p.Distribution > 0 {
		clean = fmt.Sprintf(", against %.2f s when they stay (%+.0f%%)", s.Median, 100*(p.Distribution/s.Median-1))
	}
	return fmt.Sprintf("Churn, p2p, N=%d: every peer left as soon as it finished: all done in %s (%s the bound)%s. Client-server clients never upload, so leaving changes nothing there.",
		p.N, secs(p.Distribution), ratio(p.Ratio), clean)
}

// emulated reports whether the run was on an emulated network.
func (res *Results) emulated() bool { return res.Network != "" && res.Network != NetLoopback }

// linkSummary lists the distinct links of the run's nodes.
func linkSummary(res *Results) string {
	count := map[string]int{}
	var order []string
	names := make([]string, 0, len(res.Links))
	for n := range res.Links {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if n == nodeSource {
			continue
		}
		l := res.Links[n]
		if count[l] == 0 {
			order = append(order, l)
		}
		count[l]++
	}
	var parts []string
	for _, l := range order {
		parts = append(parts, fmt.Sprintf("%d× %s", count[l], l))
	}
	if src, ok := res.Links[nodeSource]; ok {
		if res.ServerLink != "" {
			return fmt.Sprintf("seed %s; server %s; other nodes: %s", src, res.ServerLink, strings.Join(parts, "; "))
		}
		return fmt.Sprintf("source %s; other nodes: %s", src, strings.Join(parts, "; "))
	}
	return strings.Join(parts, "; ")
}

// speedup is how much faster a is than b ("1.25x" when a takes 80 % of b).
func speedup(a, b float64) string {
	if a <= 0 || b <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.2fx", b/a)
}

// boundNotes says, for each point of a scenario, which term of each bound
// binds and, on an emulated network, the latency beside it.
func boundNotes(w io.Writer, res *Results, sc string) {
	type key struct {
		variant, mode string
		n             int
	}
	seen := map[key]bool{}
	var lines []string
	for _, p := range res.Points {
		k := key{p.Variant, p.Mode, p.N}
		if p.Scenario != sc || seen[k] || p.BoundTerm == "" {
			continue
		}
		seen[k] = true
		l := fmt.Sprintf("  %s N=%d", p.Mode, p.N)
		if p.Variant != "" {
			l = fmt.Sprintf("  %s %s %s N=%d", p.Scenario, p.Variant, p.Mode, p.N)
		}
		l += fmt.Sprintf(": bound %s = %s", secs(p.Bound), p.BoundTerm)
		if p.LineBound > 0 {
			l += fmt.Sprintf(" of file bytes (%s at line rate)", secs(p.LineBound))
		}
		if p.RTT > 0 {
			l += fmt.Sprintf(" (+ 1 RTT %.0f ms, + TCP start-up ≈ %.0f ms)", 1000*p.RTT, 1000*p.TCPStart)
		}
		lines = append(lines, l)
	}
	if len(lines) == 0 || !res.emulated() {
		return
	}
	fmt.Fprintf(w, "\nBinding term of each bound (Kurose-Ross, each node's own u_i and d_i); latency noted beside it:\n%s\n", strings.Join(lines, "\n"))
}

// rttTable writes the rtt scenario: each mode at each RTT.
func rttTable(w io.Writer, res *Results) {
	var variants []string
	for _, s := range res.Summaries {
		if s.Scenario == ScenarioRTT && !slices.Contains(variants, s.Variant) {
			variants = append(variants, s.Variant)
		}
	}
	if len(variants) == 0 {
		return
	}
	fmt.Fprintln(w, "\nRound trips: distribution time at each RTT between nodes, same rates; ratio to the bound")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "RTT\tN\tp2p bound\tclient-server\tratio\tp2p\tratio\tbittorrent\tratio\t")
	for _, v := range variants {
		var n int
		var bound float64
		cols := []string{}
		for _, mode := range []string{ClientServer, P2P, BitTorrent} {
			var sum Summary
			for _, s := range res.Summaries {
				if s.Scenario == ScenarioRTT && s.Variant == v && s.Mode == mode {
					sum, n = s, s.N
					if mode == P2P {
						bound = s.Bound
					}
				}
			}
			if sum.Mode == "" {
				cols = append(cols, "—", "—")
				continue
			}
			cols = append(cols, secs(sum.Median), ratio(sum.Ratio))
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t\n", v, n, secs(bound), strings.Join(cols, "\t"))
	}
	tw.Flush()
	boundNotes(w, res, ScenarioRTT)
}
