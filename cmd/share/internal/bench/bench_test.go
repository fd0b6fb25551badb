package bench

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestBounds(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		mode    string
		n       int
		f, u, d int64
		want    float64
	}{
		{ClientServer, 16, 64 * mib, 8 * mib, 0, 128},
		{ClientServer, 1, 64 * mib, 8 * mib, 4 * mib, 16}, // the download cap binds
		{P2P, 1, 64 * mib, 8 * mib, 0, 8},
		{P2P, 16, 64 * mib, 8 * mib, 0, 8},        // max(F/u_s, N F/(u_s+N u)) = 8
		{P2P, 16, 64 * mib, 8 * mib, 2 * mib, 32}, // F/d_min
	}
	for _, tt := range tests {
		if got := Bound(tt.mode, tt.n, tt.f, tt.u, tt.d); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("Bound(%s, %d, ...) = %v, want %v", tt.mode, tt.n, got, tt.want)
		}
	}
}

func TestSummaries(t *testing.T) {
	ps := []Point{
		{Scenario: ScenarioScaling, Mode: P2P, N: 4, Distribution: 9, Bound: 8},
		{Scenario: ScenarioScaling, Mode: P2P, N: 4, Distribution: 10, Bound: 8},
		{Scenario: ScenarioScaling, Mode: P2P, N: 4, Distribution: 12, Bound: 8},
		{Scenario: ScenarioScaling, Mode: ClientServer, N: 4, Distribution: -1, Bound: 32},
	}
	s := summarize(ps)
	if len(s) != 2 || s[0].Median != 10 || s[0].Min != 9 || s[0].Max != 12 || s[0].Ratio != 1.25 {
		t.Fatalf("p2p summary %+v", s[0])
	}
	if s[1].Median != -1 {
		t.Fatalf("a point that did not finish has a median: %+v", s[1])
	}
}

// TestQuickRun runs `share bench --quick` as CI does, and checks what it
// writes: every download byte-identical, every file there and well formed.
// It takes about two and a half minutes, so it runs only with SHARE_BENCH=1.
func TestQuickRun(t *testing.T) {
	if os.Getenv("SHARE_BENCH") == "" {
		t.Skip("set SHARE_BENCH=1 to run share bench --quick (about two and a half minutes)")
	}
	dir := t.TempDir()
	bin := buildShare(t, dir)
	outDir := filepath.Join(dir, "results")
	cmd := exec.Command(bin, "bench", "--quick", "--out", outDir)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("share bench --quick: %v\n%s", err, stdout)
	}
	t.Logf("%s", stdout)
	var res Results
	b, err := os.ReadFile(filepath.Join(outDir, ResultsJSON))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{}
	for _, p := range res.Points {
		want[p.Scenario+"/"+p.Mode]++
		if p.Corrupt > 0 {
			t.Errorf("%s %s N=%d: %d outputs were not byte-identical", p.Scenario, p.Mode, p.N, p.Corrupt)
		}
		if p.Cost == nil || p.Cost.CPU <= 0 || p.Cost.Kind(KindSource).PeakRSS <= 0 {
			t.Errorf("%s %s N=%d: no cost: %+v", p.Scenario, p.Mode, p.N, p.Cost)
		}
		if p.Error != "" {
			t.Errorf("%s %s N=%d: %s", p.Scenario, p.Mode, p.N, p.Error)
		}
		if p.Scenario == ScenarioScaling && (p.Distribution <= 0 || p.Ratio < 0.95) {
			t.Errorf("scaling %s N=%d: distribution %v, ratio %v (below the bound?)", p.Mode, p.N, p.Distribution, p.Ratio)
		}
		if s := p.Security; p.Scenario == ScenarioSecurity && (s == nil || s.OutsiderBytes != 0 || s.OutsiderJoined ||
			s.WrongTokenBytes != 0 || s.StolenAfter != 0 || (p.Mode == ClientServer && s.StolenBefore != res.Size)) {
			t.Errorf("security %s: %+v", p.Mode, s)
		}
		if p.Scenario == ScenarioSecurity && p.Variant == VariantFlood {
			want["security(flood)/p2p"]++
			if f := p.Security.Flood; f == nil || f.Streams == 0 || f.Refused["limit"] == 0 || p.Identical != p.N {
				t.Errorf("security with a flood: %d/%d identical, %+v", p.Identical, p.N, f)
			}
		}
		if p.Scenario == ScenarioScaling && (p.Identical != p.N || p.Cost.PerGiB <= 0 || p.Cost.Kind(KindClient).Procs < p.N) {
			t.Errorf("scaling %s N=%d: %d identical, cost %+v", p.Mode, p.N, p.Identical, p.Cost)
		}
		if su := p.Startup; p.Mode == P2P && (su == nil || su.Peers != p.N || su.Started <= 0 || su.Ready < su.Started || su.TableMin < 1) {
			t.Errorf("%s p2p N=%d: start-up %+v", p.Scenario, p.N, su)
		}
		// (Scaling only: a point that kills or stops a daemon loses its counters.)
		if r := p.Requests; p.Mode == P2P && p.Scenario == ScenarioScaling && (r == nil || r.Chunk < p.FromSource+p.FromPeers || r.Have == 0 || r.Manifest == 0) {
			t.Errorf("%s p2p N=%d: requests %+v for %d chunks received", p.Scenario, p.N, r, p.FromSource+p.FromPeers)
		}
		if p.Mode == ClientServer && p.Startup != nil {
			t.Errorf("%s client-server N=%d: a start-up of a server's cluster: %+v", p.Scenario, p.N, p.Startup)
		}
	}
	for _, k := range []string{"scaling/client-server", "scaling/p2p", "fault/client-server", "fault/p2p", "bad-peer/client-server", "bad-peer/p2p", "churn/p2p", "security/client-server", "security/p2p", "security(flood)/p2p"} {
		if want[k] == 0 {
			t.Errorf("no %s point", k)
		}
	}
	if len(res.Summaries) == 0 || res.Machine.Cores == 0 || res.Command == "" {
		t.Errorf("results lack summaries, machine or command")
	}
	f, err := os.Open(filepath.Join(outDir, ResultsCSV))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(f).ReadAll()
	f.Close()
	if err != nil || len(rows) != len(res.Points)+1 {
		t.Errorf("results.csv: %d rows, want %d (%v)", len(rows), len(res.Points)+1, err)
	}
	svg, _ := os.ReadFile(filepath.Join(outDir, ChartSVG))
	if !strings.HasPrefix(string(svg), "<svg") || strings.Count(string(svg), "<polyline") != 4 {
		t.Errorf("chart.svg is not a chart of four series")
	}
	md, _ := os.ReadFile(filepath.Join(outDir, ReportMD))
	if !strings.Contains(string(md), "Start-up:") {
		t.Errorf("report.md lacks the start-up table")
	}
	for _, row := range []string{"| Architecture |", "| Control |", "| Scalability |", "| Reliability |", "| Security |", "| Resource sharing |"} {
		if !strings.Contains(string(md), row) {
			t.Errorf("report.md lacks the row %q", row)
		}
	}
}

// TestSecurityReport checks that the report cites the security points'
// figures: the flood's paragraph and the Security row give what the flooder
// did, what its targets refused, and the honest downloads' time beside the
// same run's point without the flood.
func TestSecurityReport(t *testing.T) {
	res := &Results{Size: 64 << 20, ChunkSize: 1 << 20, UploadCap: 8 << 20, Points: []Point{
		{Scenario: ScenarioSecurity, Mode: P2P, N: 8, Run: 1, Distribution: 10, Finished: 8, Identical: 8, BadChunks: 10, Security: &Security{}},
		{Scenario: ScenarioSecurity, Variant: VariantFlood, Mode: P2P, N: 8, Run: 1, Distribution: 16, Finished: 8, Identical: 8, Security: &Security{
			Flood: &Flood{Targets: 9, Streams: 288379, StreamsReset: 285771, Requests: 79726, Served: 161, Busy: 39597, RequestsFailed: 39968,
				Bytes: 161 << 20, Seconds: 32, CPU: 11.5,
				Refused:     map[string]int64{"limit": 322087, "negotiation": 6067, "memory": 0, "busy": 475},
				SeedRefused: map[string]int64{"limit": 36461, "negotiation": 705, "memory": 0, "busy": 73}},
		}},
	}}
	var md, tab strings.Builder
	Report(&md, res)
	Table(&tab, res)
	var row string
	for _, l := range strings.Split(md.String(), "\n") {
		if strings.HasPrefix(l, "| Security |") {
			row = l
		}
	}
	for _, want := range []string{"10 bad chunks", "288379 streams", "79726 chunk requests", "161 MiB", "322087 streams refused by the resource manager", "6067 reset", "8/8 honest copies identical in 16.00 s against 10.00 s without it (1.60x"} {
		if !strings.Contains(row, want) {
			t.Errorf("the Security row lacks %q:\n%s", want, row)
		}
	}
	for _, want := range []string{"with a flooding member", "the seed: 36461, 705, 0, 73", "(10.00 s without the flood, 1.60x)", "11.5 CPU-s"} {
		if !strings.Contains(tab.String(), want) {
			t.Errorf("the report lacks %q:\n%s", want, tab.String())
		}
	}
}

// TestOutputsOfUnfinishedPoint checks what a point where no download
// finished looks like in every output: never "identical", an empty CSV cell
// for the time and the ratio, and no [min-max] columns with one run.
func TestOutputsOfUnfinishedPoint(t *testing.T) {
	res := &Results{Size: 16 << 20, ChunkSize: 1 << 20, UploadCap: 8 << 20,
		Points: []Point{
			{Scenario: ScenarioScaling, Mode: ClientServer, N: 4, Run: 1, Distribution: -1, Completions: []float64{-1, -1, -1, -1}, Bound: 8, Error: "timeout"},
			{Scenario: ScenarioScaling, Mode: P2P, N: 4, Run: 1, Distribution: 2.5, Finished: 4, Identical: 4, Bound: 2, Ratio: 1.25,
				Cost: &Cost{CPU: 3, PerGiB: 48, Kinds: []KindCost{{Kind: KindSource, Procs: 1, CPU: 1, PeakRSS: 50 << 20}, {Kind: KindClient, Procs: 5, CPU: 2, PeakRSS: 20 << 20}}}},
		}}
	res.Summaries = summarize(res.Points)
	if res.Points[0].Clean() {
		t.Errorf("a point with an error is clean")
	}
	var tab strings.Builder
	Table(&tab, res)
	for _, bad := range []string{"identical=true", "[min-max]", "-1"} {
		if strings.Contains(tab.String(), bad) {
			t.Errorf("table contains %q:\n%s", bad, tab.String())
		}
	}
	for _, want := range []string{"4 of 8 downloads finished", "48.0 s", "50 MiB"} {
		if !strings.Contains(tab.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, tab.String())
		}
	}
	dir := t.TempDir()
	if err := Write(res, dir); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, ResultsCSV))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	col := func(name string) int {
		for i, c := range rows[0] {
			if c == name {
				return i
			}
		}
		t.Fatalf("results.csv has no column %q", name)
		return -1
	}
	if d, r, id := rows[1][col("distribution_s")], rows[1][col("ratio")], rows[1][col("identical")]; d != "" || r != "" || id != "0" {
		t.Errorf("unfinished point: distribution %q, ratio %q, identical %q; want empty, empty, 0", d, r, id)
	}
	if d, c, rss := rows[2][col("distribution_s")], rows[2][col("cpu_s_per_gib")], rows[2][col("peak_rss_source_bytes")]; d != "2.500" || c != "48.000" || rss != "52428800" {
		t.Errorf("finished point: distribution %q, cpu/GiB %q, source RSS %q", d, c, rss)
	}
	// With several runs the spread appears.
	res.Points = append(res.Points, res.Points[1])
	res.Points[2].Run, res.Points[2].Distribution = 2, 3
	res.Summaries = summarize(res.Points)
	tab.Reset()
	Table(&tab, res)
	if !strings.Contains(tab.String(), "[2.50-3.00]") {
		t.Errorf("two runs: no spread:\n%s", tab.String())
	}
}

// TestMeter counts the rusage of real processes.
func TestMeter(t *testing.T) {
	m := newMeter()
	for range 2 {
		// The shell stays a while after its loop: the watch samples every
		// rssPoll, and a process gone before its first sample after exec
		// shows only the few KiB it had then.
		cmd := exec.Command("sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 1.5")
		if err := cmd.Start(); err != nil {
			t.Skipf("sh: %v", err)
		}
		rss := watchRSS(cmd.Process.Pid)
		cmd.Wait()
		m.add(KindClient, cmd.ProcessState, rss.end())
	}
	m.add(KindPeer, nil, 0) // a process that never started counts nothing
	c := m.cost(1 << 30)
	k := c.Kind(KindClient)
	if k.Procs != 2 || k.CPU <= 0 || k.PeakRSS < 100<<10 || c.CPU != k.CPU || c.PerGiB != c.CPU {
		t.Errorf("cost %+v, client %+v", c, k)
	}
	if c.Kind(KindPeer).Procs != 0 {
		t.Errorf("a nil process state was counted")
	}
}

// TestPeakRSSIsTheChilds: a child's peak RSS is its own, not the larger
// one of the harness that started it (which ru_maxrss reports, Go starting
// children with vfork), and a child that grows is seen growing.
func TestPeakRSSIsTheChilds(t *testing.T) {
	if os.Getenv("SHARE_TEST_RSS_CHILD") != "" {
		b := make([]byte, 96<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		time.Sleep(4 * rssPoll)
		os.Exit(int(b[4096]) - 1)
	}
	ballast := make([]byte, 256<<20) // the harness: much larger than its children
	for i := 0; i < len(ballast); i += 4096 {
		ballast[i] = 1
	}
	run := func(cmd *exec.Cmd) (peak, maxrss int64) {
		t.Helper()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		rss := watchRSS(cmd.Process.Pid)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%v: %v", cmd.Args, err)
		}
		return rss.end(), cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10
	}
	small, smallMax := run(exec.Command("sleep", "1.5"))
	if small <= 0 || small > 16<<20 {
		t.Errorf("sleep's peak RSS: %d bytes (ru_maxrss: %d)", small, smallMax)
	}
	child := exec.Command(os.Args[0], "-test.run=^TestPeakRSSIsTheChilds$")
	child.Env = append(os.Environ(), "SHARE_TEST_RSS_CHILD=1")
	big, _ := run(child)
	// Its own 96 MiB and its runtime's (more under the race detector), but
	// not the harness's peak, which ru_maxrss reports.
	if big < 96<<20 || big >= smallMax {
		t.Errorf("a child of 96 MiB: peak RSS %d MiB (the harness's: %d MiB)", big>>20, smallMax>>20)
	}
	t.Logf("sleep: %d KiB (ru_maxrss %d MiB); the 96 MiB child: %d MiB", small>>10, smallMax>>20, big>>20)
	runtime.KeepAlive(ballast)
}

// buildShare builds the share binary into dir.
func buildShare(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "share")
	if out, err := exec.Command("go", "build", "-o", bin, "../..").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// TestEmulatedRun runs share bench on the emulated dsl network with the
// BitTorrent reference, as CI does, and checks every copy of every mode
// arrived byte-identical, and that nothing of the network is left. It
// needs root and the reference's tools, and takes a few minutes, so it runs
// only with SHARE_BENCH_NET=1.
func TestEmulatedRun(t *testing.T) {
	if os.Getenv("SHARE_BENCH_NET") == "" {
		t.Skip("set SHARE_BENCH_NET=1 (as root, with aria2, opentracker and mktorrent) to run share bench --net dsl --reference bittorrent")
	}
	if os.Geteuid() != 0 {
		t.Skip("share bench --net needs root")
	}
	dir := t.TempDir()
	bin := buildShare(t, dir)
	outDir := filepath.Join(dir, "results")
	cmd := exec.Command(bin, "bench", "--net", "dsl", "--size", "4MiB", "--peers", "2,4", "--scenario", "scaling", "--reference", "bittorrent", "--out", outDir)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.Output()
	t.Logf("%s", stdout)
	if err != nil {
		t.Fatalf("share bench: %v", err)
	}
	var res Results
	b, err := os.ReadFile(filepath.Join(outDir, ResultsJSON))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	modes := map[string]int{}
	for _, p := range res.Points {
		modes[p.Mode]++
		if p.Identical != p.N || p.Corrupt != 0 || p.Error != "" {
			t.Errorf("%s N=%d: %d of %d identical, %d corrupt, %q", p.Mode, p.N, p.Identical, p.N, p.Corrupt, p.Error)
		}
		if p.Distribution < p.Bound || p.BoundTerm == "" || p.RTT < 0.029 {
			t.Errorf("%s N=%d: %.2f s against a bound of %.2f s (%s), RTT %v", p.Mode, p.N, p.Distribution, p.Bound, p.BoundTerm, p.RTT)
		}
	}
	if modes[ClientServer] != 2 || modes[P2P] != 2 || modes[BitTorrent] != 2 {
		t.Errorf("points per mode: %v", modes)
	}
	if res.Pace != DefaultPace || !strings.Contains(res.Enforcement, "--pace") {
		t.Errorf("pace %v, enforcement %q: the P2P uploaders were not paced", res.Pace, res.Enforcement)
	}
	if !strings.Contains(res.Enforcement, "HTB") || res.Network != NetDSL {
		t.Errorf("network %q, enforcement %q", res.Network, res.Enforcement)
	}
	svg, _ := os.ReadFile(filepath.Join(outDir, ChartSVG))
	if strings.Count(string(svg), "<polyline") != 5 || !strings.Contains(string(svg), "BitTorrent") {
		t.Errorf("chart.svg lacks the BitTorrent line")
	}
	if left, _ := filepath.Glob(fmt.Sprintf("/run/netns/%s-%d-*", netPrefix, cmd.Process.Pid)); len(left) > 0 {
		t.Errorf("the run left namespaces: %v", left)
	}
}

// TestKilledRunIsCleaned kills (SIGKILL) a bench on an emulated network
// while its cluster runs, and checks that the next start removes what it
// left and says so. Root only, with SHARE_BENCH_NET=1.
func TestKilledRunIsCleaned(t *testing.T) {
	if os.Getenv("SHARE_BENCH_NET") == "" || os.Geteuid() != 0 {
		t.Skip("set SHARE_BENCH_NET=1 and run as root to kill an emulated bench and check the cleanup")
	}
	dir := t.TempDir()
	bin := buildShare(t, dir)
	first := exec.Command(bin, "bench", "--net", "dsl", "--size", "16MiB", "--peers", "4", "--scenario", "scaling", "--mode", "p2p", "--out", filepath.Join(dir, "r1"))
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	pattern := fmt.Sprintf("/run/netns/%s-%d-*", netPrefix, first.Process.Pid)
	var left []string
	for range 600 {
		if left, _ = filepath.Glob(pattern); len(left) >= 6 { // hub, src, d1..d4
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // the daemons run
	first.Process.Kill()
	first.Wait()
	if len(left) < 6 {
		t.Fatalf("the first run made %d namespaces: %v", len(left), left)
	}
	second := exec.Command(bin, "bench", "--net", "dsl", "--size", "1MiB", "--peers", "1", "--scenario", "scaling", "--mode", "p2p", "--out", filepath.Join(dir, "r2"))
	out, err := second.CombinedOutput()
	if err != nil {
		t.Fatalf("second run: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "cleaned") {
			t.Log(l)
		}
	}
	if !strings.Contains(string(out), "cleaned what killed runs left") || !strings.Contains(string(out), "namespaces of dead runs") {
		t.Errorf("the second run did not say what it cleaned:\n%s", out)
	}
	if still, _ := filepath.Glob(pattern); len(still) > 0 {
		t.Errorf("namespaces of the killed run remain: %v", still)
	}
	if procs, _ := exec.Command("pgrep", "-f", "share-bench-"+strconv.Itoa(first.Process.Pid)).Output(); len(procs) > 0 {
		t.Errorf("processes of the killed run remain: %s", procs)
	}
}

func TestWhy(t *testing.T) {
	for in, want := range map[string]string{
		"share get ID -o x: exit status 1: share: no share ID on http://127.0.0.1:1\n  more": "no share ID on http://127.0.0.1:1",
		"share: HEAD /v1/shares/ID/manifest: Unauthorized (HTTP 401)":                        "HEAD /v1/shares/ID/manifest: Unauthorized (HTTP 401)",
		"plain": "plain",
	} {
		if got := why(in); got != want {
			t.Errorf("why(%q) = %q, want %q", in, got, want)
		}
	}
}

// The info hash in a scrape is percent-encoded byte by byte: a 0x20 byte
// written as "+" (url.QueryEscape) is not a space to opentracker, and the
// seeder of such a torrent was never seen announced.
func TestScrapeURLEncodesEveryByte(t *testing.T) {
	h := []byte{0xfa, 0x20, '+', '&', '=', 'a', 0, 0xff, '%', '~', 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20}
	u := scrapeURL(&torrent{host: "10.77.0.18", port: 6969, infoHash: h})
	want := "http://10.77.0.18:6969/scrape?info_hash=%FA%20%2B%26%3D%61%00%FF%25%7E%20%20%20%20%20%20%20%20%20%20"
	if u != want {
		t.Fatalf("scrape URL\n got %s\nwant %s", u, want)
	}
}

// TestTraceFiles: share bench --trace leaves one trace per peer and seed of
// each P2P point, each opening with the peer's ID and holding its chunk
// requests (a seed's: its sends).
func TestTraceFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("runs share bench; skipped with -short")
	}
	dir := t.TempDir()
	bin := buildShare(t, dir)
	outDir := filepath.Join(dir, "results")
	cmd := exec.Command(bin, "bench", "--mode", "p2p", "--scenario", "scaling", "--peers", "2", "--size", "1MiB", "--trace", "--out", outDir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("share bench --trace: %v\n%s", err, out)
	}
	traces := filepath.Join(outDir, "traces", "scaling-p2p-n2-r1")
	for name, want := range map[string]string{"seed": `"msg":"serve sent"`, "peer1": `"msg":"request"`, "peer2": `"msg":"request"`} {
		b, err := os.ReadFile(filepath.Join(traces, name+".jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(b), "{") || !strings.Contains(strings.SplitN(string(b), "\n", 2)[0], `"msg":"peer"`) || !strings.Contains(string(b), want) {
			t.Errorf("%s.jsonl does not open with the peer's ID or lacks %s:\n%.500s", name, want, b)
		}
	}
}

func TestPacedRate(t *testing.T) {
	for _, tc := range []struct {
		pace float64
		up   int64
		want int64
	}{
		{0.95, 1_250_000, 1_135_733}, // dsl's 10 Mbit/s: 95 % of 1448/1514 of it
		{1, 1_250_000, 1_195_508},
		{0, 1_250_000, 0},             // no --pace
		{0.95, 0, 0},                  // an unshaped uplink
		{0.5, 37_500_000, 17_932_628}, // fibre's 300 Mbit/s
	} {
		if got := pacedRate(tc.pace, tc.up); got < tc.want-1 || got > tc.want+1 {
			t.Errorf("pacedRate(%v, %d) = %d, want %d", tc.pace, tc.up, got, tc.want)
		}
	}
}

// TestStartupTable: the start-up table lists every P2P point's figures
// and is left out when no point has them.
func TestStartupTable(t *testing.T) {
	res := &Results{Points: []Point{
		{Scenario: ScenarioScaling, Mode: ClientServer, N: 4, Run: 1},
		{Scenario: ScenarioScaling, Mode: P2P, N: 128, Run: 2, Startup: &Startup{Peers: 128, Started: 3.21, Ready: 4.5, TableMedian: 1, TableMin: 1, TableAfter: 47}},
	}}
	var b strings.Builder
	startupTable(&b, res)
	out := b.String()
	for _, want := range []string{"Start-up:", "3.21 s", "4.50 s", "1 (min 1)", "47"} {
		if !strings.Contains(out, want) {
			t.Errorf("start-up table lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "\n  ") != 2 { // a header and one row
		t.Errorf("start-up table: want one row:\n%s", out)
	}
	b.Reset()
	startupTable(&b, &Results{Points: res.Points[:1]})
	if b.Len() != 0 {
		t.Errorf("a start-up table without P2P points:\n%s", b.String())
	}
	if readyWait(128) <= readyWait(1) || readyWait(1) < 30*time.Second {
		t.Errorf("readyWait: %v at N = 1, %v at N = 128", readyWait(1), readyWait(128))
	}
}

// TestRequestsPerChunk: the protocol's requests per chunk are summarised
// as medians over runs and shown in the cost table for P2P points only.
func TestRequestsPerChunk(t *testing.T) {
	if r, b := (*Requests)(nil).PerChunk(10); r != 0 || b != 0 {
		t.Errorf("nil requests: %v, %v", r, b)
	}
	if r, b := (&Requests{Chunk: 5}).PerChunk(0); r != 0 || b != 0 {
		t.Errorf("no chunks: %v, %v", r, b)
	}
	run := func(run int, have, chunk, busy int64) Point {
		return Point{Scenario: ScenarioScaling, Mode: P2P, N: 2, Run: run, Distribution: 1, Bound: 1, FromSource: 40, FromPeers: 60,
			Requests: &Requests{Manifest: 3, Have: have, Chunk: chunk, Busy: busy}}
	}
	res := &Results{Points: []Point{
		{Scenario: ScenarioScaling, Mode: ClientServer, N: 2, Run: 1, Distribution: 1, Bound: 1, Cost: &Cost{CPU: 1}},
		run(1, 97, 200, 50), run(2, 197, 300, 150), run(3, 397, 100, 0),
	}}
	for k := range res.Points {
		res.Points[k].Cost = &Cost{CPU: 1}
	}
	res.Summaries = summarize(res.Points)
	var p2p Summary
	for _, s := range res.Summaries {
		if s.Mode == P2P {
			p2p = s
		}
		if s.Mode == ClientServer && s.RequestsPerChunk != 0 {
			t.Errorf("client-server summary with requests: %+v", s)
		}
	}
	// Runs: (3+97+200)/100 = 3, (3+197+300)/100 = 5, (3+397+100)/100 = 5;
	// busy 0.5, 1.5, 0.
	if p2p.RequestsPerChunk != 5 || p2p.BusyPerChunk != 0.5 {
		t.Errorf("p2p summary: %v requests and %v busy per chunk, want 5 and 0.5", p2p.RequestsPerChunk, p2p.BusyPerChunk)
	}
	var b strings.Builder
	costTable(&b, res)
	if out := b.String(); !strings.Contains(out, "requests/chunk") || !strings.Contains(out, "5.00") || !strings.Contains(out, "—") {
		t.Errorf("cost table:\n%s", out)
	}
}
