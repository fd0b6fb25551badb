package bench

import (
	"encoding/csv"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
// It takes about a minute, so it runs only with SHARE_BENCH=1.
func TestQuickRun(t *testing.T) {
	if os.Getenv("SHARE_BENCH") == "" {
		t.Skip("set SHARE_BENCH=1 to run share bench --quick (about a minute)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "share")
	if out, err := exec.Command("go", "build", "-o", bin, "../..").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
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
		if !p.Identical {
			t.Errorf("%s %s N=%d: a download was not byte-identical", p.Scenario, p.Mode, p.N)
		}
		if p.Error != "" {
			t.Errorf("%s %s N=%d: %s", p.Scenario, p.Mode, p.N, p.Error)
		}
		if p.Scenario == ScenarioScaling && (p.Distribution <= 0 || p.Ratio < 0.95) {
			t.Errorf("scaling %s N=%d: distribution %v, ratio %v (below the bound?)", p.Mode, p.N, p.Distribution, p.Ratio)
		}
	}
	for _, k := range []string{"scaling/client-server", "scaling/p2p", "fault/client-server", "fault/p2p", "bad-peer/client-server", "bad-peer/p2p", "churn/p2p"} {
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
	for _, row := range []string{"| Architecture |", "| Control |", "| Scalability |", "| Reliability |", "| Security |", "| Resource sharing |"} {
		if !strings.Contains(string(md), row) {
			t.Errorf("report.md lacks the row %q", row)
		}
	}
}
