package server

import (
	"context"
	"io"
	"net"
	"sync"
	"syscall"
	"time"
)

// Reading a request body with fewer wake-ups.
//
// A client that sends a large body in small writes (a browser hands its
// network process 16 to 64 KiB at a time) wakes the server for each one
// that finds the connection idle: the reading goroutine parks, the poller
// wakes it, the runtime wakes another thread and its monitor (sysmon), and a
// 1 GiB upload from Chromium cost the server 2.2 CPU-seconds against 0.8 for
// the same file from curl, a third of it in the runtime's own threads. While
// a body is being read, its socket's receive low-water mark (SO_RCVLOWAT,
// socket(7); for TCP the kernel then signals readability only once that
// many bytes are queued, Linux 4.18 and later) is raised to what the body
// brings in lowatWindow at the rate it has come so far, at most lowatMax and
// never more than the bytes of the body still to come, so a read never
// waits for bytes the client will not send. A client that slows down does
// not leave a read waiting for a mark set at its old rate: lowatWatchdog
// after a read began, the mark goes back to one byte (lowering it makes the
// kernel signal at once what is queued), so a read waits at most that long
// for a slow client's bytes, and the idle timeout of the body
// (Options.TransferIdle) keeps its meaning. The mark is one byte again when
// the body ends, so the connection's next request wakes the server as
// before. Bodies of unknown length, connections that are not TCP and
// HTTP/2 (whose streams share a connection) are read as before. The
// client does the same for the bodies it downloads (Client.do): over a
// line slower than loopback they arrive a packet or two at a time (a
// 1 Gbit/s emulated LAN: the client's CPU for 256 MiB 1.13-1.30 s
// instead of 1.28-1.65 s).
const (
	lowatWindow   = 10 * time.Millisecond // the wait for a read's bytes at the body's rate
	lowatWatchdog = 50 * time.Millisecond // the longest a read waits with the mark up
	lowatMax      = 1 << 20               // bytes; one wake-up per MiB at most
	lowatMin      = 16 << 10              // below this, the default of one byte is kept
)

type connKey struct{}

// withConn is the http.Server's ConnContext: it puts the connection into
// the context of its requests, for lowWater.
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// lowWater sets the receive low-water mark of one TCP connection while a
// request body of known length is read. before, after and done are called
// by the one goroutine reading the body (HTTP/1.1 reads a connection's
// requests in turn); the watchdog runs on a goroutine of its own.
type lowWater struct {
	rc    syscall.RawConn
	left  int64 // bytes of the body not read yet
	read  int64
	start time.Time
	dog   *time.Timer

	mu  sync.Mutex
	set int // the mark now set; 1 is the default (read back as 0 or 1)
}

// newLowWater returns a lowWater for a body of length bytes read from the
// connection in ctx, or nil if there is none or it is not TCP (length < 0:
// unknown, chunked).
func newLowWater(ctx context.Context, length int64) *lowWater {
	c, _ := ctx.Value(connKey{}).(net.Conn)
	return connLowWater(c, length)
}

// connLowWater returns a lowWater for a body of length bytes read from c,
// or nil if c is not TCP or the body is unknown or small.
func connLowWater(c net.Conn, length int64) *lowWater {
	if length < 2*lowatMin {
		return nil
	}
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok { // TLS
		c = nc.NetConn()
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	l := &lowWater{rc: rc, left: length, start: time.Now(), set: 1}
	l.dog = time.AfterFunc(time.Hour, func() { l.mark(1) })
	l.dog.Stop()
	return l
}

// before sets the mark for a read of up to n bytes.
func (l *lowWater) before(n int) {
	want := 1
	if el := time.Since(l.start); l.read > 0 && el > 0 {
		want = int(min(int64(float64(l.read)*lowatWindow.Seconds()/el.Seconds()), lowatMax, l.left, int64(n)))
		if want < lowatMin {
			want = 1
		}
	}
	l.mark(want)
	if want > 1 {
		l.dog.Reset(lowatWatchdog)
	}
}

// after accounts for n bytes read; at the body's end the mark goes back to
// one byte.
func (l *lowWater) after(n int) {
	l.dog.Stop()
	l.read += int64(n)
	l.left -= int64(n)
	if l.left <= 0 {
		l.mark(1)
	}
}

// done puts the default back, whatever was read.
func (l *lowWater) done() {
	l.dog.Stop()
	l.mark(1)
}

func (l *lowWater) mark(v int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if v == l.set {
		return
	}
	if setRcvLowat(l.rc, v) == nil {
		l.set = v
	}
}

// lowWaterBody reads a body of known length with lw's mark: a request body
// on the server's side, a response body on the client's.
type lowWaterBody struct {
	io.ReadCloser
	lw *lowWater
}

func (b *lowWaterBody) Read(p []byte) (int, error) {
	b.lw.before(len(p))
	n, err := b.ReadCloser.Read(p)
	b.lw.after(n)
	if err != nil {
		b.lw.done()
	}
	return n, err
}

func (b *lowWaterBody) Close() error {
	b.lw.done()
	return b.ReadCloser.Close()
}
