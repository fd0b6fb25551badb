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
	w.Write([]string{"scenario", "variant", "mode", "n", "run", "distribution_s", "bound_s", "ratio", "finished", "identical",
		"source_upload_bytes", "peer_upload_bytes", "chunks_from_seed", "chunks_from_peers", "bad_chunks", "refused",
		"killed_at_s", "held_at_kill", "finished_without_source", "restarted_at_s", "after_return_s", "error"})
	ff := func(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }
	for _, p := range res.Points {
		row := []string{p.Scenario, p.Variant, p.Mode, strconv.Itoa(p.N), strconv.Itoa(p.Run), ff(p.Distribution), ff(p.Bound), ff(p.Ratio),
			strconv.Itoa(p.Finished), strconv.FormatBool(p.Identical), strconv.FormatInt(p.SourceUpload, 10), strconv.FormatInt(p.PeerUpload, 10),
			strconv.FormatInt(p.FromSource, 10), strconv.FormatInt(p.FromPeers, 10), strconv.FormatInt(p.BadChunks, 10), strconv.Itoa(p.Refused)}
		if f := p.Fault; f != nil {
			row = append(row, ff(f.KilledAt), ff(f.HeldAtKill), strconv.Itoa(f.FinishedWithout), ff(f.RestartedAt), ff(f.AfterReturn))
		} else {
			row = append(row, "", "", "", "", "")
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
	fmt.Fprintf(w, "F = %s, chunks of %s, every upload capped at %s, download cap %s\n",
		humanize.IBytes(uint64(f)), humanize.IBytes(uint64(res.ChunkSize)), rate(res.UploadCap), rate(res.DownloadCap))
	ns := scalingNs(res)
	if len(ns) > 0 {
		fmt.Fprintln(w, "\nScaling: distribution time to N downloaders (median of runs [min-max]), bound, ratio; bytes uploaded in copies of F")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "N\tclient-server\t[min-max]\tbound\tratio\tp2p\t[min-max]\tbound\tratio\tseed up\tpeers up\t")
		for _, n := range ns {
			cs, _ := res.summary(ScenarioScaling, "", ClientServer, n)
			pp, _ := res.summary(ScenarioScaling, "", P2P, n)
			seed, peers := uploads(res.points(ScenarioScaling, "", P2P), n, f)
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", n,
				secs(cs.Median), spread(cs), secs(cs.Bound), ratio(cs.Ratio),
				secs(pp.Median), spread(pp), secs(pp.Bound), ratio(pp.Ratio), seed, peers)
		}
		tw.Flush()
	}
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
	bad := 0
	for _, p := range res.Points {
		if !p.Identical {
			bad++
		}
	}
	if bad == 0 {
		fmt.Fprintf(w, "\nEvery download that finished was byte-identical to the source (%d points).\n", len(res.Points))
	} else {
		fmt.Fprintf(w, "\n%d points had a download that was not byte-identical to the source.\n", bad)
	}
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
		return fmt.Sprintf("Hostile, client-server, N=%d: one chunk corrupted on the server's disk: %d/%d clients refused it (a chunk failed verification), and no client kept an unverified byte (identical=%v).",
			p.N, p.Refused, p.N, p.Identical)
	}
	clean := ""
	if s, ok := res.summary(ScenarioScaling, "", P2P, p.N); ok && s.Median > 0 && p.Distribution > 0 {
		clean = fmt.Sprintf(", against %.2f s without it (%+.0f%%)", s.Median, 100*(p.Distribution/s.Median-1))
	}
	return fmt.Sprintf("Hostile, p2p, N=%d: one peer serves a copy corrupted on its disk (every chunk): %d bad chunks detected and dropped, %d/%d downloads byte-identical (identical=%v), done in %s%s.",
		p.N, p.BadChunks, p.Finished, p.N, p.Identical, secs(p.Distribution), clean)
}

func describeChurn(p Point, res *Results) string {
	clean := ""
	if s, ok := res.summary(ScenarioScaling, "", P2P, p.N); ok && s.Median > 0 && p.Distribution > 0 {
		clean = fmt.Sprintf(", against %.2f s when they stay (%+.0f%%)", s.Median, 100*(p.Distribution/s.Median-1))
	}
	return fmt.Sprintf("Churn, p2p, N=%d: every peer left as soon as it finished: all done in %s (%s the bound)%s. Client-server clients never upload, so leaving changes nothing there.",
		p.N, secs(p.Distribution), ratio(p.Ratio), clean)
}
