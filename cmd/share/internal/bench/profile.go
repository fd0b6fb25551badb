package bench

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sharefiles/share/cmd/share/internal/netem"
	"github.com/sharefiles/share/transfer"
)

// Network profiles of `share bench --net`.
const (
	NetLoopback = "loopback" // every process on loopback, rates capped by share itself
	NetLAN      = "lan"
	NetDSL      = "dsl"
	NetMixed    = "mixed"
)

// LinkClass is a kind of access link. RTT and Loss are those between two
// nodes of the class: each direction of each of their links gets a quarter
// of the RTT as one-way delay and half of the loss (netem.Link), so that a
// packet from A to B crosses A's upload and B's download.
type LinkClass struct {
	Name   string        `json:"name"`
	Up     int64         `json:"up_bytes_per_s"`
	Down   int64         `json:"down_bytes_per_s"`
	RTT    time.Duration `json:"rtt_ns"`
	Jitter time.Duration `json:"jitter_ns"` // ± on each link direction
	Loss   float64       `json:"loss"`      // fraction, between two nodes of the class
}

// Link returns the netem link of a node of the class.
func (c LinkClass) Link() netem.Link {
	return netem.Link{Up: c.Up, Down: c.Down, Delay: c.RTT / 4, Jitter: c.Jitter, Loss: 1 - math.Sqrt(1-c.Loss)}
}

func (c LinkClass) String() string {
	s := fmt.Sprintf("%s %s down / %s up", c.Name, mbit(c.Down), mbit(c.Up))
	if c.RTT > 0 {
		s += fmt.Sprintf(", %v RTT", c.RTT)
	}
	if c.Jitter > 0 {
		s += fmt.Sprintf(", ±%v jitter", c.Jitter)
	}
	if c.Loss > 0 {
		s += fmt.Sprintf(", %g %% loss", 100*c.Loss)
	}
	return s
}

// mbit formats bytes/s as Mbit/s (or "unlimited").
func mbit(r int64) string {
	if r <= 0 {
		return "unlimited"
	}
	return strconv.FormatFloat(float64(r)*8/1e6, 'g', 4, 64) + " Mbit/s"
}

// Profile is an emulated network: the link of the seed (and of the server,
// unless Options.ServerLink names another class) and a mix the
// downloaders' links are drawn from.
type Profile struct {
	Name    string      `json:"name"`
	Classes []LinkClass `json:"classes"`
	Seed    string      `json:"seed"`  // class of the seed and, by default, the server
	Peers   []string    `json:"peers"` // classes a downloader's link is drawn from, uniformly (repeat one to weigh it)
	// RTTRange, if set, draws each downloader's RTT uniformly from it
	// instead of the class's (mixed: 10-60 ms).
	RTTRange [2]time.Duration `json:"rtt_range_ns,omitzero"`
	Seed64   uint64           `json:"random_seed"` // seeds the draw: node k always gets the same link
}

// Class returns the class called name.
func (p *Profile) Class(name string) (LinkClass, bool) {
	i := slices.IndexFunc(p.Classes, func(c LinkClass) bool { return c.Name == name })
	if i < 0 {
		return LinkClass{}, false
	}
	return p.Classes[i], true
}

// Downloader returns the link of downloader k (1-based): the same k gets
// the same link in every point of a run.
func (p *Profile) Downloader(k int) LinkClass {
	r := rand.New(rand.NewPCG(p.Seed64, uint64(k)))
	c, _ := p.Class(p.Peers[r.IntN(len(p.Peers))])
	if lo, hi := p.RTTRange[0], p.RTTRange[1]; hi > 0 {
		c.RTT = lo + time.Duration(r.Int64N(int64(hi-lo)+1))
		c.RTT = c.RTT.Round(time.Millisecond)
	}
	return c
}

const mbitps = 1e6 / 8

// BuiltinProfile returns lan, dsl or mixed.
func BuiltinProfile(name string, seed uint64) (*Profile, bool) {
	switch name {
	case NetLAN:
		c := LinkClass{Name: "lan", Up: 1000 * mbitps, Down: 1000 * mbitps, RTT: 500 * time.Microsecond}
		return &Profile{Name: name, Classes: []LinkClass{c}, Seed: "lan", Peers: []string{"lan"}, Seed64: seed}, true
	case NetDSL:
		c := LinkClass{Name: "dsl", Up: 10 * mbitps, Down: 50 * mbitps, RTT: 30 * time.Millisecond, Loss: 0.001}
		return &Profile{Name: name, Classes: []LinkClass{c}, Seed: "dsl", Peers: []string{"dsl"}, Seed64: seed}, true
	case NetMixed:
		return &Profile{Name: name, Classes: []LinkClass{
			{Name: "fibre", Up: 300 * mbitps, Down: 300 * mbitps, RTT: 10 * time.Millisecond},
			{Name: "cable", Up: 20 * mbitps, Down: 200 * mbitps, RTT: 20 * time.Millisecond},
			{Name: "dsl", Up: 1 * mbitps, Down: 16 * mbitps, RTT: 40 * time.Millisecond},
		}, Seed: "fibre", Peers: []string{"fibre", "cable", "dsl"}, RTTRange: [2]time.Duration{10 * time.Millisecond, 60 * time.Millisecond}, Seed64: seed}, true
	}
	return nil, false
}

// profileFile is the YAML (or JSON) of --net FILE.
type profileFile struct {
	Classes map[string]struct {
		Up     string `yaml:"up"`
		Down   string `yaml:"down"`
		RTT    string `yaml:"rtt"`
		Delay  string `yaml:"delay"`
		Jitter string `yaml:"jitter"`
		Loss   string `yaml:"loss"`
	} `yaml:"classes"`
	Seed  string   `yaml:"seed"`
	Peers []string `yaml:"peers"`
}

// ProfileExample is a --net file, as the help shows it.
const ProfileExample = `# share bench --net FILE: each class is an access link; rtt and loss are
# between two nodes of the class (delay: one way on each link, rtt = 4 x delay)
classes:
  office: {up: 100Mbit/s, down: 100Mbit/s, rtt: 4ms}
  home:   {up: 10Mbit/s, down: 50Mbit/s, rtt: 30ms, jitter: 1ms, loss: 0.1%}
seed: office             # the seed's link (and the server's, unless --server-link)
peers: [home, home, office]   # downloaders draw from these, uniformly
`

// LoadProfile reads a profile from a YAML or JSON file.
func LoadProfile(path string, seed uint64) (*Profile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseProfile(path, b, seed)
}

func parseProfile(name string, b []byte, seed uint64) (*Profile, error) {
	var f profileFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%s: %w (want YAML or JSON like:\n%s)", name, err, ProfileExample)
	}
	p := &Profile{Name: name, Seed: f.Seed, Peers: f.Peers, Seed64: seed}
	names := make([]string, 0, len(f.Classes))
	for n := range f.Classes {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		c := f.Classes[n]
		lc := LinkClass{Name: n}
		var err error
		rate := func(s, what string) int64 {
			if err != nil || s == "" {
				return 0
			}
			var r transfer.Rate
			if r, err = transfer.ParseRate(s); err != nil {
				err = fmt.Errorf("%s: %w", what, err)
			}
			return int64(r)
		}
		dur := func(s, what string) time.Duration {
			if err != nil || s == "" {
				return 0
			}
			var d time.Duration
			if d, err = time.ParseDuration(s); err != nil || d < 0 {
				err = fmt.Errorf("%s %q: want a duration such as 30ms", what, s)
			}
			return d
		}
		lc.Up, lc.Down = rate(c.Up, "up"), rate(c.Down, "down")
		lc.RTT, lc.Jitter = dur(c.RTT, "rtt"), dur(c.Jitter, "jitter")
		if d := dur(c.Delay, "delay"); d > 0 {
			if lc.RTT > 0 && err == nil {
				err = fmt.Errorf("give rtt or delay, not both")
			}
			lc.RTT = 4 * d
		}
		if c.Loss != "" && err == nil {
			lc.Loss, err = parseLoss(c.Loss)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: class %s: %w", name, n, err)
		}
		p.Classes = append(p.Classes, lc)
	}
	if err := p.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return p, nil
}

// parseLoss parses "0.1%" or a fraction "0.001".
func parseLoss(s string) (float64, error) {
	s = strings.TrimSpace(s)
	pct := strings.HasSuffix(s, "%")
	v, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	if pct {
		v /= 100
	}
	if err != nil || v < 0 || v >= 1 {
		return 0, fmt.Errorf("loss %q: want a percentage such as 0.1%% or a fraction below 1", s)
	}
	return v, nil
}

func (p *Profile) validate() error {
	if len(p.Classes) == 0 {
		return fmt.Errorf("no classes")
	}
	if p.Seed == "" {
		p.Seed = p.Classes[0].Name
	}
	if len(p.Peers) == 0 {
		p.Peers = []string{p.Seed}
	}
	for _, c := range append([]string{p.Seed}, p.Peers...) {
		if _, ok := p.Class(c); !ok {
			return fmt.Errorf("no class %q", c)
		}
	}
	for _, c := range p.Classes {
		if c.Up <= 0 {
			return fmt.Errorf("class %s: an upload rate is needed (the bounds divide by it)", c.Name)
		}
	}
	return nil
}

// Latency reports whether any class has a delay, jitter or loss.
func (p *Profile) Latency() bool {
	return p.RTTRange[1] > 0 || slices.ContainsFunc(p.Classes, func(c LinkClass) bool { return c.RTT > 0 || c.Jitter > 0 || c.Loss > 0 })
}
