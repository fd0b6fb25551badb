package server

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/sharefiles/share/transfer"
)

// BenchmarkLoopbackGet moves a 256 MiB share from a server to a client over
// loopback, into a file, and reports its MB/s beside a plain HTTP GET of the
// same file into a file (what curl -o does) in the same run: ratio > 1 means
// the chunked, verified download is faster than the plain one.
func BenchmarkLoopbackGet(b *testing.B) {
	const size = 256 << 20
	ts := startServer(b, nil, nil)
	c := ts.client(b, testToken)
	var key [32]byte
	info, err := c.Upload(context.Background(), "bench.bin", io.LimitReader(rand.NewChaCha8(key), size), size)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	var shareTime, plainTime time.Duration
	b.SetBytes(size)
	for b.Loop() {
		out := filepath.Join(dir, "share.bin")
		start := time.Now()
		if _, _, err := c.Get(context.Background(), info.ID, transfer.GetOptions{Out: out}); err != nil {
			b.Fatal(err)
		}
		shareTime += time.Since(start)
		os.Remove(out)

		b.StopTimer()
		start = time.Now()
		plainGet(b, ts.URL+"/v1/shares/"+info.ID.String(), filepath.Join(dir, "plain.bin"))
		plainTime += time.Since(start)
		os.Remove(filepath.Join(dir, "plain.bin"))
		b.StartTimer()
	}
	n := float64(b.N) * size / 1e6
	b.ReportMetric(n/shareTime.Seconds(), "share-MB/s")
	b.ReportMetric(n/plainTime.Seconds(), "plain-GET-MB/s")
	b.ReportMetric(plainTime.Seconds()/shareTime.Seconds(), "speed-ratio")
}

func plainGet(b *testing.B, url, out string) {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	f, err := os.Create(out)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkLoopbackGetUnverified is BenchmarkLoopbackGet's plain GET (the
// whole-file route, sendfile) and share get (the chunk route) of a share
// whose chunks this process has not read yet, as after a restart: each is
// hashed from disk on its first read (see transfer/verify.go). Each round
// reopens the store, so every round pays it; beside it, the same GET of
// the share once verified, in the same run. CPU-s/GiB are the process's
// (server and client: both run here).
func BenchmarkLoopbackGetUnverified(b *testing.B) {
	const size = 256 << 20
	dir := b.TempDir()
	st, err := transfer.OpenStore(dir, transfer.StoreOptions{})
	if err != nil {
		b.Fatal(err)
	}
	var key [32]byte
	sh, err := st.Import(context.Background(), "bench.bin", io.LimitReader(rand.NewChaCha8(key), size), transfer.ImportOptions{})
	if err != nil {
		b.Fatal(err)
	}
	id := sh.ID()
	st.Close()
	out := b.TempDir()
	var first, again [2]time.Duration // wall, CPU
	var shareFirst, shareAgain [2]time.Duration
	measure := func(acc *[2]time.Duration, f func()) {
		start, cpu := time.Now(), cpuTime()
		f()
		acc[0] += time.Since(start)
		acc[1] += cpuTime() - cpu
	}
	b.SetBytes(size)
	for b.Loop() {
		st, err := transfer.OpenStore(dir, transfer.StoreOptions{})
		if err != nil {
			b.Fatal(err)
		}
		ts := startServer(b, st, nil)
		url := ts.URL + "/v1/shares/" + id.String()
		measure(&first, func() { plainGet(b, url, filepath.Join(out, "plain.bin")) })
		measure(&again, func() { plainGet(b, url, filepath.Join(out, "plain.bin")) })
		ts.stop()
		st.Close()

		if st, err = transfer.OpenStore(dir, transfer.StoreOptions{}); err != nil {
			b.Fatal(err)
		}
		ts = startServer(b, st, nil)
		c := ts.client(b, testToken)
		for _, acc := range []*[2]time.Duration{&shareFirst, &shareAgain} {
			o := filepath.Join(out, "share.bin")
			measure(acc, func() {
				if _, _, err := c.Get(context.Background(), id, transfer.GetOptions{Out: o}); err != nil {
					b.Fatal(err)
				}
			})
			os.Remove(o)
		}
		ts.stop()
		st.Close()
	}
	gib := float64(b.N) * size / (1 << 30)
	mbs := func(d time.Duration) float64 { return float64(b.N) * size / 1e6 / d.Seconds() }
	b.ReportMetric(mbs(first[0]), "plain-first-MB/s")
	b.ReportMetric(mbs(again[0]), "plain-verified-MB/s")
	b.ReportMetric(first[1].Seconds()/gib, "plain-first-CPU-s/GiB")
	b.ReportMetric(again[1].Seconds()/gib, "plain-verified-CPU-s/GiB")
	b.ReportMetric(mbs(shareFirst[0]), "share-first-MB/s")
	b.ReportMetric(mbs(shareAgain[0]), "share-verified-MB/s")
	b.ReportMetric(shareFirst[1].Seconds()/gib, "share-first-CPU-s/GiB")
	b.ReportMetric(shareAgain[1].Seconds()/gib, "share-verified-CPU-s/GiB")
}

// cpuTime is the CPU time this process used so far (user + system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
