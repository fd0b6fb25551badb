package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// daemon is a running `share serve` or `share peer` process.
type daemon struct {
	name  string
	kind  string // KindSource or KindPeer
	cmd   *exec.Cmd
	data  string
	api   string       // base URL of its HTTP API
	token string       // API token
	addrs []string     // a peer's full multiaddrs
	http  *http.Client // reaches its API; nil: httpClient (loopback)
	done  chan struct{}
	log   *bytes.Buffer // stderr, for failures
	rss   *rssWatch
	mu    sync.Mutex
}

// startTimeout bounds how long a daemon may take to print its addresses.
const startTimeout = 30 * time.Second

// orphanSafe makes cmd die with the harness: a `kill -9` of `share bench`
// must not leave daemons running (PR_SET_PDEATHSIG, kept across exec of a
// binary that is not set-user-ID).
func orphanSafe(cmd *exec.Cmd) *exec.Cmd {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	return cmd
}

// startDaemon runs cmd (share serve or share peer) and waits for it to print
// its API URL and token. m counts the process's cost once it exits.
func startDaemon(cmd *exec.Cmd, m *meter, kind, name, data string) (*daemon, error) {
	d := &daemon{name: name, kind: kind, data: data, cmd: orphanSafe(cmd), done: make(chan struct{}), log: new(bytes.Buffer)}
	d.cmd.Env = append(os.Environ(), "SHARE_TOKEN=", "SHARE_SERVER=", "SHARE_BOOTSTRAP=")
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	d.cmd.Stderr = &syncWriter{w: d.log, mu: &d.mu}
	if err := d.cmd.Start(); err != nil {
		return nil, err
	}
	d.rss = watchRSS(d.cmd.Process.Pid)
	go func() { d.cmd.Wait(); m.add(kind, d.cmd.ProcessState, d.rss.end()); close(d.done) }()
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	for d.token == "" {
		select {
		case line, ok := <-lines:
			if !ok {
				d.kill()
				return nil, fmt.Errorf("%s exited before it was ready: %s", name, d.stderr())
			}
			switch {
			case strings.HasPrefix(line, "/"):
				d.addrs = append(d.addrs, line)
			case strings.Contains(line, "listening on "):
				d.api = line[strings.Index(line, "listening on ")+len("listening on "):]
			case strings.HasPrefix(line, "api:"):
				d.api = strings.TrimSpace(strings.TrimPrefix(line, "api:"))
			case strings.HasPrefix(line, "token:"):
				d.token = strings.TrimSpace(strings.TrimPrefix(line, "token:"))
			}
		case <-timer.C:
			d.kill()
			return nil, fmt.Errorf("%s did not start within %v: %s", name, startTimeout, d.stderr())
		}
	}
	go func() {
		for range lines {
		}
	}()
	if d.api == "" {
		d.kill()
		return nil, fmt.Errorf("%s printed no API address", name)
	}
	return d, nil
}

type syncWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (d *daemon) stderr() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.log.String()
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	return s
}

// kill stops the process at once (SIGKILL), as a crash or a pulled plug would.
func (d *daemon) kill() {
	d.rss.sample()
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
}

// stop asks the process to stop (SIGTERM) and waits; it kills it if needed.
func (d *daemon) stop() {
	select {
	case <-d.done:
		return
	default:
	}
	d.rss.sample()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		d.kill()
	}
}

func (d *daemon) alive() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// env is the environment a client of this daemon runs with.
func (d *daemon) env() []string {
	return append(os.Environ(), "SHARE_SERVER="+d.api, "SHARE_TOKEN="+d.token, "SHARE_BOOTSTRAP=")
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

// get sends an authorized GET for an API path; any status but 200 is an
// error. The caller closes the body.
func (d *daemon) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", d.api+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+d.token)
	hc := d.http
	if hc == nil {
		hc = httpClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		return nil, fmt.Errorf("%s %s: HTTP %d", d.name, path, resp.StatusCode)
	}
	return resp, nil
}

// metrics reads the daemon's Prometheus metrics.
func (d *daemon) metrics(ctx context.Context) (metrics, error) {
	resp, err := d.get(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: metrics: %w", d.name, err)
	}
	m := metrics{}
	for name, f := range fams {
		for _, mm := range f.GetMetric() {
			v := mm.GetCounter().GetValue() + mm.GetGauge().GetValue()
			key := name
			for _, l := range mm.GetLabel() {
				key += "|" + l.GetName() + "=" + l.GetValue()
			}
			m[key] = v
			m[name+"|*"] += v // sum over label values
		}
	}
	return m, nil
}

// metrics maps "name|label=value..." (and "name|*" for the sum over all
// label values) to values.
type metrics map[string]float64

// sum returns a metric summed over its labels.
func (m metrics) sum(name string) float64 { return m[name+"|*"] }

// shareCmd runs cmd, a client command of the share binary against d, and
// returns its stdout. m counts its cost.
func shareCmd(cmd *exec.Cmd, m *meter, d *daemon, dir string) (string, error) {
	args := cmd.Args[1:]
	orphanSafe(cmd)
	cmd.Dir = dir
	cmd.Env = d.env()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Start()
	if err == nil {
		rss := watchRSS(cmd.Process.Pid)
		err = cmd.Wait()
		m.add(KindClient, cmd.ProcessState, rss.end())
	}
	if err != nil {
		return "", fmt.Errorf("share %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// getRun is one `share get` process.
type getRun struct {
	node     int
	out      string
	cmd      *exec.Cmd
	stderr   bytes.Buffer
	finished time.Duration // since the run's start; 0 while running
	err      error
	done     chan struct{}
}

// startGet starts cmd, a `share get` against d writing to out; m counts its
// cost.
func startGet(cmd *exec.Cmd, m *meter, d *daemon, node int, out string, start time.Time) (*getRun, error) {
	g := &getRun{node: node, out: out, cmd: orphanSafe(cmd), done: make(chan struct{})}
	g.cmd.Env = d.env()
	g.cmd.Stderr = &g.stderr
	if err := g.cmd.Start(); err != nil {
		return nil, err
	}
	rss := watchRSS(g.cmd.Process.Pid)
	go func() {
		err := g.cmd.Wait()
		g.finished = time.Since(start)
		m.add(KindClient, g.cmd.ProcessState, rss.end())
		if err != nil {
			g.err = fmt.Errorf("node %d: share get: %v: %s", node, err, strings.TrimSpace(g.stderr.String()))
		}
		close(g.done)
	}()
	return g, nil
}

func (g *getRun) running() bool {
	select {
	case <-g.done:
		return false
	default:
		return true
	}
}

// wait waits for the get or ctx; on ctx it kills the get.
func (g *getRun) wait(ctx context.Context) error {
	select {
	case <-g.done:
		return g.err
	case <-ctx.Done():
		g.cmd.Process.Signal(syscall.SIGKILL)
		<-g.done
		return errors.Join(ctx.Err(), g.err)
	}
}
