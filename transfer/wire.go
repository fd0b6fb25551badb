package transfer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// The chunk stream protocol carries the three Source calls over any reliable
// byte stream (a libp2p stream in peer mode). An asker writes a request and
// reads its response, then may write the next request on the same stream:
// streams are reused, so a stream multiplexer's flow-control window, which
// grows as a stream is used, stays large (a fresh yamux stream starts at 256
// KiB and would stall every chunk on window updates).
//
//	request  (RequestSize bytes): op u8, 3 zero bytes, share digest [32]byte,
//	         a u32, b u32, c u32 (big-endian)
//	           op 'M' manifest
//	           op 'H' have: a = chunks in the share; b = Digest of the set the
//	                  asker knows; c = milliseconds the server may wait for
//	                  its set to differ from that one (long poll; 0 answers
//	                  at once)
//	           op 'C' chunk: a = chunk index
//	response: status u8, length u32, then length bytes of payload (status OK,
//	          or for 'H' Complete: the source holds every chunk, though it may
//	          offer fewer, see HaveWaiter)
//
// The asker closes its write side when it has no more requests; the server
// then closes the stream, and closes it too after streamIdle without a
// request. Everything is bounded before it is read: requests have a fixed
// size, payloads a per-op limit. Status codes map to the Source sentinels
// (wireStatus, statusError); no error text crosses the wire.
const (
	RequestSize  = 48
	opManifest   = 'M'
	opHave       = 'H'
	opChunk      = 'C'
	MaxHaveWait  = 30 * time.Second // longest long poll a server grants
	haveCoalesce = 25 * time.Millisecond
	responseHdr  = 5
	streamIdle   = 60 * time.Second // a stream that moves no byte for this long is cut
)

// Response status codes.
const (
	statusOK         = 0
	statusNotFound   = 1
	statusNotHeld    = 2
	statusRange      = 3
	statusRefused    = 4 // over a limit or not allowed; do not retry
	statusBadRequest = 5
	statusBusy       = 6 // try again later
	statusInternal   = 7
	statusComplete   = 8 // OK, for a have: the source holds every chunk
)

// Request is one decoded chunk-protocol request.
type Request struct {
	Op      byte
	ID      ID
	A, B, C uint32
}

// IsChunk reports whether r asks for a chunk.
func (r Request) IsChunk() bool { return r.Op == opChunk }

// EncodeRequest returns the wire form of r.
func EncodeRequest(r Request) []byte {
	b := make([]byte, RequestSize)
	b[0] = r.Op
	copy(b[4:36], r.ID.sum[:])
	binary.BigEndian.PutUint32(b[36:], r.A)
	binary.BigEndian.PutUint32(b[40:], r.B)
	binary.BigEndian.PutUint32(b[44:], r.C)
	return b
}

// DecodeRequest parses a request from untrusted bytes.
func DecodeRequest(b []byte) (Request, error) {
	if len(b) != RequestSize {
		return Request{}, fmt.Errorf("request: %d bytes, want %d", len(b), RequestSize)
	}
	r := Request{Op: b[0]}
	switch r.Op {
	case opManifest, opHave, opChunk:
	default:
		return Request{}, fmt.Errorf("request: unknown op %#x", b[0])
	}
	if b[1]|b[2]|b[3] != 0 {
		return Request{}, errors.New("request: reserved bytes set")
	}
	copy(r.ID.sum[:], b[4:36])
	if r.ID.IsZero() {
		return Request{}, errors.New("request: zero share ID")
	}
	r.A = binary.BigEndian.Uint32(b[36:])
	r.B = binary.BigEndian.Uint32(b[40:])
	r.C = binary.BigEndian.Uint32(b[44:])
	return r, nil
}

// wireStatus is the one translation from errors to status codes.
func wireStatus(err error) byte {
	switch {
	case err == nil:
		return statusOK
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrRemoved):
		return statusNotFound
	case errors.Is(err, ErrChunkNotHeld):
		return statusNotHeld
	case errors.Is(err, ErrChunkRange):
		return statusRange
	case errors.Is(err, ErrSourceRefused):
		return statusRefused
	case errors.Is(err, ErrBusy):
		return statusBusy
	case errors.Is(err, ErrBadRequest):
		return statusBadRequest
	}
	return statusInternal
}

// statusError is the one translation from status codes back to errors.
func statusError(status byte, what string) error {
	switch status {
	case statusOK:
		return nil
	case statusNotFound:
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	case statusNotHeld:
		return fmt.Errorf("%s: %w", what, ErrChunkNotHeld)
	case statusRange:
		return fmt.Errorf("%s: %w", what, ErrChunkRange)
	case statusRefused:
		return fmt.Errorf("%s: %w", what, ErrSourceRefused)
	case statusBusy:
		return fmt.Errorf("%s: %w", what, ErrBusy)
	case statusBadRequest:
		return fmt.Errorf("%s: %w: the source could not parse it", what, ErrBadRequest)
	}
	return fmt.Errorf("%s: the source failed (status %d)", what, status)
}

// Stream is what the chunk protocol needs of a byte stream; a libp2p
// network.Stream is one.
type Stream interface {
	io.Reader
	io.Writer
	CloseWrite() error
	Close() error
	Reset() error
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// ServeOptions configures ServeStream. The zero value works.
type ServeOptions struct {
	Limiter *Limiter // upload cap on chunk bytes
	// OnRequest, if set, is called with each valid request before it is
	// served (a peer asking for a share is downloading it too).
	OnRequest func(Request)
	// Served, if set, is called after a chunk was sent, with its size.
	Served func(id ID, i int, n int64)
	// MaxRequests, if positive, closes the stream after that many requests.
	MaxRequests int
}

// ServeStream answers the requests read from s with src, one after the
// other, until the asker closes its side (then it closes s) or something
// fails (then it resets s). It returns the last request and what went wrong,
// for the caller's logs.
func ServeStream(ctx context.Context, s Stream, src Source, opts ServeOptions) (Request, error) {
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	buf := make([]byte, RequestSize)
	var req Request
	for served := 0; ; served++ {
		if opts.MaxRequests > 0 && served == opts.MaxRequests {
			return req, s.Close()
		}
		s.SetReadDeadline(time.Now().Add(streamIdle))
		if _, err := io.ReadFull(s, buf); err != nil {
			if err == io.EOF { // the asker is done
				return req, s.Close()
			}
			s.Reset()
			return req, fmt.Errorf("read request: %w", err)
		}
		var err error
		if req, err = DecodeRequest(buf); err != nil {
			writeStatus(s, statusBadRequest)
			s.Reset()
			return req, err
		}
		if opts.OnRequest != nil {
			opts.OnRequest(req)
		}
		if err := serveRequest(ctx, s, src, req, opts); err != nil {
			s.Reset()
			return req, err
		}
	}
}

func writeStatus(s Stream, status byte) error {
	var h [responseHdr]byte
	h[0] = status
	s.SetWriteDeadline(time.Now().Add(streamIdle))
	_, err := s.Write(h[:])
	return err
}

func writePayload(s Stream, payload []byte) error { return writeResponse(s, statusOK, payload) }

func writeResponse(s Stream, status byte, payload []byte) error {
	h := make([]byte, responseHdr, responseHdr+len(payload))
	h[0] = status
	binary.BigEndian.PutUint32(h[1:], uint32(len(payload)))
	s.SetWriteDeadline(time.Now().Add(streamIdle))
	_, err := s.Write(append(h, payload...))
	return err
}

func serveRequest(ctx context.Context, s Stream, src Source, req Request, opts ServeOptions) error {
	switch req.Op {
	case opManifest:
		raw, err := src.Manifest(ctx, req.ID)
		if err != nil {
			writeStatus(s, wireStatus(err))
			return nil // answered
		}
		return writePayload(s, raw)
	case opHave:
		// The answer is what the source offers (a HaveWaiter may offer less
		// than it holds), after waiting up to C ms for it to differ from
		// what the asker knows; the status says whether it holds everything.
		bf, err := src.Have(ctx, req.ID, int(req.A))
		if w, ok := src.(HaveWaiter); ok && err == nil {
			wait := min(time.Duration(req.C)*time.Millisecond, MaxHaveWait)
			wctx, cancel := context.WithTimeout(ctx, wait)
			bf, err = w.WaitHave(wctx, req.ID, int(req.A), req.B)
			cancel()
		}
		if err != nil {
			writeStatus(s, wireStatus(err))
			return nil
		}
		status := byte(statusOK)
		if holds, err := src.Have(ctx, req.ID, int(req.A)); err == nil && holds.Full() {
			status = statusComplete
		}
		return writeResponse(s, status, bf.Bytes())
	case opChunk:
		rc, err := src.OpenChunk(ctx, req.ID, int(req.A))
		if err != nil {
			writeStatus(s, wireStatus(err))
			return nil
		}
		defer rc.Close()
		n, err := chunkLen(ctx, src, rc, req.ID, int(req.A))
		if err != nil {
			writeStatus(s, wireStatus(err))
			return nil
		}
		if err := sendChunk(ctx, s, rc, n, opts.Limiter); err != nil {
			return fmt.Errorf("send chunk %d: %w", req.A, err)
		}
		if opts.Served != nil {
			opts.Served(req.ID, int(req.A), n)
		}
		return nil
	}
	return fmt.Errorf("op %#x", req.Op)
}

// chunkLen finds a chunk's length: from its reader if it knows (a store's
// does), else from the source's manifest.
func chunkLen(ctx context.Context, src Source, rc io.Reader, id ID, i int) (int64, error) {
	if sz, ok := rc.(interface{ Size() int64 }); ok {
		return sz.Size(), nil
	}
	raw, err := src.Manifest(ctx, id)
	if err != nil {
		return 0, err
	}
	m, err := DecodeManifest(raw)
	if err != nil {
		return 0, err
	}
	return int64(m.ChunkLen(i)), nil
}

// sendBufs are the buffers chunks are sent through: large writes cost a
// stream multiplexer and TLS much less per byte than io.Copy's 32 KiB.
var sendBufs = sync.Pool{New: func() any { b := make([]byte, sendBufSize); return &b }}

const sendBufSize = 256 << 10

// sendChunk writes an OK response header and the n bytes of a chunk read
// from rc, paced by lim (which counts chunk bytes only). The header goes out
// in one write with the chunk's first piece: one multiplexer frame, one TLS
// record and one system call fewer per chunk than a header of its own.
func sendChunk(ctx context.Context, s Stream, rc io.Reader, n int64, lim *Limiter) error {
	bp := sendBufs.Get().(*[]byte)
	defer sendBufs.Put(bp)
	buf := *bp
	first := min(n, int64(len(buf)-responseHdr))
	if b := lim.Burst(); b > 0 {
		first = min(first, int64(b))
	}
	buf[0] = statusOK
	binary.BigEndian.PutUint32(buf[1:responseHdr], uint32(n))
	k, err := io.ReadFull(rc, buf[responseHdr:responseHdr+first])
	if err != nil {
		return err
	}
	if err := lim.WaitN(ctx, k); err != nil {
		return err
	}
	s.SetWriteDeadline(time.Now().Add(streamIdle))
	if _, err := s.Write(buf[:responseHdr+k]); err != nil {
		return err
	}
	if n == int64(k) {
		return nil
	}
	w := lim.Writer(ctx, &idleWriter{s: s, set: time.Now()})
	_, err = io.CopyBuffer(w, io.LimitReader(rc, n-int64(k)), buf)
	return err
}

// deadlineRefresh is how stale an idle deadline may get before it is set
// again: setting one on every read or write costs a timer reset each time.
const deadlineRefresh = streamIdle / 4

// idleWriter extends the write deadline as writes succeed.
type idleWriter struct {
	s   Stream
	set time.Time
}

func (w *idleWriter) Write(p []byte) (int, error) {
	if now := time.Now(); now.Sub(w.set) > deadlineRefresh {
		w.s.SetWriteDeadline(now.Add(streamIdle))
		w.set = now
	}
	return w.s.Write(p)
}

// StreamSource is a Source that asks a remote server over streams that Open
// returns, reusing each for later requests. It is safe for concurrent use;
// Close resets the streams it keeps.
type StreamSource struct {
	Name string // String()
	Open func(ctx context.Context) (Stream, error)
	// Complete, if set, is called after each have answer with whether the
	// source holds every chunk of the share.
	Complete func(id ID, complete bool)

	mu   sync.Mutex
	idle []idleStream // streams ready for a request, most recently used last
}

type idleStream struct {
	s     Stream
	since time.Time
}

// Stream reuse limits. An idle stream is dropped well before the server's
// streamIdle, so that a request rarely meets a stream the server closed.
const (
	maxIdleStreams = 32
	maxStreamIdle  = streamIdle / 2
)

var (
	_ Source     = (*StreamSource)(nil)
	_ HaveWaiter = (*StreamSource)(nil)
)

// String implements Source.
func (ss *StreamSource) String() string { return ss.Name }

// get returns an idle stream, or a new one.
func (ss *StreamSource) get(ctx context.Context) (s Stream, reused bool, err error) {
	ss.mu.Lock()
	for len(ss.idle) > 0 {
		is := ss.idle[len(ss.idle)-1]
		ss.idle = ss.idle[:len(ss.idle)-1]
		if time.Since(is.since) < maxStreamIdle {
			ss.mu.Unlock()
			return is.s, true, nil
		}
		is.s.Reset()
	}
	ss.mu.Unlock()
	s, err = ss.Open(ctx)
	return s, false, err
}

// put keeps a stream whose last response was read to its end.
func (ss *StreamSource) put(s Stream) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.idle) >= maxIdleStreams {
		s.CloseWrite()
		s.Close()
		return
	}
	ss.idle = append(ss.idle, idleStream{s: s, since: time.Now()})
}

// Close ends the idle streams: their write sides are closed, so the server
// closes them too. Streams in use are closed as they finish.
func (ss *StreamSource) Close() error {
	ss.mu.Lock()
	idle := ss.idle
	ss.idle = nil
	ss.mu.Unlock()
	for _, is := range idle {
		is.s.CloseWrite()
		is.s.Close()
	}
	return nil
}

// roundTrip sends req and reads the response header; on success it returns
// the stream positioned at the payload, its length and the status. A reused
// stream that fails before any answer (the server may have closed it) is
// replaced once.
func (ss *StreamSource) roundTrip(ctx context.Context, req Request, what string, maxLen int64) (Stream, int64, byte, error) {
	for attempt := 0; ; attempt++ {
		s, reused, err := ss.get(ctx)
		if err != nil {
			return nil, 0, 0, fmt.Errorf("%s: %w", what, err)
		}
		s.SetWriteDeadline(time.Now().Add(streamIdle))
		_, err = s.Write(EncodeRequest(req))
		wait := streamIdle
		if req.Op == opHave {
			wait += time.Duration(req.C) * time.Millisecond
		}
		var h [responseHdr]byte
		if err == nil {
			s.SetReadDeadline(time.Now().Add(wait))
			_, err = io.ReadFull(s, h[:])
		}
		if err != nil {
			s.Reset()
			if reused && attempt == 0 && ctx.Err() == nil {
				continue
			}
			return nil, 0, 0, fmt.Errorf("%s: %w", what, err)
		}
		status := h[0]
		if status == statusComplete && req.Op == opHave {
			status = statusOK
		}
		if err := statusError(status, what); err != nil {
			ss.put(s) // the answer is complete: the stream is reusable
			return nil, 0, 0, err
		}
		n := int64(binary.BigEndian.Uint32(h[1:]))
		if n > maxLen {
			s.Reset()
			return nil, 0, 0, fmt.Errorf("%s: %w: response of %d bytes, limit %d", what, ErrBadChunk, n, maxLen)
		}
		return s, n, h[0], nil
	}
}

// readAll reads a whole small payload and keeps the stream for reuse.
func (ss *StreamSource) readAll(ctx context.Context, req Request, what string, maxLen int64) ([]byte, byte, error) {
	s, n, status, err := ss.roundTrip(ctx, req, what, maxLen)
	if err != nil {
		return nil, 0, err
	}
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	b := make([]byte, n)
	_, err = io.ReadFull(s, b)
	if !stop() || err != nil {
		s.Reset()
		if err == nil {
			err = ctx.Err()
		}
		return nil, 0, fmt.Errorf("%s: %w", what, err)
	}
	ss.put(s)
	return b, status, nil
}

// Manifest implements Source.
func (ss *StreamSource) Manifest(ctx context.Context, id ID) ([]byte, error) {
	b, _, err := ss.readAll(ctx, Request{Op: opManifest, ID: id}, "manifest", MaxManifestSize)
	return b, err
}

// Have implements Source.
func (ss *StreamSource) Have(ctx context.Context, id ID, n int) (Bitfield, error) {
	return ss.have(ctx, Request{Op: opHave, ID: id, A: uint32(n)}, n)
}

// WaitHave implements HaveWaiter.
func (ss *StreamSource) WaitHave(ctx context.Context, id ID, n int, known uint32) (Bitfield, error) {
	return ss.have(ctx, Request{Op: opHave, ID: id, A: uint32(n), B: known, C: uint32(HaveWaitTime / time.Millisecond)}, n)
}

func (ss *StreamSource) have(ctx context.Context, req Request, n int) (Bitfield, error) {
	b, status, err := ss.readAll(ctx, req, "have", int64(n+7)/8)
	if err != nil {
		return Bitfield{}, err
	}
	bf, err := ParseBitfield(n, b)
	if err == nil && ss.Complete != nil {
		ss.Complete(req.ID, status == statusComplete)
	}
	return bf, err
}

// OpenChunk implements Source. Closing the reader before the chunk was read
// to its end resets the stream.
func (ss *StreamSource) OpenChunk(ctx context.Context, id ID, i int) (io.ReadCloser, error) {
	s, n, _, err := ss.roundTrip(ctx, Request{Op: opChunk, ID: id, A: uint32(i)}, fmt.Sprintf("chunk %d", i), MaxChunkSize)
	if err != nil {
		return nil, err
	}
	return &chunkStream{ss: ss, s: s, left: n, stop: context.AfterFunc(ctx, func() { s.Reset() }), set: time.Now()}, nil
}

// chunkStream reads one chunk payload off a stream, extending the read
// deadline as bytes arrive.
type chunkStream struct {
	ss   *StreamSource
	s    Stream
	left int64
	stop func() bool
	set  time.Time // when the read deadline was last set
}

func (c *chunkStream) Read(p []byte) (int, error) {
	if c.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	if now := time.Now(); now.Sub(c.set) > deadlineRefresh {
		c.s.SetReadDeadline(now.Add(streamIdle))
		c.set = now
	}
	n, err := c.s.Read(p)
	c.left -= int64(n)
	if err == io.EOF && c.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// Close gives the stream back for reuse if the chunk was read to its end;
// otherwise the rest of it is still coming, and the stream is reset.
func (c *chunkStream) Close() error {
	if c.s == nil {
		return nil
	}
	if !c.stop() || c.left > 0 {
		c.s.Reset()
	} else {
		c.ss.put(c.s)
	}
	c.s = nil
	return nil
}
