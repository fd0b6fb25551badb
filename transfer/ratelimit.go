package transfer

import (
	"context"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"golang.org/x/time/rate"
)

// Rate is a byte rate in bytes per second; 0 means unlimited. It implements
// pflag.Value, so it can be a command-line flag.
type Rate int64

// ParseRate parses a rate such as "20MiB/s", "8MB/s", "1.5GiB", "100Mbit/s"
// or "0". Units follow go-humanize: "MB" is 10^6 bytes, "MiB" 2^20; a bare
// number is bytes per second. A "bit/s" or "bps" suffix counts bits. "0",
// "", "off", "none" and "unlimited" mean no limit.
func ParseRate(s string) (Rate, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	switch t {
	case "", "0", "off", "none", "unlimited":
		return 0, nil
	}
	bitsPer := false
	switch {
	case strings.HasSuffix(t, "bit/s"):
		t, bitsPer = strings.TrimSuffix(t, "bit/s"), true
	case strings.HasSuffix(t, "bps"):
		t, bitsPer = strings.TrimSuffix(t, "bps"), true
	default:
		t = strings.TrimSuffix(t, "/s")
	}
	if bitsPer && t != "" && !strings.HasSuffix(t, "i") && strings.ContainsAny(t[len(t)-1:], "kmgtpe") {
		t += "b" // "100m" + "bit/s": humanize wants "100mb" for 10^8
	}
	n, err := ParseSize(t)
	if err != nil {
		return 0, fmt.Errorf("rate %q: %w", s, err)
	}
	if bitsPer {
		n /= 8
	}
	if n == 0 {
		return 0, fmt.Errorf("rate %q: below one byte per second (use 0 for no limit)", s)
	}
	return Rate(n), nil
}

// ParseSize parses a byte count such as "1MiB", "64 MB" or "4096".
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("size: empty")
	}
	if len(t) > 64 {
		return 0, fmt.Errorf("size %q: too long", truncate(t, 64))
	}
	n, err := humanize.ParseBytes(t)
	if err != nil {
		return 0, fmt.Errorf("size %q: %v", s, err)
	}
	if n > math.MaxInt64/2 {
		return 0, fmt.Errorf("size %q: %w", s, ErrTooLarge)
	}
	return int64(n), nil
}

// String formats the rate for humans, e.g. "20 MiB/s"; "unlimited" for 0.
func (r Rate) String() string {
	if r <= 0 {
		return "unlimited"
	}
	return humanize.IBytes(uint64(r)) + "/s"
}

// Set implements pflag.Value.
func (r *Rate) Set(s string) error {
	v, err := ParseRate(s)
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// Type implements pflag.Value.
func (r *Rate) Type() string { return "rate" }

// Limiter caps a byte rate across every reader and writer it wraps: one
// Limiter per direction per process. A nil *Limiter imposes no limit. It is
// safe for concurrent use.
type Limiter struct {
	l     *rate.Limiter
	burst int
}

// Token-bucket sizing. A bucket holds at most max(minBurst, rate/burstDiv)
// bytes, and starts empty, so that in the first t seconds no more than
// rate·t bytes pass (a measured transfer is never flattered by a full
// bucket). minBurst is one default chunk: every wait of a paced writer or
// reader wakes a process, and on a machine running a whole swarm those
// wake-ups, not the bytes, were the CPU cost (share bench, N = 32 at 1 MiB/s:
// 75 CPU-s/GiB with 32 KiB buckets, 61 with 256 KiB).
const (
	minBurst = 256 << 10
	maxBurst = 4 << 20
	burstDiv = 100 // 10 ms of traffic
)

// NewLimiter returns a limiter for r bytes per second, or nil for r == 0.
func NewLimiter(r Rate) *Limiter {
	if r <= 0 {
		return nil
	}
	burst := int(min(max(int64(r)/burstDiv, minBurst), maxBurst))
	l := rate.NewLimiter(rate.Limit(r), burst)
	l.AllowN(time.Now(), burst) // start empty
	return &Limiter{l: l, burst: burst}
}

// Rate returns the limit, 0 for none.
func (l *Limiter) Rate() Rate {
	if l == nil {
		return 0
	}
	return Rate(l.l.Limit())
}

// Burst returns the bucket size in bytes, 0 for no limit.
func (l *Limiter) Burst() int {
	if l == nil {
		return 0
	}
	return l.burst
}

// WaitN blocks until n bytes may pass, or ctx is done.
func (l *Limiter) WaitN(ctx context.Context, n int) error {
	if l == nil {
		return nil
	}
	for n > 0 {
		take := min(n, l.burst)
		if err := l.l.WaitN(ctx, take); err != nil {
			return err
		}
		n -= take
	}
	return nil
}

// Reader returns r with reads paced by l; with a nil l it returns r.
func (l *Limiter) Reader(ctx context.Context, r io.Reader) io.Reader {
	if l == nil {
		return r
	}
	return &limitedReader{ctx: ctx, r: r, l: l}
}

// Writer returns w with writes paced by l; with a nil l it returns w.
func (l *Limiter) Writer(ctx context.Context, w io.Writer) io.Writer {
	if l == nil {
		return w
	}
	return &limitedWriter{ctx: ctx, w: w, l: l}
}

type limitedReader struct {
	ctx context.Context
	r   io.Reader
	l   *Limiter
}

// Read reads at most one bucket, then waits for what it read: the bytes were
// already received, so waiting afterwards paces the sender through flow
// control without holding back a read that returns little.
func (lr *limitedReader) Read(p []byte) (int, error) {
	if len(p) > lr.l.burst {
		p = p[:lr.l.burst]
	}
	n, err := lr.r.Read(p)
	if n > 0 {
		if werr := lr.l.WaitN(lr.ctx, n); werr != nil && err == nil {
			err = werr
		}
	}
	return n, err
}

type limitedWriter struct {
	ctx context.Context
	w   io.Writer
	l   *Limiter
}

// Write waits for each bucket-sized piece before writing it.
func (lw *limitedWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		take := min(len(p), lw.l.burst)
		if err := lw.l.WaitN(lw.ctx, take); err != nil {
			return written, err
		}
		n, err := lw.w.Write(p[:take])
		written += n
		if err != nil {
			return written, err
		}
		p = p[take:]
	}
	return written, nil
}
