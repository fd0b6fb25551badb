package bench

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/sharefiles/share/cmd/share/internal/netem"
)

func TestBoundOf(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		mode           string
		n              int
		f, us, dmin, u int64
		want           float64
		term           string
	}{
		{ClientServer, 4, 16 * mib, 2 * mib, 8 * mib, 0, 32, "N·F/u_s"},
		{ClientServer, 1, 16 * mib, 8 * mib, 2 * mib, 0, 8, "F/d_min"},
		{P2P, 4, 16 * mib, 2 * mib, 8 * mib, 4 * 2 * mib, 8, "F/u_s"},
		{P2P, 16, 16 * mib, 8 * mib, 0, 16 * mib / 8, 25.6, "N·F/(u_s+Σu_i)"}, // 16 peers upload 2 MiB/s in all
		{BitTorrent, 2, 16 * mib, 8 * mib, 1 * mib, 16 * mib, 16, "F/d_min"},
	}
	for _, tt := range tests {
		got, term := BoundOf(tt.mode, tt.n, tt.f, tt.us, tt.dmin, tt.u)
		if math.Abs(got-tt.want) > 1e-9 || term != tt.term {
			t.Errorf("BoundOf(%s, %d, ...) = %v %q, want %v %q", tt.mode, tt.n, got, term, tt.want, tt.term)
		}
	}
}

func TestProfiles(t *testing.T) {
	dsl, _ := BuiltinProfile(NetDSL, 1)
	l := dsl.Downloader(3).Link()
	if l.Up != 10*mbitps || l.Down != 50*mbitps || l.Delay != 7500*time.Microsecond || math.Abs((1-(1-l.Loss)*(1-l.Loss))-0.001) > 1e-12 {
		t.Errorf("dsl link %+v: want 10/50 Mbit/s, 7.5 ms each way (30 ms RTT), 0.1 %% loss between two nodes", l)
	}
	mixed, _ := BuiltinProfile(NetMixed, 7)
	seen := map[string]bool{}
	for k := 1; k <= 64; k++ {
		c := mixed.Downloader(k)
		seen[c.Name] = true
		if c.RTT < 10*time.Millisecond || c.RTT > 60*time.Millisecond {
			t.Errorf("mixed node %d: RTT %v outside 10-60 ms", k, c.RTT)
		}
		if again := mixed.Downloader(k); again != c {
			t.Errorf("mixed node %d: drawn twice differently: %v, %v", k, c, again)
		}
	}
	if len(seen) != 3 {
		t.Errorf("64 mixed nodes drew only %v", seen)
	}
	other, _ := BuiltinProfile(NetMixed, 8)
	same := 0
	for k := 1; k <= 64; k++ {
		if other.Downloader(k) == mixed.Downloader(k) {
			same++
		}
	}
	if same == 64 {
		t.Errorf("another seed drew the same links")
	}
}

func TestProfileFile(t *testing.T) {
	p, err := parseProfile("example", []byte(ProfileExample), 1)
	if err != nil {
		t.Fatal(err)
	}
	home, ok := p.Class("home")
	if !ok || home.Up != 10*mbitps || home.Down != 50*mbitps || home.RTT != 30*time.Millisecond || home.Jitter != time.Millisecond || home.Loss != 0.001 {
		t.Errorf("home = %+v", home)
	}
	if p.Seed != "office" || len(p.Peers) != 3 || !p.Latency() {
		t.Errorf("profile %+v", p)
	}
	json := `{"classes": {"a": {"up": "1MiB/s", "down": "8MiB/s", "delay": "5ms"}}}`
	p, err = parseProfile("json", []byte(json), 1)
	if err != nil {
		t.Fatal(err)
	}
	if a := p.Downloader(1); a.RTT != 20*time.Millisecond || a.Up != 1<<20 || p.Seed != "a" {
		t.Errorf("json profile: %+v, seed %q", a, p.Seed)
	}
	for _, bad := range []struct{ doc, want string }{
		{`classes: {a: {up: fast}}`, "up"},
		{`classes: {a: {up: 1MiB/s, rtt: 4ms, delay: 1ms}}`, "not both"},
		{`classes: {a: {up: 1MiB/s, loss: 150%}}`, "loss"},
		{`classes: {a: {down: 1MiB/s}}`, "upload rate"},
		{`classes: {a: {up: 1MiB/s}}` + "\nseed: b", `no class "b"`},
		{`classes: {a: {up: 1MiB/s, speed: 3}}`, "speed"},
		{`peers: [a]`, "no classes"},
	} {
		if _, err := parseProfile("bad", []byte(bad.doc), 1); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: err %v, want one about %q", bad.doc, err, bad.want)
		}
	}
}

func TestNodeOf(t *testing.T) {
	for in, want := range map[string]string{"seed": "src", "server": "src", "peer7": "d7", "client12": "d12", "leecher3": "d3", "liar": "liar", "tracker": "tracker", "peerless": "peerless"} {
		if got := nodeOf(in); got != want {
			t.Errorf("nodeOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTCPStart(t *testing.T) {
	// 10 Mbit/s at 30 ms: BDP 37.5 kB, 2.6 initial windows: 2 doublings.
	if got := tcpStart(10*mbitps, 30*time.Millisecond); math.Abs(got-0.060) > 1e-9 {
		t.Errorf("tcpStart = %v, want 0.060", got)
	}
	if got := tcpStart(1*mbitps, time.Millisecond); got != 0 {
		t.Errorf("a window below 10 segments needs no start-up: %v", got)
	}
}

// TestLinkSummary: a point's links are summed over the window of its
// downloads, from the samples at or just around it.
func TestLinkSummary(t *testing.T) {
	const rate = 1_250_000 // 10 Mbit/s
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := &linkSampler{
		names: []string{nodeSource, "d1"},
		links: []netem.Link{{Up: rate, Down: 5 * rate}, {Up: rate, Down: 5 * rate}},
	}
	// Ten samples 1 s apart from t0-1s: the source sends at the full rate
	// from t0 on; d1 receives it all and sends nothing but in second 5.
	var up0, down1, up1 uint64
	for i := range 10 {
		at := t0.Add(time.Duration(i-1) * time.Second)
		if i >= 2 {
			up0 += rate
			down1 += rate
		}
		if i == 6 {
			up1 += rate / 2
		}
		s.at = append(s.at, at)
		s.samples = append(s.samples, []netem.LinkCounters{
			{Up: netem.Counters{Bytes: up0, Packets: int64(up0 / 1514), Lost: int64(up0 / 1514 / 1000)}},
			{Up: netem.Counters{Bytes: up1}, Down: netem.Counters{Bytes: down1, Drops: uint32(i)}},
		})
	}
	e := s.summarize(t0, 8*time.Second)
	if len(e.Links) != 2 || e.DelayLine != "" {
		t.Fatalf("links %+v, delay line %q", e.Links, e.DelayLine)
	}
	src, d1 := e.Links[0], e.Links[1]
	if src.Up != 8*rate || math.Abs(src.UpUse-1) > 1e-9 || src.UpIdle != 0 {
		t.Errorf("source: %d bytes up, use %v, idle %v; want %d, 1, 0", src.Up, src.UpUse, src.UpIdle, 8*rate)
	}
	if d1.Up != rate/2 || math.Abs(d1.UpUse-1.0/16) > 1e-9 || math.Abs(d1.UpIdle-7.0/8) > 1e-9 {
		t.Errorf("d1: %d bytes up, use %v, idle %v; want %d, 1/16, 7/8", d1.Up, d1.UpUse, d1.UpIdle, rate/2)
	}
	if math.Abs(d1.DownUse-0.2) > 1e-9 || d1.FirstDown != 1 || d1.DownDrops != 8 {
		t.Errorf("d1: down use %v, first data at %v s, %d drops; want 0.2, 1, 8", d1.DownUse, d1.FirstDown, d1.DownDrops)
	}
	a := e.aggregate()
	if a.n != 1 || a.first != 1 || a.packets != int64(8*rate/1514) {
		t.Errorf("aggregate %+v", a)
	}
}

// TestLinkList: the report names the server's link apart when
// --server-link gave it one, so that nobody reads the seed's as the server's.
func TestLinkList(t *testing.T) {
	links := map[string]string{nodeSource: "fibre", "d1": "dsl", "d2": "dsl"}
	tests := []struct {
		server, want string
	}{
		{"", "source fibre; other nodes: 2× dsl"},
		{"office", "seed fibre; server office; other nodes: 2× dsl"},
	}
	for _, tt := range tests {
		if got := linkSummary(&Results{Links: links, ServerLink: tt.server}); got != tt.want {
			t.Errorf("server link %q: %q, want %q", tt.server, got, tt.want)
		}
	}
}
