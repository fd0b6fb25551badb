package bench

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Process kinds whose cost a point reports.
const (
	KindSource  = "source"  // the server (client-server) or the seed (p2p), every incarnation
	KindPeer    = "peer"    // a downloader's `share peer` (and an extra peer: the liar)
	KindClient  = "client"  // `share get` and `share put`
	KindTracker = "tracker" // the BitTorrent reference's opentracker
)

// Cost is what the processes of one point consumed, from the rusage the
// kernel reports when each exits (wait4): user plus system CPU time, and the
// peak resident set size (ru_maxrss). Every process the point started is
// counted, from its start to its exit, daemons included: start-up, DHT
// bootstrap, the put and the downloads. The harness itself (which hashes each
// copy to check it) is not.
type Cost struct {
	CPU    float64    `json:"cpu_s"`         // CPU seconds of all processes
	PerGiB float64    `json:"cpu_s_per_gib"` // CPU / GiB distributed (finished downloads × F); 0 if none finished
	Kinds  []KindCost `json:"kinds"`
}

// KindCost is the cost of the processes of one kind.
type KindCost struct {
	Kind    string  `json:"kind"`
	Procs   int     `json:"procs"`
	CPU     float64 `json:"cpu_s"`
	PeakRSS int64   `json:"peak_rss_bytes"` // the largest peak RSS of one process of the kind
}

// Kind returns the cost of a kind; a zero KindCost if none ran.
func (c *Cost) Kind(kind string) KindCost {
	if c != nil {
		for _, k := range c.Kinds {
			if k.Kind == kind {
				return k
			}
		}
	}
	return KindCost{Kind: kind}
}

// meter adds up the rusage of a point's processes as they exit. It is safe
// for concurrent use; a nil *meter counts nothing.
type meter struct {
	mu    sync.Mutex
	kinds map[string]*KindCost
}

func newMeter() *meter { return &meter{kinds: map[string]*KindCost{}} }

// add counts an exited process. ps may be nil (a process that never
// started). peak is its peak resident set size in bytes from an rssWatch;
// 0 where none was watched (a short command), which leaves its kind's peak
// as the other processes' (see rssWatch for why ru_maxrss is not used).
func (m *meter) add(kind string, ps *os.ProcessState, peak int64) {
	if m == nil || ps == nil {
		return
	}
	cpu := (ps.UserTime() + ps.SystemTime()).Seconds()
	m.mu.Lock()
	defer m.mu.Unlock()
	k := m.kinds[kind]
	if k == nil {
		k = &KindCost{Kind: kind}
		m.kinds[kind] = k
	}
	k.Procs++
	k.CPU += cpu
	k.PeakRSS = max(k.PeakRSS, peak)
}

// rssWatch follows the peak resident set size of a running process: the
// VmHWM line of /proc/PID/status (proc(5)), a high-water mark, read every
// rssPoll by one poller for all the processes of a run, and once more by
// sample just before the harness stops a daemon. The ru_maxrss that wait4
// reports is no use here: Go starts a child with vfork (CLONE_VM,
// syscall/exec_linux.go), and Linux carries the high-water mark of the
// memory the child shared with its parent over the exec (exec_mmap's
// setmax_mm_hiwater_rss), so every child of a harness of 80 MiB reported at
// least 80 MiB. A peak that a process that exits by itself (`share get`)
// reaches in its last rssPoll is missed.
type rssWatch struct {
	path string
	peak atomic.Int64 // bytes
}

// rssPoll is how often the poller reads every watched process's peak. It
// was 250 ms with a goroutine per process: at 64 peers the harness's reads
// of /proc and its wake-ups were 12 % of the context switches of the run
// (perf, sched:sched_switch), on the two cores the swarm is measured on.
const rssPoll = time.Second

// rssWatches is the set of running watches and whether the poller runs.
var rssWatches struct {
	mu      sync.Mutex
	set     map[*rssWatch]struct{}
	polling bool
}

// watchRSS starts following process pid; call end once it exited.
func watchRSS(pid int) *rssWatch {
	w := &rssWatch{path: "/proc/" + strconv.Itoa(pid) + "/status"}
	rssWatches.mu.Lock()
	defer rssWatches.mu.Unlock()
	if rssWatches.set == nil {
		rssWatches.set = map[*rssWatch]struct{}{}
	}
	rssWatches.set[w] = struct{}{}
	if !rssWatches.polling {
		rssWatches.polling = true
		go pollRSS()
	}
	return w
}

// pollRSS samples every watch each rssPoll, until none is left.
func pollRSS() {
	t := time.NewTicker(rssPoll)
	defer t.Stop()
	var ws []*rssWatch
	for range t.C {
		rssWatches.mu.Lock()
		if len(rssWatches.set) == 0 {
			rssWatches.polling = false
			rssWatches.mu.Unlock()
			return
		}
		ws = ws[:0]
		for w := range rssWatches.set {
			ws = append(ws, w)
		}
		rssWatches.mu.Unlock()
		for _, w := range ws {
			w.sample()
		}
	}
}

// sample reads the process's peak now; nothing if it is gone (a zombie has
// no VmHWM) or there is no /proc.
func (w *rssWatch) sample() {
	if w == nil {
		return
	}
	if hwm, ok := readHWM(w.path); ok {
		w.peak.Store(max(w.peak.Load(), hwm))
	}
}

// end stops the watch and returns the peak seen, in bytes (0: none).
func (w *rssWatch) end() int64 {
	if w == nil {
		return 0
	}
	rssWatches.mu.Lock()
	delete(rssWatches.set, w)
	rssWatches.mu.Unlock()
	return w.peak.Load()
}

// readHWM returns the VmHWM of a /proc/PID/status file, in bytes.
func readHWM(path string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err == nil
		}
	}
	return 0, false
}

// cost returns the total, with CPU per GiB of the bytes distributed.
func (m *meter) cost(distributed int64) *Cost {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := &Cost{}
	for _, kind := range []string{KindSource, KindPeer, KindClient, KindTracker} {
		if k := m.kinds[kind]; k != nil {
			c.Kinds = append(c.Kinds, *k)
			c.CPU += k.CPU
		}
	}
	if distributed > 0 {
		c.PerGiB = c.CPU / (float64(distributed) / (1 << 30))
	}
	return c
}

// Peak RSS per process, measured with this harness and rounded up (ru_maxrss
// before rssWatch, so perhaps the harness's own, in `share bench --mode p2p --scenario scaling --peers 64 --size 16MiB
// --upload-limit 2MiB/s`: seed 57 MiB, peers up to 81 MiB, clients up to 34
// MiB; a client-server N=8 run: server 42 MiB, clients 36 MiB): they size the
// memory a run of N downloaders needs.
const (
	rssSource = 64 << 20
	rssPeer   = 96 << 20
	rssClient = 40 << 20
)

// MemoryNeeded estimates the memory a point of n downloaders needs: in p2p a
// peer and a client per downloader, in client-server a client each, and the
// source.
func MemoryNeeded(mode string, n int) int64 {
	per := int64(rssClient)
	if mode == P2P {
		per += rssPeer
	}
	return rssSource + int64(n)*per
}

// MemoryAvailable returns MemAvailable from /proc/meminfo in bytes, or 0 if
// it cannot be read.
func MemoryAvailable() int64 {
	return meminfo("MemAvailable:")
}
