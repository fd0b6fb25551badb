package main

import (
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// newBar returns a progress bar of total bytes on stderr, or nil when stderr
// is not a terminal: scripts and logs get no bar. A nil bar's methods do
// nothing.
func newBar(stderr io.Writer, total int64, desc string) *bar {
	f, ok := stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return &bar{progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(stderr),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionUseIECUnits(true),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionOnCompletion(func() { io.WriteString(stderr, "\n") }),
	)}
}

type bar struct{ b *progressbar.ProgressBar }

func (b *bar) add(n int64) {
	if b != nil {
		b.b.Add64(n)
	}
}

func (b *bar) set(n int64) {
	if b != nil {
		b.b.Set64(n)
	}
}

func (b *bar) finish() {
	if b != nil {
		b.b.Finish()
	}
}

// abandon leaves the bar where it stopped and ends its line.
func (b *bar) abandon(stderr io.Writer) {
	if b != nil {
		b.b.Exit()
		io.WriteString(stderr, "\n")
	}
}
