package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The BitTorrent reference: aria2c leechers and an aria2c seeder with a
// local opentracker, on the same nodes, links (or, on loopback, the same
// upload cap, enforced by aria2), file and N as share. The distribution
// time runs from the start of the N leechers until the last of them has
// every piece verified (aria2's --on-bt-download-complete hook writes the
// time); leechers keep seeding until all are done. Every copy is compared
// with the source.

// btTools are the programs the reference needs, and their Debian packages.
var btTools = [][2]string{{"aria2c", "aria2"}, {"opentracker", "opentracker"}, {"mktorrent", "mktorrent"}}

// checkBitTorrent checks that the reference's tools are installed.
func checkBitTorrent() error {
	var missing, pkgs []string
	for _, t := range btTools {
		if _, err := exec.LookPath(t[0]); err != nil {
			missing = append(missing, t[0])
			pkgs = append(pkgs, t[1])
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("bench: --reference bittorrent needs %s; install with: apt-get install -y %s",
			strings.Join(missing, ", "), strings.Join(pkgs, " "))
	}
	return nil
}

const (
	trackerPort = 6969
	btPort      = 6881
	pieceLog    = 18 // 2^18 = 256 KiB pieces
)

// torrent is the reference's metainfo, made once per run.
type torrent struct {
	path     string
	infoHash []byte // 20 bytes
	host     string // the tracker's address
	port     int
}

// makeTorrent writes the torrent of the source file, announcing to the
// tracker at host:port.
func (b *bencher) makeTorrent(host string, port int) (*torrent, error) {
	t := &torrent{path: filepath.Join(b.work, "bench.torrent"), host: host, port: port}
	announce := fmt.Sprintf("http://%s/announce", net.JoinHostPort(host, strconv.Itoa(port)))
	// A public torrent (no -p), so that aria2 allows peer exchange.
	if out, err := exec.Command("mktorrent", "-l", strconv.Itoa(pieceLog), "-a", announce, "-o", t.path, b.src).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mktorrent: %v: %s", err, out)
	}
	out, err := exec.Command("aria2c", "-S", t.path).Output()
	if err != nil {
		return nil, fmt.Errorf("aria2c -S: %v", err)
	}
	m := regexp.MustCompile(`(?m)^Info Hash: ([0-9a-f]{40})$`).FindSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("aria2c -S %s: no info hash in %q", t.path, out)
	}
	t.infoHash = make([]byte, 20)
	for i := range t.infoHash {
		v, _ := strconv.ParseUint(string(m[1][2*i:2*i+2]), 16, 8)
		t.infoHash[i] = byte(v)
	}
	return t, nil
}

// proc is a process of the reference.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	rss  *rssWatch
}

func startProc(cmd *exec.Cmd, m *meter, kind string) (*proc, error) {
	p := &proc{cmd: orphanSafe(cmd), done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p.rss = watchRSS(cmd.Process.Pid)
	go func() { cmd.Wait(); m.add(kind, cmd.ProcessState, p.rss.end()); close(p.done) }()
	return p, nil
}

// stop ends the process with SIGTERM, and SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	if p == nil {
		return
	}
	p.rss.sample()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// btCommand runs a reference program on a node (loopback: here).
func (b *bencher) btCommand(node, name string, args ...string) *exec.Cmd {
	if b.net != nil {
		return b.nodes[node].Command(name, args...)
	}
	return exec.Command(name, args...)
}

// freePort returns a free TCP port of 127.0.0.1 (loopback runs).
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// bittorrent runs the reference for point p.
func (b *bencher) bittorrent(ctx context.Context, p *Point) error {
	dir := filepath.Join(b.work, fmt.Sprintf("%s%s-%s-n%d-r%d", p.Scenario, p.Variant, p.Mode, p.N, p.Run))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if b.torrent == nil {
		host, port := "127.0.0.1", 0
		if b.net != nil {
			host, port = b.nodes[nodeTracker].Addr().String(), trackerPort
		} else {
			var err error
			if port, err = freePort(); err != nil {
				return err
			}
		}
		t, err := b.makeTorrent(host, port)
		if err != nil {
			return err
		}
		b.torrent = t
	}
	t := b.torrent
	hc := httpClient
	if b.net != nil {
		hc = b.httpClient(nodeTracker)
	}

	// The tracker, chrooted to its directory with the whitelist of our
	// torrent (opentracker drops to nobody: the files must be readable).
	trDir := filepath.Join(dir, "tracker")
	if err := os.MkdirAll(trDir, 0o755); err != nil {
		return err
	}
	os.Chmod(trDir, 0o755)
	if err := os.WriteFile(filepath.Join(trDir, "whitelist.txt"), fmt.Appendf(nil, "%x\n", t.infoHash), 0o644); err != nil {
		return err
	}
	conf := filepath.Join(dir, "opentracker.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "access.whitelist /whitelist.txt\ntracker.rootdir %s\ntracker.user nobody\n", trDir), 0o644); err != nil {
		return err
	}
	port := strconv.Itoa(t.port)
	var trLog bytes.Buffer
	trCmd := b.btCommand(nodeTracker, "opentracker", "-f", conf, "-i", t.host, "-p", port, "-P", port)
	trCmd.Stdout, trCmd.Stderr = &trLog, &trLog
	tracker, err := startProc(trCmd, b.usage, KindTracker)
	if err != nil {
		return fmt.Errorf("opentracker: %w", err)
	}
	var seeder *proc
	var leechers []*proc
	defer func() {
		for _, l := range leechers {
			l.stop(5 * time.Second)
		}
		seeder.stop(5 * time.Second)
		tracker.stop(5 * time.Second)
	}()

	aria := []string{"--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false", "--enable-peer-exchange=true",
		"--disable-ipv6=true", "--summary-interval=0", "--console-log-level=warn", "--file-allocation=none",
		"--bt-tracker-interval=2", "--seed-ratio=0.0", "--log-level=notice", "--check-certificate=false",
		"--stop-with-process=" + strconv.Itoa(os.Getpid())}
	if b.net == nil {
		u := strconv.FormatInt(b.opts.UploadCap, 10)
		aria = append(aria, "--max-overall-upload-limit="+u, "--max-upload-limit="+u)
		if b.opts.DownloadCap > 0 {
			aria = append(aria, "--max-overall-download-limit="+strconv.FormatInt(b.opts.DownloadCap, 10))
		}
	}
	listen := func(k int) (string, error) {
		if b.net != nil {
			return strconv.Itoa(btPort), nil
		}
		p, err := freePort()
		return strconv.Itoa(p), err
	}

	// The seeder checks its copy (-V) and announces it; the leechers start
	// once the tracker counts it complete. The seeder starts once the
	// tracker answers, so that its first announce never meets a tracker
	// that is not listening yet.
	if err := waitTracker(ctx, hc, t, tracker); err != nil {
		return fmt.Errorf("%w (tracker: %s)", err, strings.TrimSpace(trLog.String()))
	}
	lp, err := listen(0)
	if err != nil {
		return err
	}
	// --pace: aria2's limits count payload bytes, as share's do.
	paced := func(node string) []string {
		if up := b.pacedUpload(node); up > 0 {
			u := strconv.FormatInt(up, 10)
			return []string{"--max-overall-upload-limit=" + u, "--max-upload-limit=" + u}
		}
		return nil
	}
	seedArgs := append(append(paced(nodeSource), aria...), "-V", "--dir="+filepath.Dir(b.src), "--listen-port="+lp,
		"--log="+filepath.Join(dir, "seed.log"), t.path)
	if seeder, err = startProc(b.btCommand(nodeSource, "aria2c", seedArgs...), b.usage, KindSource); err != nil {
		return fmt.Errorf("aria2c seeder: %w", err)
	}
	if err := waitSeeded(ctx, hc, t, tracker, seeder); err != nil {
		return fmt.Errorf("%w (tracker: %s)", err, strings.TrimSpace(trLog.String()))
	}
	hook := filepath.Join(b.work, "done-hook.sh")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\n# aria2 --on-bt-download-complete: GID, number of files, path\ndate +%s.%N > \"$(dirname \"$3\")/done.ts\"\n"), 0o755); err != nil {
		return err
	}
	start := time.Now()
	b.started = start
	for k := 1; k <= p.N; k++ {
		out := filepath.Join(dir, "L"+strconv.Itoa(k))
		if err := os.MkdirAll(out, 0o755); err != nil {
			return err
		}
		lp, err := listen(k)
		if err != nil {
			return err
		}
		args := append(append(paced("d"+strconv.Itoa(k)), aria...), "--seed-time=600", "--dir="+out, "--listen-port="+lp,
			"--log="+filepath.Join(dir, fmt.Sprintf("L%d.log", k)), "--on-bt-download-complete="+hook, t.path)
		l, err := startProc(b.btCommand("d"+strconv.Itoa(k), "aria2c", args...), b.usage, KindPeer)
		if err != nil {
			return fmt.Errorf("aria2c leecher %d: %w", k, err)
		}
		leechers = append(leechers, l)
	}
	// Wait until every leecher has written its time, or exited, or the
	// point times out.
	deadline := time.Now().Add(b.timeout(p.Bound))
	done := make([]float64, p.N)
	for {
		left := 0
		for k := range done {
			if done[k] != 0 {
				continue
			}
			if ts, err := os.ReadFile(filepath.Join(dir, "L"+strconv.Itoa(k+1), "done.ts")); err == nil {
				if v, err := strconv.ParseFloat(strings.TrimSpace(string(ts)), 64); err == nil {
					done[k] = v - float64(start.UnixNano())/1e9
					continue
				}
			}
			if leechers[k].exited() {
				done[k] = -1
				continue
			}
			left++
		}
		if left == 0 || ctx.Err() != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	var errs []error
	for k, d := range done {
		path := filepath.Join(dir, "L"+strconv.Itoa(k+1), b.name)
		if d <= 0 {
			p.Completions = append(p.Completions, -1)
			errs = append(errs, fmt.Errorf("leecher %d did not finish", k+1))
			continue
		}
		p.Completions = append(p.Completions, d)
		p.Finished++
		if b.identical(path) {
			p.Identical++
		} else {
			p.Corrupt++
			errs = append(errs, fmt.Errorf("leecher %d: copy differs from the source", k+1))
		}
	}
	if p.Finished == p.N {
		p.Distribution = 0
		for _, d := range p.Completions {
			p.Distribution = max(p.Distribution, d)
		}
	}
	return errors.Join(errs...)
}

// waitTracker waits until the tracker answers a scrape, for up to a minute.
func waitTracker(ctx context.Context, hc *http.Client, t *torrent, tracker *proc) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", scrapeURL(t), nil)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			return nil
		}
		if tracker.exited() {
			return fmt.Errorf("bittorrent: opentracker exited: %v", tracker.cmd.ProcessState)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bittorrent: opentracker did not answer: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// scrapeURL is the tracker's scrape of t. Every byte of the info hash is
// percent-encoded (BEP 3, BEP 48): url.QueryEscape writes a 0x20 byte as
// "+", which opentracker does not read as a space, so a torrent whose hash
// held one was never seen complete.
func scrapeURL(t *torrent) string {
	var q strings.Builder
	for _, c := range t.infoHash {
		fmt.Fprintf(&q, "%%%02X", c)
	}
	return fmt.Sprintf("http://%s/scrape?info_hash=%s", net.JoinHostPort(t.host, strconv.Itoa(t.port)), q.String())
}

// waitSeeded waits until the tracker counts a complete peer (the seeder
// has checked its copy and announced it), for up to a minute.
func waitSeeded(ctx context.Context, hc *http.Client, t *torrent, procs ...*proc) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	u := scrapeURL(t)
	complete := regexp.MustCompile(`8:completei([0-9]+)e`)
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
		if resp, err := hc.Do(req); err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			if m := complete.FindSubmatch(body); m != nil && string(m[1]) != "0" {
				return nil
			}
		}
		for _, p := range procs {
			if p.exited() {
				return fmt.Errorf("bittorrent: %s exited: %v", filepath.Base(p.cmd.Path), p.cmd.ProcessState)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bittorrent: the seeder was not announced: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
