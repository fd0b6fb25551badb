package netem

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// newNetwork returns a network with a prefix of its own (so that Cleanup
// tests never see other tests' networks), closed at the end of the test; it
// skips without root.
func newNetwork(t *testing.T, latency bool) *Network {
	t.Helper()
	n, err := New(Options{Prefix: testPrefix(), Latency: latency})
	if errors.Is(err, ErrNotRoot) {
		t.Skip("netem needs root (network namespaces, veth, qdiscs): run the test as root to check the kernel shaping")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Error(err)
		}
	})
	return n
}

func testPrefix() string { return fmt.Sprintf("nt%06d", rand.IntN(1e6)) }

func TestAddresses(t *testing.T) {
	p := netip.MustParsePrefix("10.77.0.0/16")
	tests := []struct {
		k    int
		want string
		ok   bool
	}{
		{1, "10.77.0.1", true},
		{255, "10.77.0.255", true},
		{256, "10.77.1.0", true},
		{65533, "10.77.255.253", true},
		{65534, "", false}, // kept free (the broadcast address is next)
		{0, "", false},
	}
	for _, tt := range tests {
		got, ok := nthHost(p, tt.k)
		if ok != tt.ok || (ok && got.String() != tt.want) {
			t.Errorf("nthHost(%v, %d) = %v, %v; want %s, %v", p, tt.k, got, ok, tt.want, tt.ok)
		}
	}
}

func TestLinkValidate(t *testing.T) {
	tests := []struct {
		l  Link
		ok bool
	}{
		{Link{}, true},
		{Link{Up: 1 << 20, Down: 8 << 20, Delay: 15 * time.Millisecond, Jitter: time.Millisecond, Loss: 0.001}, true},
		{Link{Up: -1}, false},
		{Link{Delay: -time.Millisecond}, false},
		{Link{Jitter: time.Millisecond}, false}, // jitter without delay
		{Link{Loss: 1.5}, false},
		{Link{Delay: time.Minute}, false},
	}
	for _, tt := range tests {
		if err := tt.l.validate(); (err == nil) != tt.ok {
			t.Errorf("%+v: validate = %v, want ok=%v", tt.l, err, tt.ok)
		}
	}
	if got := RTT(Link{Delay: 7500 * time.Microsecond}, Link{Delay: 7500 * time.Microsecond}); got != 30*time.Millisecond {
		t.Errorf("RTT = %v, want 30ms", got)
	}
}

// goodput is the TCP payload a link of rate bytes/s carries at most: 1448
// bytes of payload (MSS with timestamps) per 1514-byte Ethernet frame.
func goodput(rate int64) float64 { return float64(rate) * PayloadFraction }

// TestShapedRateAndDelay checks, iperf-style, that the kernel gives what was
// asked within 5 %: the rate of a node's upload and of another's download
// (TCP goodput over a few seconds, after a second of slow start, on a
// network of rates only: HTB alone), and the round trip between two delayed
// nodes (the minimum of a few ping-pongs over TCP: queues empty, as the
// delay alone). It also logs the goodput through the delay line, which must
// stay near the rate (at least 80 %: the delay line is a program, and a
// loaded machine can starve it).
func TestShapedRateAndDelay(t *testing.T) {
	if testing.Short() {
		t.Skip("measures rates and delays for seconds; not with -short (the race detector slows the delay line)")
	}
	const mbit = 1e6 / 8
	// A deep queue (1 s at the rate) keeps the link busy while a sender
	// on a loaded machine waits for a CPU: what is measured is the shaper.
	rates := newNetwork(t, false)
	c, err := rates.AddNode("c", Link{Down: 8 * mbit, Queue: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	d, err := rates.AddNode("d", Link{Up: 20 * mbit, Queue: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	e, err := rates.AddNode("e", Link{})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("upload", func(t *testing.T) {
		got := throughput(t, d, e, 8*time.Second)
		want := goodput(d.Link().Up)
		t.Logf("d -> e: %.3f Mbit/s goodput (asked %.1f Mbit/s up: %.3f Mbit/s of payload)", got*8/1e6, float64(d.Link().Up)*8/1e6, want*8/1e6)
		if got < 0.95*want || got > 1.05*want {
			t.Errorf("upload %.0f B/s, want %.0f within 5 %%", got, want)
		}
	})
	t.Run("download", func(t *testing.T) {
		got := throughput(t, e, c, 8*time.Second)
		want := goodput(c.Link().Down)
		t.Logf("e -> c: %.3f Mbit/s goodput (asked %.1f Mbit/s down: %.3f Mbit/s of payload)", got*8/1e6, float64(c.Link().Down)*8/1e6, want*8/1e6)
		if got < 0.95*want || got > 1.05*want {
			t.Errorf("download %.0f B/s, want %.0f within 5 %%", got, want)
		}
	})

	n := newNetwork(t, true)
	t.Logf("delay line: %s", n.DelayLine())
	a, err := n.AddNode("a", Link{Delay: 40 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.AddNode("b", Link{Delay: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	f, err := n.AddNode("f", Link{Up: 20 * mbit, Delay: 2500 * time.Microsecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("delay", func(t *testing.T) {
		// 120 ms: the minimum of 20 rounds, each with four wake-ups of
		// this process (a loaded machine adds milliseconds to some).
		want := RTT(a.Link(), b.Link())
		got := pingPong(t, a, b, 20)
		t.Logf("RTT a<->b: %v (asked %v)", got, want)
		if got < want || float64(got) > 1.05*float64(want) {
			t.Errorf("RTT %v, want %v within 5 %%", got, want)
		}
	})
	t.Run("delay-line-rate", func(t *testing.T) {
		got := throughput(t, f, b, 4*time.Second) // 45 ms RTT
		want := goodput(f.Link().Up)
		t.Logf("f -> b through the delay line: %.3f Mbit/s goodput (%.1f %% of %.3f)", got*8/1e6, 100*got/want, want*8/1e6)
		if got < 0.8*want || got > 1.05*want {
			t.Errorf("goodput through the delay line %.0f B/s, want about %.0f", got, want)
		}
	})
	t.Run("fan-out", func(t *testing.T) {
		// One 10 Mbit/s uplink with a 30 ms RTT and 0.1 % loss to each
		// of 8 downloaders at once, as a seed's in a swarm: the flows
		// share the uplink and keep it busy.
		l := Link{Up: 10 * mbit, Down: 50 * mbit, Delay: 7500 * time.Microsecond, Loss: 0.0005}
		s, err := n.AddNode("s", l)
		if err != nil {
			t.Fatal(err)
		}
		var rs []*Node
		for i := range 8 {
			r, err := n.AddNode(fmt.Sprintf("r%d", i), l)
			if err != nil {
				t.Fatal(err)
			}
			rs = append(rs, r)
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		total := 0.0
		for _, r := range rs {
			wg.Go(func() {
				got := throughput(t, s, r, 8*time.Second)
				mu.Lock()
				total += got
				mu.Unlock()
			})
		}
		wg.Wait()
		want := goodput(l.Up)
		t.Logf("8 flows from one 10 Mbit/s uplink: %.3f Mbit/s in all (%.1f %% of %.3f)", total*8/1e6, 100*total/want, want*8/1e6)
		if total < 0.9*want || total > 1.05*want {
			t.Errorf("fan-out goodput %.0f B/s, want about %.0f", total, want)
		}
	})
	t.Run("relink", func(t *testing.T) {
		if err := a.SetLink(Link{Delay: 60 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		want := RTT(a.Link(), b.Link()) // 160 ms
		if got := pingPong(t, a, b, 10); got < want || float64(got) > 1.05*float64(want) {
			t.Errorf("after SetLink: RTT %v, want %v", got, want)
		}
	})
}

// TestLossyLink checks what TCP gets from a DSL line: 10 Mbit/s up, 50
// down, 30 ms RTT and 0.1 % loss between two such nodes. By Mathis et al.
// (1997), a loss-limited Reno flow gets MSS/RTT × 1.22/√p = 14.9 Mbit/s
// there, more than the line: one long flow must fill the line (at least
// 90 % of its payload rate; 96-99 % measured with BBR and CUBIC, on a
// loaded machine). The loss is per packet: over a faster lossy link, where
// segments carry many packets, the packets lost are the fraction asked, the
// delay line cuts the GSO frames a loss hits, and what it cuts arrives
// whole (no checksum errors at the receiver, every byte as sent).
func TestLossyLink(t *testing.T) {
	if testing.Short() {
		t.Skip("measures a TCP flow for seconds; not with -short")
	}
	const mbit = 1e6 / 8
	n := newNetwork(t, true)
	dsl := Link{Up: 10 * mbit, Down: 50 * mbit, Delay: 7500 * time.Microsecond, Loss: 1 - math.Sqrt(1-0.001)}
	a, err := n.AddNode("a", dsl)
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.AddNode("b", dsl)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("one-flow", func(t *testing.T) {
		got := throughput(t, a, b, 12*time.Second)
		want := goodput(dsl.Up)
		t.Logf("one flow over a 0.1 %% loss, 30 ms RTT, 10 Mbit/s line: %.3f Mbit/s (%.1f %% of %.3f Mbit/s of payload)", got*8/1e6, 100*got/want, want*8/1e6)
		if got < 0.9*want || got > 1.05*want {
			t.Errorf("goodput %.0f B/s, want at least 90 %% of %.0f", got, want)
		}
	})
	t.Run("per-packet", func(t *testing.T) {
		const p = 0.003
		fast := Link{Up: 400 * mbit, Down: 400 * mbit, Delay: 500 * time.Microsecond, Loss: p}
		c, err := n.AddNode("c", fast)
		if err != nil {
			t.Fatal(err)
		}
		d, err := n.AddNode("d", fast)
		if err != nil {
			t.Fatal(err)
		}
		st0, _ := n.DelayLineStats()
		c0, _ := c.Counters()
		bad0 := inErrors(t, d)
		const size = 64 << 20
		sendChecked(t, c, d, size)
		st, _ := n.DelayLineStats()
		st = st.Sub(st0)
		c1, _ := c.Counters()
		bad := inErrors(t, d) - bad0
		pk, lost := c1.Up.Packets-c0.Up.Packets, c1.Up.Lost-c0.Up.Lost
		t.Logf("%d MiB over a link losing %.1f %% each way: %d packets from c, %d lost on its upload (%.3f %%), %d frames sent on by the delay line, %d cut; receiver checksum and header errors: %d",
			size>>20, 100*p, pk, lost, 100*float64(lost)/float64(pk), st.Frames, st.Cut, bad)
		if n.DelayLine() != DelayUserspace {
			return // the kernel's netem loses packets: nothing of ours to check
		}
		// Each packet sent is a Bernoulli trial (a retransmission too), so
		// the packets lost are binomial: about 140 ± 12 of 46,600. Within 5
		// standard deviations (a false failure once in 1.7 million runs);
		// a loss applied twice (280) is 12 away. That the line counts and
		// cuts right, to a fraction of a percent, TestForwardLossCounts
		// checks over millions of packets.
		want := p * float64(pk)
		if sd := math.Sqrt(want * (1 - p)); math.Abs(float64(lost)-want) > 5*sd {
			t.Errorf("lost %d of %d packets (%.4f), want %.0f ± %.0f (5 standard deviations of a binomial of p = %v)", lost, pk, float64(lost)/float64(pk), want, 5*sd, p)
		}
		if st.Cut == 0 || float64(pk) < 1.5*float64(st.Frames) {
			t.Errorf("%d frames cut, %d packets in %d frames: the test did not exercise GSO frames", st.Cut, pk, st.Frames)
		}
		if bad != 0 {
			t.Errorf("the receiver counted %d checksum or header errors: a cut frame was malformed", bad)
		}
	})
}

// inErrors returns the IPv4 header and TCP checksum errors node d counted
// (/proc/net/snmp of its namespace).
func inErrors(t *testing.T, d *Node) int64 {
	t.Helper()
	var b []byte
	if err := d.Do(func() error {
		var err error
		b, err = os.ReadFile("/proc/thread-self/net/snmp")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var total int64
	lines := strings.Split(string(b), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		for k := 1; k < len(names) && k < len(values); k++ {
			if names[0] == "Ip:" && names[k] == "InHdrErrors" || names[0] == "Tcp:" && names[k] == "InCsumErrors" {
				v, _ := strconv.ParseInt(values[k], 10, 64)
				total += v
			}
		}
	}
	return total
}

// sendChecked sends n pseudo-random bytes from a to b over TCP and checks
// that b receives them as sent.
func sendChecked(t *testing.T, from, to *Node, n int64) {
	t.Helper()
	ln, err := to.Listen("tcp", net.JoinHostPort(to.Addr().String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	seed := [32]byte{1, 2, 3}
	res := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			res <- err
			return
		}
		defer c.Close()
		want := io.LimitReader(rand.NewChaCha8(seed), n)
		got, wbuf := make([]byte, 64<<10), make([]byte, 64<<10)
		var off int64
		for {
			k, err := c.Read(got)
			if k > 0 {
				if _, err := io.ReadFull(want, wbuf[:k]); err != nil {
					res <- fmt.Errorf("more than the %d bytes sent", n)
					return
				}
				if !bytes.Equal(got[:k], wbuf[:k]) {
					res <- fmt.Errorf("bytes at %d differ from those sent", off)
					return
				}
				off += int64(k)
			}
			if err == io.EOF {
				if off != n {
					err = fmt.Errorf("%d of %d bytes arrived", off, n)
				} else {
					err = nil
				}
				res <- err
				return
			}
			if err != nil {
				res <- err
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := from.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(time.Minute))
	if _, err := io.Copy(c, io.LimitReader(rand.NewChaCha8(seed), n)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := <-res; err != nil {
		t.Fatal(err)
	}
}

// TestQueueBytes checks that a link's queue holds Queue's worth of bytes
// at its rate (a modem's buffer), whatever the packets: a sender that
// outruns a 10 Mbit/s uplink with a 100 ms queue fills 125 kB, then the
// queue drops.
func TestQueueBytes(t *testing.T) {
	const mbit = 1e6 / 8
	n := newNetwork(t, false)
	l := Link{Up: 10 * mbit, Queue: 100 * time.Millisecond}
	a, err := n.AddNode("a", l)
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.AddNode("b", Link{})
	if err != nil {
		t.Fatal(err)
	}
	var c net.Conn
	if err := a.Do(func() error {
		var err error
		c, err = net.Dial("udp", net.JoinHostPort(b.Addr().String(), "9"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var most uint32
	var drops uint32
	buf := make([]byte, 1400)
	for end := time.Now().Add(time.Second); time.Now().Before(end); {
		for range 64 {
			c.Write(buf) // a full queue refuses some (ENOBUFS): the point
		}
		cs, err := a.Counters()
		if err != nil {
			t.Fatal(err)
		}
		most, drops = max(most, cs.Up.Backlog), cs.Up.Drops
	}
	limit := float64(queueLen(l.Up, l) * frameBytes)
	t.Logf("10 Mbit/s uplink, 100 ms queue: at most %d bytes queued (limit %.0f), %d packets dropped", most, limit, drops)
	if float64(most) > limit || float64(most) < 0.8*limit || drops == 0 {
		t.Errorf("queue held at most %d bytes and dropped %d packets; want up to %.0f bytes, then drops", most, drops, limit)
	}
}

// pingPong returns the least round trip of one byte over TCP from a to b.
func pingPong(t *testing.T, a, b *Node, rounds int) time.Duration {
	t.Helper()
	ln, err := b.Listen("tcp", net.JoinHostPort(b.Addr().String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := a.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetNoDelay(true)
	best := time.Duration(1 << 62)
	buf := make([]byte, 1)
	for range rounds {
		start := time.Now()
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		best = min(best, time.Since(start))
	}
	return best
}

// throughput sends from a to b for d and returns the bytes per second b
// received after the first second (a longer d makes the scheduling noise
// of a loaded machine at both ends of the window smaller).
func throughput(t *testing.T, from, to *Node, d time.Duration) float64 {
	t.Helper()
	ln, err := to.Listen("tcp", net.JoinHostPort(to.Addr().String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type mark struct {
		at time.Time
		n  int64
	}
	res := make(chan []mark, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			res <- nil
			return
		}
		defer c.Close()
		var marks []mark
		var total int64
		buf := make([]byte, 64<<10)
		for {
			k, err := c.Read(buf)
			total += int64(k)
			marks = append(marks, mark{time.Now(), total})
			if err != nil {
				res <- marks
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	c, err := from.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.SetWriteDeadline(start.Add(d))
	buf := make([]byte, 64<<10)
	for time.Since(start) < d {
		if _, err := c.Write(buf); err != nil {
			break
		}
	}
	c.Close()
	marks := <-res
	// The rate between the first mark after 1 s and the last before d:
	// what was in flight at the close is not counted.
	i := slices.IndexFunc(marks, func(m mark) bool { return m.at.Sub(start) >= time.Second })
	j := slices.IndexFunc(marks, func(m mark) bool { return m.at.Sub(start) >= d })
	if i < 0 || j <= i {
		t.Fatalf("too few bytes arrived: %d reads", len(marks))
	}
	return float64(marks[j].n-marks[i].n) / marks[j].at.Sub(marks[i].at).Seconds()
}

// TestCommand runs a process inside a node: it sees the node's address,
// and its PID is the program's own.
func TestCommand(t *testing.T) {
	n := newNetwork(t, false)
	a, err := n.AddNode("a", Link{})
	if err != nil {
		t.Fatal(err)
	}
	out, err := a.Command("ip", "-4", "-o", "addr", "show", "dev", "eth0").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !strings.Contains(string(out), a.Addr().String()+"/16") {
		t.Errorf("eth0 in node a: %s; want %v/16", out, a.Addr())
	}
	cmd := a.Command("sh", "-c", "echo $$; exec sleep 30")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != fmt.Sprint(cmd.Process.Pid) {
		t.Errorf("the shell's PID %q is not the command's %d", line, cmd.Process.Pid)
	}
	// Close kills what is left in the namespaces.
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil {
		t.Errorf("sleep survived Close")
	}
	if _, err := os.Stat(nsDir + "/" + a.Namespace()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace %s left after Close: %v", a.Namespace(), err)
	}
}

// TestCleanupStale kills a process that owns a network (as kill -9 of a
// bench would), and checks that Cleanup removes its namespaces and the
// process left in one, and leaves a live owner's network alone.
func TestCleanupStale(t *testing.T) {
	if os.Getenv("NETEM_TEST_OWNER") != "" {
		return // the child's part runs in TestMain
	}
	live := newNetwork(t, false)
	if _, err := live.AddNode("a", Link{}); err != nil {
		t.Fatal(err)
	}
	prefix := strings.SplitN(live.Name(), "-", 2)[0]
	child := exec.Command(os.Args[0], "-test.run=^TestCleanupStale$")
	child.Env = append(os.Environ(), "NETEM_TEST_OWNER="+prefix)
	stdout, _ := child.StdoutPipe()
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		child.Process.Kill()
		child.Wait()
		t.Fatalf("child: %v", err)
	}
	stale := strings.TrimSpace(line)
	child.Process.Kill()
	child.Wait()
	if _, err := os.Stat(nsDir + "/" + stale + "-hub"); err != nil {
		t.Fatalf("the killed owner's hub namespace is not there: %v", err)
	}
	c, err := Cleanup(prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cleaned: %s", c)
	if len(c.Namespaces) != 3 || len(c.Killed) != 1 || !strings.Contains(c.Killed[0], "sleep") {
		t.Errorf("cleaned %v, killed %v; want the hub and 2 nodes, and one sleep", c.Namespaces, c.Killed)
	}
	for _, ns := range c.Namespaces {
		if !strings.HasPrefix(ns, stale) {
			t.Errorf("cleaned %s, not of the dead owner", ns)
		}
	}
	for _, d := range append(live.Nodes(), live.hub) {
		if _, err := os.Stat(nsDir + "/" + d.Namespace()); err != nil {
			t.Errorf("the live network lost %s: %v", d.Namespace(), err)
		}
	}
}

// TestMain runs the owner of TestCleanupStale's stale network: it builds a
// network with two nodes, leaves a process in one, prints the network's
// name and waits to be killed.
func TestMain(m *testing.M) {
	if prefix := os.Getenv("NETEM_TEST_OWNER"); prefix != "" {
		n, err := New(Options{Prefix: prefix, Latency: true})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		n.AddNode("a", Link{Up: 1 << 20, Delay: time.Millisecond})
		b, _ := n.AddNode("b", Link{})
		// The shell prints once it runs inside the namespace (ip has
		// entered it): only then is the leftover there to be found.
		cmd := b.Command("sh", "-c", "echo in; exec sleep 600")
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		bufio.NewReader(out).ReadString('\n')
		fmt.Println(n.Name())
		time.Sleep(10 * time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestNeighbours: every node has a permanent neighbour entry for every
// other, with its eth0's MAC, also for a node added later, so that no node
// needs ARP (the kernel's one neighbour table for all namespaces overflows
// with the N^2 entries of a large cluster).
func TestNeighbours(t *testing.T) {
	n := newNetwork(t, false)
	var nodes []*Node
	for _, name := range []string{"a", "b", "c"} {
		d, err := n.AddNode(name, Link{})
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, d)
	}
	for _, d := range nodes {
		neigh, err := d.handle.NeighList(d.eth0.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range nodes {
			if o == d {
				continue
			}
			found := false
			for _, e := range neigh {
				if e.IP.Equal(o.addr.AsSlice()) {
					found = true
					if e.State != netlink.NUD_PERMANENT || e.HardwareAddr.String() != o.eth0.Attrs().HardwareAddr.String() {
						t.Errorf("node %s: entry for %s: state %#x, MAC %v; want permanent, %v", d.name, o.name, e.State, e.HardwareAddr, o.eth0.Attrs().HardwareAddr)
					}
				}
			}
			if !found {
				t.Errorf("node %s has no neighbour entry for %s (%v)", d.name, o.name, o.addr)
			}
		}
	}
	// They reach each other.
	ln, err := nodes[2].Listen("tcp", net.JoinHostPort(nodes[2].Addr().String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := nodes[0].DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("a dialling c: %v", err)
	}
	c.Close()
}
