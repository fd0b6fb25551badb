package bench

import (
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/sharefiles/share/cmd/share/internal/netem"
)

// sampleEvery is how often the links of an emulated point are sampled.
const sampleEvery = 200 * time.Millisecond

// firstBytes is what a download must have carried for its data to have
// started flowing: more than connection set-up and requests take.
const firstBytes = 64 << 10

// idleBelow is the share of its rate under which a sample interval counts
// a link as idle.
const idleBelow = 0.1

// Emulation is what the emulated network did during a point: the delay
// line's cost and timeliness, and what each node's link carried while the
// downloads ran (from the start of the downloads to the last completion).
type Emulation struct {
	// DelayLine is how the delay line's thread was scheduled ("" with no
	// delay line); its CPU seconds during the point are not in Cost,
	// which counts the processes under test only.
	DelayLine    string    `json:"delay_line,omitempty"`
	DelayLineCPU float64   `json:"delay_line_cpu_s"`
	Frames       int64     `json:"frames"`
	MeanLate     float64   `json:"mean_late_s"`       // how late after its release time a frame left, on average
	LateOver1ms  float64   `json:"late_over_1ms"`     // fraction of frames more than 1 ms late
	LateOver10ms float64   `json:"late_over_10ms"`    // fraction more than 10 ms late
	Window       float64   `json:"window_s"`          // the span the links' figures cover
	Samples      string    `json:"samples,omitempty"` // the CSV of the link samples, in the results directory
	Links        []LinkUse `json:"links"`
}

// LinkUse is what one node's link carried in a point's window. Bytes are
// whole Ethernet frames as the shapers count them; Use is bytes over what
// the line rate allows in the window.
type LinkUse struct {
	Node     string  `json:"node"`
	Up       int64   `json:"up_bytes"`
	Down     int64   `json:"down_bytes"`
	UpUse    float64 `json:"up_use"`
	DownUse  float64 `json:"down_use"`
	UpIdle   float64 `json:"up_idle"`   // fraction of the sample intervals with the upload under a tenth of its rate
	DownIdle float64 `json:"down_idle"` // the same for the download
	// FirstDown is the time from the start of the downloads to the first
	// sample by which the download had carried firstBytes; -1 if it never
	// did.
	FirstDown   float64 `json:"first_down_s"`
	UpDrops     int64   `json:"up_drops"` // packets the full queue dropped
	DownDrops   int64   `json:"down_drops"`
	UpPackets   int64   `json:"up_packets"` // wire packets through the delay line
	DownPackets int64   `json:"down_packets"`
	UpLost      int64   `json:"up_lost"` // of them, lost to the link's loss
	DownLost    int64   `json:"down_lost"`
	UpBacklog   int64   `json:"up_backlog_max_bytes"` // the fullest the queue was at a sample
	DownBacklog int64   `json:"down_backlog_max_bytes"`
}

// linkSampler reads the link counters of a point's nodes every sampleEvery
// until stopped.
type linkSampler struct {
	names []string
	nodes []*netem.Node
	links []netem.Link // the nodes' links during the point
	net   *netem.Network
	dl0   netem.DelayLineStats
	stop  chan struct{}
	done  chan struct{}

	// Written by the sampling goroutine until done is closed.
	at      []time.Time
	samples [][]netem.LinkCounters // [sample][node]
}

// startSampler starts sampling the links of the nodes named.
func (b *bencher) startSampler(names []string) *linkSampler {
	s := &linkSampler{names: names, net: b.net, stop: make(chan struct{}), done: make(chan struct{})}
	for _, n := range names {
		s.nodes = append(s.nodes, b.nodes[n])
		s.links = append(s.links, b.nodes[n].Link())
	}
	s.dl0, _ = s.delayLine()
	go s.loop()
	return s
}

func (s *linkSampler) loop() {
	defer close(s.done)
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		s.sample()
		select {
		case <-t.C:
		case <-s.stop:
			s.sample()
			return
		}
	}
}

func (s *linkSampler) sample() {
	row := make([]netem.LinkCounters, len(s.nodes))
	for i, d := range s.nodes {
		row[i], _ = d.Counters() // a failed read leaves zeros: the figures then say so
	}
	s.at = append(s.at, time.Now())
	s.samples = append(s.samples, row)
}

// finish stops the sampler and summarizes the window [start, start+span]
// into an Emulation; with csvPath it also writes every sample there.
func (s *linkSampler) finish(start time.Time, span time.Duration, csvPath string) *Emulation {
	close(s.stop)
	<-s.done
	e := s.summarize(start, span)
	if csvPath != "" && len(e.Links) > 0 && s.writeCSV(start, csvPath) == nil {
		e.Samples = csvPath
	}
	return e
}

// summarize makes the Emulation of the samples taken, for the window
// [start, start+span].
func (s *linkSampler) summarize(start time.Time, span time.Duration) *Emulation {
	e := &Emulation{Window: span.Seconds()}
	if st, ok := s.delayLine(); ok {
		d := st.Sub(s.dl0)
		e.DelayLine = st.Scheduling
		e.DelayLineCPU = d.CPU.Seconds()
		e.Frames = d.Frames
		e.MeanLate = d.MeanLate().Seconds()
		e.LateOver1ms = d.LateOver(time.Millisecond)
		e.LateOver10ms = d.LateOver(10 * time.Millisecond)
	}
	if span <= 0 || len(s.at) < 2 {
		return e
	}
	// The samples at or just before the start, and at or just after the end.
	end := start.Add(span)
	i := sort(s.at, start)
	if i == len(s.at) || s.at[i].After(start) {
		i = max(0, i-1)
	}
	j := min(len(s.at)-1, sort(s.at, end))
	if i >= j {
		return e
	}
	for k, name := range s.names {
		l := s.links[k]
		a, z := s.samples[i][k], s.samples[j][k]
		u := LinkUse{Node: name, FirstDown: -1,
			Up: int64(z.Up.Bytes - a.Up.Bytes), Down: int64(z.Down.Bytes - a.Down.Bytes),
			UpDrops: int64(z.Up.Drops - a.Up.Drops), DownDrops: int64(z.Down.Drops - a.Down.Drops),
			UpPackets: z.Up.Packets - a.Up.Packets, DownPackets: z.Down.Packets - a.Down.Packets,
			UpLost: z.Up.Lost - a.Up.Lost, DownLost: z.Down.Lost - a.Down.Lost}
		win := s.at[j].Sub(s.at[i]).Seconds()
		if l.Up > 0 {
			u.UpUse = float64(u.Up) / (float64(l.Up) * win)
		}
		if l.Down > 0 {
			u.DownUse = float64(u.Down) / (float64(l.Down) * win)
		}
		var upIdle, downIdle int
		for m := i + 1; m <= j; m++ {
			dt := s.at[m].Sub(s.at[m-1]).Seconds()
			p, c := s.samples[m-1][k], s.samples[m][k]
			if l.Up > 0 && float64(c.Up.Bytes-p.Up.Bytes) < idleBelow*float64(l.Up)*dt {
				upIdle++
			}
			if l.Down > 0 && float64(c.Down.Bytes-p.Down.Bytes) < idleBelow*float64(l.Down)*dt {
				downIdle++
			}
			if u.FirstDown < 0 && c.Down.Bytes-a.Down.Bytes >= firstBytes {
				u.FirstDown = max(0, s.at[m].Sub(start).Seconds())
			}
			u.UpBacklog = max(u.UpBacklog, int64(c.Up.Backlog))
			u.DownBacklog = max(u.DownBacklog, int64(c.Down.Backlog))
		}
		u.UpIdle = float64(upIdle) / float64(j-i)
		u.DownIdle = float64(downIdle) / float64(j-i)
		e.Links = append(e.Links, u)
	}
	return e
}

// delayLine reads the network's delay line, if it has one.
func (s *linkSampler) delayLine() (netem.DelayLineStats, bool) {
	if s.net == nil {
		return netem.DelayLineStats{}, false
	}
	return s.net.DelayLineStats()
}

// sort returns the index of the first time in ts not before t.
func sort(ts []time.Time, t time.Time) int {
	i, _ := slices.BinarySearchFunc(ts, t, func(a, b time.Time) int { return a.Compare(b) })
	return i
}

// writeCSV writes the samples: one row per sample and node, counters
// cumulative since the node was made, time from the start of the downloads.
func (s *linkSampler) writeCSV(start time.Time, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := csv.NewWriter(f)
	w.Write([]string{"t_s", "node", "up_bytes", "down_bytes", "up_backlog_bytes", "down_backlog_bytes", "up_drops", "down_drops",
		"up_packets", "down_packets", "up_lost", "down_lost"})
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	n := func(v int64) string { return strconv.FormatInt(v, 10) }
	for m, at := range s.at {
		t := strconv.FormatFloat(at.Sub(start).Seconds(), 'f', 3, 64)
		for k, name := range s.names {
			c := s.samples[m][k]
			w.Write([]string{t, name, u(c.Up.Bytes), u(c.Down.Bytes), u(uint64(c.Up.Backlog)), u(uint64(c.Down.Backlog)),
				u(uint64(c.Up.Drops)), u(uint64(c.Down.Drops)), n(c.Up.Packets), n(c.Down.Packets), n(c.Up.Lost), n(c.Down.Lost)})
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return err
	}
	return f.Close()
}

// samplesFile names the CSV of a point's link samples.
func samplesFile(out string, p Point) string {
	return filepath.Join(out, "links", pointName(p)+".csv")
}

// pointName names a point's files: scaling-p2p-n16-r1, fault-half-p2p-n8-r1.
func pointName(p Point) string {
	name := p.Scenario
	if p.Variant != "" {
		name += "-" + p.Variant
	}
	return fmt.Sprintf("%s-%s-n%d-r%d", name, p.Mode, p.N, p.Run)
}

// linkAggregate is a point's links summed up: the source's, and the
// downloaders' on average.
type linkAggregate struct {
	src                  LinkUse
	n                    int     // downloaders
	up, upIdle, down     float64 // their mean use and idle share
	first                float64 // the last of their first data (-1: one never had any)
	packets, lost, drops int64   // over every link
}

func (e *Emulation) aggregate() linkAggregate {
	var a linkAggregate
	for _, u := range e.Links {
		a.packets += u.UpPackets
		a.lost += u.UpLost + u.DownLost
		a.drops += u.UpDrops + u.DownDrops
		if u.Node == nodeSource {
			a.src = u
			continue
		}
		if u.Node == nodeLiar {
			continue
		}
		a.n++
		a.up += u.UpUse
		a.upIdle += u.UpIdle
		a.down += u.DownUse
		if u.FirstDown < 0 || a.first < 0 {
			a.first = -1
		} else {
			a.first = max(a.first, u.FirstDown)
		}
	}
	if a.n > 0 {
		a.up /= float64(a.n)
		a.upIdle /= float64(a.n)
		a.down /= float64(a.n)
	}
	return a
}

// summary says in one line how busy the links were and what the delay line
// did: the source's upload, the downloaders' uploads and downloads (mean),
// the loss measured and the delay line's lateness.
func (e *Emulation) summary() string {
	a := e.aggregate()
	s := fmt.Sprintf("links over %.1f s: source up %.0f %% (idle %.0f %%)", e.Window, 100*a.src.UpUse, 100*a.src.UpIdle)
	if a.n > 0 {
		s += fmt.Sprintf(", downloaders up %.0f %% (idle %.0f %%) down %.0f %%, last first data %s", 100*a.up, 100*a.upIdle, 100*a.down, secs(a.first))
	}
	if a.packets > 0 {
		s += fmt.Sprintf(", lost %.3f %% of %d packets", 100*float64(a.lost)/float64(a.packets), a.packets)
	}
	s += fmt.Sprintf(", queue drops %d", a.drops)
	if e.DelayLine != "" {
		s += fmt.Sprintf("; delay line %.1f CPU-s (%.0f µs a frame), %.1f %% of frames >1 ms late (%.2f %% >10 ms)", e.DelayLineCPU, 1e6*e.DelayLineCPU/float64(max(e.Frames, 1)), 100*e.LateOver1ms, 100*e.LateOver10ms)
	}
	return s
}
