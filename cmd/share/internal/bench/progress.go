package bench

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// progress shows what the benchmark is doing, on stderr: on a terminal a
// status line redrawn four times a second, otherwise a line per event. A
// nil writer shows nothing.
type progress struct {
	w     io.Writer
	tty   bool
	total int

	mu    sync.Mutex
	index int
	label string
	gets  []*getRun
	start time.Time
	done  int // downloads ended (finished or failed), last reported

	stop chan struct{}
	wg   sync.WaitGroup
}

func newProgress(w io.Writer, total int) *progress {
	p := &progress{w: w, total: total, stop: make(chan struct{})}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
	}
	if w != nil {
		p.wg.Go(p.loop)
	}
	return p
}

func (p *progress) loop() {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			p.tick()
		case <-p.stop:
			return
		}
	}
}

func describe(pt Point) string {
	s := fmt.Sprintf("%s %s N=%d", pt.Scenario, pt.Mode, pt.N)
	if pt.Variant != "" {
		s = fmt.Sprintf("%s(%s) %s N=%d", pt.Scenario, pt.Variant, pt.Mode, pt.N)
	}
	return s + fmt.Sprintf(" run %d", pt.Run)
}

func (p *progress) begin(pt Point) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.index++
	p.label = describe(pt)
	p.gets, p.done = nil, 0
	p.line(fmt.Sprintf("[%d/%d] %s: starting the cluster", p.index, p.total, p.label), false)
}

// note prints a line that is not about a point.
func (p *progress) note(s string) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.line(s, false)
}

// track follows a point's downloads.
func (p *progress) track(gets []*getRun, start time.Time) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gets, p.start = gets, start
}

func (p *progress) tick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gets == nil {
		return
	}
	done, failed := 0, 0
	for _, g := range p.gets {
		if !g.running() {
			if g.err != nil {
				failed++
			} else {
				done++
			}
		}
	}
	if !p.tty && done+failed == p.done {
		return
	}
	p.done = done + failed
	s := fmt.Sprintf("[%d/%d] %s: %d/%d downloads done", p.index, p.total, p.label, done, len(p.gets))
	if failed > 0 {
		s += fmt.Sprintf(", %d failed", failed)
	}
	p.line(fmt.Sprintf("%s, %.1f s", s, time.Since(p.start).Seconds()), p.tty)
}

func (p *progress) end(pt Point) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gets = nil
	var s string
	switch {
	case pt.Error != "":
		s = "error: " + firstLine(pt.Error)
	case pt.Distribution > 0:
		s = fmt.Sprintf("%.2f s, %.2fx the bound of %.2f s", pt.Distribution, pt.Ratio, pt.Bound)
	default:
		s = fmt.Sprintf("%d/%d finished", pt.Finished, pt.N)
	}
	p.line(fmt.Sprintf("[%d/%d] %s: %s", p.index, p.total, p.label, s), false)
	if e := pt.Emulation; e != nil && len(e.Links) > 0 {
		p.line(fmt.Sprintf("[%d/%d] %s: %s", p.index, p.total, p.label, e.summary()), false)
	}
}

// line prints s; redraw overwrites the current terminal line.
func (p *progress) line(s string, redraw bool) {
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", s)
		if !redraw {
			fmt.Fprintln(p.w)
		}
		return
	}
	fmt.Fprintln(p.w, s)
}

func (p *progress) close() {
	if p.w == nil {
		return
	}
	close(p.stop)
	p.wg.Wait()
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
