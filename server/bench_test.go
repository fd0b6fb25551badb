package server

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
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
