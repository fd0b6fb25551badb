package transfer

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"
)

func TestParseRate(t *testing.T) {
	tests := []struct {
		in   string
		want Rate
		ok   bool
	}{
		{"0", 0, true},
		{"", 0, true},
		{"off", 0, true},
		{"unlimited", 0, true},
		{"20MiB/s", 20 << 20, true},
		{"20MiB", 20 << 20, true},
		{"8 MB/s", 8_000_000, true},
		{"1.5GiB/s", 3 << 29, true},
		{"100Mbit/s", 12_500_000, true},
		{"1gbps", 125_000_000, true},
		{"800bit/s", 100, true},
		{"4096", 4096, true},
		{"1KiB/s", 1024, true},
		{"-5MB/s", 0, false},
		{"fast", 0, false},
		{"10 parsecs", 0, false},
		{"1bit/s", 0, false}, // below a byte per second
		{"99999999999999999999EiB/s", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRate(tt.in)
			if (err == nil) != tt.ok || got != tt.want {
				t.Fatalf("ParseRate(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
			}
		})
	}
	var r Rate
	if err := r.Set("2MiB/s"); err != nil || r.String() != "2.0 MiB/s" {
		t.Fatalf("Set/String: %v %q", err, r.String())
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1MiB": 1 << 20, "64 MB": 64_000_000, "4096": 4096, "1.5 KiB": 1536} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "x", "-1", "1 XB", "99999999999 EiB"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded", in)
		}
	}
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"20MiB/s", "8 MB/s", "100Mbit/s", "0", "1.5GiB", "1,000 kB/s", "unlimited"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRate(s)
		if err != nil {
			return
		}
		if r < 0 {
			t.Fatalf("negative rate %d from %q", r, s)
		}
		if r > 0 {
			// What String prints parses back to within rounding.
			back, err := ParseRate(r.String())
			if err != nil || back <= 0 {
				t.Fatalf("%q -> %d -> %q does not parse back: %v", s, r, r.String(), err)
			}
		}
	})
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"1MiB", "64 MB", "4096", "1.5 KiB", "-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := ParseSize(s); err == nil && n < 0 {
			t.Fatalf("negative size %d from %q", n, s)
		}
	})
}

// The limiter never lets bytes through faster than its rate (plus the one
// bucket it starts with). Only this direction is asserted: "not slower" would
// depend on how busy the machine is; BenchmarkLimiterAccuracy measures it.
func TestLimiterNeverExceedsRate(t *testing.T) {
	const rate = 4 << 20
	l := NewLimiter(rate)
	const total = 2 << 20
	start := time.Now()
	w := l.Writer(context.Background(), io.Discard)
	if _, err := io.Copy(w, bytes.NewReader(make([]byte, total))); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	floor := time.Duration(float64(total-l.burst) / rate * float64(time.Second))
	if elapsed < floor {
		t.Fatalf("%d bytes in %v at %d B/s: faster than the floor %v", total, elapsed, rate, floor)
	}
	var nl *Limiter
	if nl.Reader(context.Background(), bytes.NewReader(nil)) == nil || NewLimiter(0) != nil {
		t.Fatal("nil limiter must pass through")
	}
}

func TestLimiterHonoursContext(t *testing.T) {
	l := NewLimiter(1024)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := io.Copy(l.Writer(ctx, io.Discard), bytes.NewReader(make([]byte, 1<<20)))
	if err == nil {
		t.Fatal("limited copy ignored its context")
	}
}

// BenchmarkLimiterAccuracy reports how close a capped stream gets to its cap
// over one second per iteration: rate-ratio should be ~1.00.
func BenchmarkLimiterAccuracy(b *testing.B) {
	const rate = 8 << 20
	for b.Loop() {
		l := NewLimiter(rate)
		r := l.Reader(context.Background(), io.LimitReader(zeroReader{}, rate))
		start := time.Now()
		n, _ := io.Copy(io.Discard, r)
		b.ReportMetric(float64(n)/time.Since(start).Seconds()/rate, "rate-ratio")
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }
