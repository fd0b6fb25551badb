package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// rcvLowat reads SO_RCVLOWAT of c's socket.
func rcvLowat(t *testing.T, c *net.TCPConn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVLOWAT) })
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}

// TestLowWaterMark: the mark follows the body's rate, never exceeds what is
// left of the body, and is back to one byte at its end.
func TestLowWaterMark(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("SO_RCVLOWAT is used on Linux only")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	tc := sc.(*net.TCPConn)

	if newLowWater(context.Background(), 8<<20) != nil {
		t.Fatal("a lowWater without a connection in the context")
	}
	ctx := withConn(context.Background(), sc)
	if newLowWater(ctx, -1) != nil || newLowWater(ctx, lowatMin) != nil {
		t.Fatal("a lowWater for a body of unknown length or a small one")
	}
	l := newLowWater(ctx, 8<<20)
	if l == nil {
		t.Fatal("no lowWater for an 8 MiB body on TCP")
	}
	l.before(1 << 20)                // nothing read yet: no rate to go by
	if v := rcvLowat(t, tc); v > 1 { // the default reads as 0 or 1 by kernel
		t.Fatalf("mark %d before the first byte, want 1", v)
	}
	// 1 MiB in 5 ms is 200 MiB/s: 10 ms of it is 2 MiB, over the cap.
	l.start = time.Now().Add(-5 * time.Millisecond)
	l.after(1 << 20)
	l.before(4 << 20)
	if v := rcvLowat(t, tc); v != lowatMax {
		t.Fatalf("mark %d at 100 MiB/s, want %d", v, lowatMax)
	}
	time.Sleep(2 * lowatWatchdog) // a read that waits this long: the mark goes down
	if v := rcvLowat(t, tc); v > 1 {
		t.Fatalf("mark %d after the watchdog, want 1", v)
	}
	l.after(0)
	l.before(64 << 10) // a read of 64 KiB waits for no more than 64 KiB
	if v := rcvLowat(t, tc); v != 64<<10 {
		t.Fatalf("mark %d for a 64 KiB read, want %d", v, 64<<10)
	}
	l.after(7<<20 - 100<<10) // 100 KiB left
	l.before(1 << 20)
	if v := rcvLowat(t, tc); v != 100<<10 {
		t.Fatalf("mark %d with 100 KiB of the body left, want %d", v, 100<<10)
	}
	// A slow body (1 MiB in 10 s: 1 KiB per 10 ms) keeps the default.
	l.start = time.Now().Add(-10 * time.Second)
	l.read = 1 << 20
	l.before(1 << 20)
	if v := rcvLowat(t, tc); v > 1 {
		t.Fatalf("mark %d for a slow body, want 1", v)
	}
	l.start = time.Now().Add(-10 * time.Millisecond)
	l.before(1 << 20)
	l.after(100 << 10)
	if v := rcvLowat(t, tc); v > 1 {
		t.Fatalf("mark %d at the body's end, want 1", v)
	}
}

// rawPut opens a connection to ts and sends the head of an upload of a
// body of size bytes to name; the test writes the body. The connection is
// closed when the test ends.
func rawPut(t *testing.T, ts *testServer, name string, size int) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", ts.URL[len("http://"):])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, "PUT /v1/shares/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", name, testToken, size)
	return c
}

// TestLowWaterKeepsBodiesWhole: a large upload sent in bursts and small
// writes, with pauses and a last piece smaller than any mark, is stored
// whole and answered at once, and the next request on the same connection
// is answered too (the mark is back to one byte).
func TestLowWaterKeepsBodiesWhole(t *testing.T) {
	ts := startServer(t, nil, nil)
	data := make([]byte, 6<<20+12345)
	rand.Read(data)
	c := rawPut(t, ts, "big.bin", len(data))
	rest := data
	send := func(n int) {
		n = min(n, len(rest))
		if _, err := c.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	send(4 << 20) // fast: the mark goes up
	for range 32 {
		send(16 << 10)
	}
	time.Sleep(50 * time.Millisecond)
	for len(rest) > 1000 {
		send(len(rest) - 1000)
	}
	time.Sleep(50 * time.Millisecond)
	send(1000)
	start := time.Now()
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %d %s", resp.StatusCode, body)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the answer came %v after the last byte: a read waited for bytes that were not coming", d)
	}
	var info struct{ ID string }
	if err := json.Unmarshal(body, &info); err != nil || info.ID == "" {
		t.Fatalf("PUT answered %s (%v)", body, err)
	}
	got := readBody(t, request(t, "GET", ts.URL+"/v1/shares/"+info.ID, testToken, nil))
	if !bytes.Equal(got, data) {
		t.Fatalf("stored %d bytes, not the %d sent", len(got), len(data))
	}
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("the next request on the connection: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the next request on the connection: %d", resp.StatusCode)
	}
}

// TestLowWaterSlowedClient: a client that sends fast, then slowly (100 KiB/s,
// a mark's worth of its old rate taking seconds), is read as it sends: no
// read waits for the idle timeout (1 s here) for a mark set at the old rate.
func TestLowWaterSlowedClient(t *testing.T) {
	ts := startServer(t, nil, func(o *Options) { o.TransferIdle = time.Second })
	data := make([]byte, 4<<20+300<<10)
	rand.Read(data)
	c := rawPut(t, ts, "slowed.bin", len(data))
	if _, err := c.Write(data[:4<<20]); err != nil {
		t.Fatal(err)
	}
	for rest := data[4<<20:]; len(rest) > 0; rest = rest[10<<10:] {
		time.Sleep(100 * time.Millisecond)
		if _, err := c.Write(rest[:10<<10]); err != nil {
			t.Fatalf("the server stopped reading: %v", err)
		}
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %d %s", resp.StatusCode, body)
	}
}

// TestLowWaterDownload: a client's download body is read with the mark
// (over HTTP/1.1, length known), whole, also when the server slows down
// after a fast start, and the connection serves the next request.
func TestLowWaterDownload(t *testing.T) {
	data := make([]byte, 4<<20+300<<10)
	rand.Read(data)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data[:4<<20])
		w.(http.Flusher).Flush()
		for rest := data[4<<20:]; len(rest) > 0; rest = rest[10<<10:] {
			time.Sleep(50 * time.Millisecond)
			w.Write(rest[:10<<10])
			w.(http.Flusher).Flush()
		}
	}))
	defer srv.Close()
	c, err := NewClient(srv.URL, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		resp, err := c.do(ctx, http.MethodGet, "/x", nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := resp.Body.(*lowWaterBody); !ok && runtime.GOOS == "linux" {
			t.Errorf("the body is a %T, not read with the low-water mark", resp.Body)
		}
		// Reads of 1 MiB, as a chunk's: a mark set at the fast start's
		// rate would hold the next read until the last of the 30 slow
		// writes, 50 ms apart, came (1.5 s); the watchdog lets it return
		// what came.
		var got []byte
		buf := make([]byte, 1<<20)
		last, gap := time.Now(), time.Duration(0)
		for {
			n, err := resp.Body.Read(buf)
			got = append(got, buf[:n]...)
			gap, last = max(gap, time.Since(last)), time.Now()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		resp.Body.Close()
		cancel()
		if !bytes.Equal(got, data) {
			t.Fatalf("read %d bytes, not the %d sent", len(got), len(data))
		}
		if gap > 500*time.Millisecond {
			t.Errorf("a read waited %v for a slow server's bytes", gap)
		}
	}
}
