package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/sec"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
)

// countingConn counts the writes that reach the socket.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// securePair runs libp2p TLS handshakes over a loopback TCP connection: the
// dialer with dial, the listener with listen (either libp2ptls's plain
// transport or newBatchedTLS's), and returns both secured ends and the
// dialer's socket counter.
func securePair(t *testing.T, batchedDialer, batchedListener bool) (client, server sec.SecureConn, clientSock *countingConn) {
	t.Helper()
	mk := func(batched bool) (sec.SecureTransport, peer.ID) {
		key, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := peer.IDFromPrivateKey(key)
		if batched {
			tr, err := newBatchedTLS(libp2ptls.ID, key, nil)
			if err != nil {
				t.Fatal(err)
			}
			return tr, id
		}
		tr, err := libp2ptls.New(libp2ptls.ID, key, nil)
		if err != nil {
			t.Fatal(err)
		}
		return tr, id
	}
	ct, _ := mk(batchedDialer)
	st, sid := mk(batchedListener)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   sec.SecureConn
		err error
	}
	accepted := make(chan res, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			accepted <- res{nil, err}
			return
		}
		c, err := st.SecureInbound(ctx, raw, "")
		accepted <- res{c, err}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	clientSock = &countingConn{Conn: raw}
	client, err = ct.SecureOutbound(ctx, clientSock, sid)
	if err != nil {
		t.Fatal(err)
	}
	r := <-accepted
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { client.Close(); r.c.Close() })
	return client, r.c, clientSock
}

// TestBatchedTLSOneWritePerFrame: a 64 KiB Write (a yamux frame) is four
// TLS records; batched, they reach the socket in one write(2) instead of
// four or five, and a 1 MiB Write in batches of maxRecordBatch. The bytes
// arrive whole at a peer that does not batch.
func TestBatchedTLSOneWritePerFrame(t *testing.T) {
	for _, tc := range []struct {
		size, maxWrites int
	}{
		{64 << 10, 1},
		{1 << 20, (1<<20)/maxRecordBatch + 1},
	} {
		client, server, sock := securePair(t, true, false)
		if _, ok := client.(*batchedConn); !ok {
			t.Fatalf("newBatchedTLS gave a %T", client)
		}
		msg := make([]byte, tc.size)
		rand.Read(msg)
		// Past TLS's dynamic record sizing, which starts with small records
		// for the first ~1 MB (crypto/tls, Config.DynamicRecordSizingDisabled).
		warm := make([]byte, 2<<20)
		server.SetReadDeadline(time.Now().Add(10 * time.Second))
		drained := make(chan error, 1)
		go func() { _, err := io.CopyN(io.Discard, server, int64(len(warm))); drained <- err }()
		if _, err := client.Write(warm); err != nil {
			t.Fatal(err)
		}
		if err := <-drained; err != nil {
			t.Fatal(err)
		}
		got := make(chan []byte, 1)
		go func() {
			b := make([]byte, len(msg))
			io.ReadFull(server, b)
			got <- b
		}()
		before := sock.writes.Load()
		if _, err := client.Write(msg); err != nil {
			t.Fatal(err)
		}
		n := int(sock.writes.Load() - before)
		if n < 1 || n > tc.maxWrites {
			t.Errorf("a Write of %d bytes took %d socket writes, want 1 to %d", tc.size, n, tc.maxWrites)
		}
		select {
		case b := <-got:
			if !bytes.Equal(b, msg) {
				t.Fatalf("%d bytes: the peer read other bytes", tc.size)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%d bytes: the peer did not get them: the batch was not written", tc.size)
		}
	}
}

// TestBatchedTLSInterop: batched and plain ends talk TLS 1.3 to each other
// in both roles, in both directions, and a Close's close_notify (written by
// TLS outside any Write) reaches the peer at once as EOF.
func TestBatchedTLSInterop(t *testing.T) {
	for _, tc := range []struct {
		name             string
		dialer, listener bool
	}{{"batched-to-plain", true, false}, {"plain-to-batched", false, true}, {"batched-to-batched", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			client, server, _ := securePair(t, tc.dialer, tc.listener)
			for _, dir := range []struct {
				name string
				w, r sec.SecureConn
			}{{"client to server", client, server}, {"server to client", server, client}} {
				msg := make([]byte, 300<<10+7)
				rand.Read(msg)
				done := make(chan error, 1)
				go func() {
					for p := msg; len(p) > 0; {
						k := min(len(p), 70<<10)
						if _, err := dir.w.Write(p[:k]); err != nil {
							done <- err
							return
						}
						p = p[k:]
					}
					done <- nil
				}()
				b := make([]byte, len(msg))
				dir.r.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.ReadFull(dir.r, b); err != nil {
					t.Fatalf("%s: %v", dir.name, err)
				}
				if err := <-done; err != nil {
					t.Fatalf("%s: write: %v", dir.name, err)
				}
				if !bytes.Equal(b, msg) {
					t.Fatalf("%s: other bytes arrived", dir.name)
				}
			}
			client.Close()
			server.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := server.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("after the client's Close the server read %d bytes, %v; want EOF (close_notify)", n, err)
			}
		})
	}
}

// TestBatchedTLSConcurrentWrites: Writes from several goroutines at once
// (TLS serialises them) each arrive whole and in one piece.
func TestBatchedTLSConcurrentWrites(t *testing.T) {
	client, server, _ := securePair(t, true, true)
	const writers, each = 4, 40
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for k := range each {
				size := 1 + (w*each+k)*997%(150<<10)
				frame := make([]byte, 8+size)
				binary.BigEndian.PutUint32(frame, uint32(size))
				frame[4] = byte(w)
				for j := range frame[8:] {
					frame[8+j] = byte(w + k + j)
				}
				if _, err := client.Write(frame); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	server.SetReadDeadline(time.Now().Add(20 * time.Second))
	next := make([]int, writers)
	for range writers * each {
		var h [8]byte
		if _, err := io.ReadFull(server, h[:]); err != nil {
			t.Fatal(err)
		}
		size, w := int(binary.BigEndian.Uint32(h[:])), int(h[4])
		body := make([]byte, size)
		if _, err := io.ReadFull(server, body); err != nil {
			t.Fatal(err)
		}
		k := next[w]
		next[w]++
		for j, c := range body {
			if c != byte(w+k+j) {
				t.Fatalf("writer %d frame %d: byte %d differs: frames were interleaved or lost", w, k, j)
			}
		}
	}
	wg.Wait()
}

// TestBatchedTLSWriteError: when the socket fails, the Write that flushes
// returns the error, and every later Write too.
func TestBatchedTLSWriteError(t *testing.T) {
	client, server, sock := securePair(t, true, false)
	server.Close()
	sock.Conn.(*net.TCPConn).SetLinger(0)
	sock.Conn.Close()
	var err error
	for range 3 {
		if _, err = client.Write(make([]byte, 64<<10)); err != nil {
			break
		}
	}
	if err == nil {
		t.Fatal("Write on a closed socket succeeded")
	}
	if _, err := client.Write([]byte("x")); err == nil {
		t.Fatal("a Write after a failed one succeeded")
	}
}
