package transfer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
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
// An asker may pipeline: write further requests before it has read the
// responses to earlier ones; the server reads a stream's requests one after
// the other and answers them in order. The asker closes its write side when
// it has no more requests; the server then closes the stream, and closes it
// too after streamIdle without a request. Everything is bounded before it is read: requests have a fixed
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

// OpName names r's op: "manifest", "have" or "chunk" ("" for another byte;
// DecodeRequest refuses those).
func (r Request) OpName() string {
	switch r.Op {
	case opManifest:
		return "manifest"
	case opHave:
		return "have"
	case opChunk:
		return "chunk"
	}
	return ""
}

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
var sendBufs = sync.Pool{New: func() any { b := make([]byte, SendBufSize); return &b }}

// SendBufSize is the memory ServeStream holds while it sends a chunk (bytes):
// its buffer.
const SendBufSize = 256 << 10

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

// MemoryReserver is an optional ability of a Stream: accounting the memory
// a response takes at its receiver against a budget (a libp2p stream's
// resource scope). StreamSource reserves a payload's length before it reads
// it, and releases it when the payload was read (a chunk: when its reader
// is closed). A refused reservation's error (wrapping ErrBusy, so that a
// download asks again later or asks another source) fails the request; the
// payload is read and dropped, and the stream stays usable.
type MemoryReserver interface {
	ReserveMemory(n int) error
	ReleaseMemory(n int)
}

// reserve reserves n bytes on s if it is a MemoryReserver; the release func
// it returns is never nil.
func reserve(s Stream, n int64) (release func(), err error) {
	r, ok := s.(MemoryReserver)
	if !ok || n == 0 {
		return func() {}, nil
	}
	if err := r.ReserveMemory(int(n)); err != nil {
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(func() { r.ReleaseMemory(int(n)) }) }, nil
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

	// Lanes is how many streams chunk requests are pipelined on (see
	// lane); 0: DefaultLanes.
	Lanes int

	mu      sync.Mutex
	idle    []idleStream // streams ready for a request, most recently used last
	lanes   []*lane      // streams chunk requests are pipelined on
	opening int          // lanes being opened
	seeds   map[ID]bool  // shares whose last have answer said Complete
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
	_ Seeder     = (*StreamSource)(nil)
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
	idle, lanes := ss.idle, ss.lanes
	ss.idle, ss.lanes = nil, nil
	ss.mu.Unlock()
	for _, is := range idle {
		is.s.CloseWrite()
		is.s.Close()
	}
	for _, l := range lanes {
		l.close()
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
	release, err := reserve(s, n)
	if err != nil {
		// Drop the payload, keep the stream: the refusal is ours, not the
		// server's fault.
		if _, derr := io.CopyN(io.Discard, s, n); derr != nil {
			s.Reset()
		} else {
			ss.put(s)
		}
		return nil, 0, fmt.Errorf("%s: %w", what, err)
	}
	defer release()
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
	if err != nil {
		return bf, err
	}
	ss.mu.Lock()
	if ss.seeds == nil {
		ss.seeds = map[ID]bool{}
	}
	ss.seeds[req.ID] = status == statusComplete
	ss.mu.Unlock()
	if ss.Complete != nil {
		ss.Complete(req.ID, status == statusComplete)
	}
	return bf, nil
}

// Seeding implements Seeder: whether the last have answer for id said the
// source holds every chunk.
func (ss *StreamSource) Seeding(id ID) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.seeds[id]
}

// OpenChunk implements Source. It pipelines the request on a lane (see
// lane) and returns once the response header arrived; the caller reads the
// chunk and closes the reader, which lets the next response on the lane be
// read. A reader closed before the end (or a request whose ctx ends first)
// has the rest of its response read and dropped in the background, so the
// requests queued behind it on the lane go on.
func (ss *StreamSource) OpenChunk(ctx context.Context, id ID, i int) (io.ReadCloser, error) {
	req := Request{Op: opChunk, ID: id, A: uint32(i)}
	what := fmt.Sprintf("chunk %d", i)
	for attempt := 0; ; attempt++ {
		l, fresh, err := ss.lane(ctx, attempt > 0)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		t, err := l.send(req)
		if err == nil {
			n, answer, lerr := t.await(ctx, what, MaxChunkSize)
			switch {
			case answer != nil:
				return nil, answer
			case lerr == nil:
				release, err := reserve(l.s, n)
				if err != nil { // the payload is dropped, the lane goes on
					go func() {
						t.drop(n)
						t.done()
					}()
					return nil, fmt.Errorf("%s: %w", what, err)
				}
				return &laneReader{ctx: ctx, t: t, left: n, set: time.Now(), release: release}, nil
			}
			err = lerr
		}
		// The lane broke before this response began: a reused one may
		// have been closed by the server meanwhile; try a new one once.
		if fresh || attempt > 0 || ctx.Err() != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
	}
}

// DefaultLanes is how many streams a StreamSource pipelines chunk requests
// on. Few streams carry more bytes each, so their multiplexer windows grow
// large at once (a yamux stream starts at 256 KiB and grows only while it
// is read fast); one chunk arrives after the other instead of many
// interleaved, so the receiver works on one buffer at a time, in cache;
// and the server sends from one goroutine per lane. Two, not one, so that
// a chunk being hashed on one lane does not hold up the other.
const DefaultLanes = 2

// lane is a stream chunk requests are pipelined on: requests are written
// as they come, and responses read in the same order, each by the caller
// that asked for it, once the response before it was read to its end (its
// turn). A lane that fails (a read or write error, a response over its
// limit) is reset, and every request on it fails.
type lane struct {
	s Stream

	wmu  sync.Mutex    // request writes, in turn order
	tail chan struct{} // closed when the last response asked for was read

	mu      sync.Mutex
	pending int       // requests asked and not yet read (or being asked)
	used    time.Time // when the last response was read
	err     error     // why the lane broke; nil while it works
}

// turn is one request's place on a lane. It is owned by one goroutine at
// a time: the asker, then the one that reads and drops what the asker left.
type turn struct {
	l    *lane
	prev chan struct{} // closed when the response before this one was read
	mine chan struct{} // closed by done
	// While t is read, its asker's ctx ending interrupts the read (a past
	// deadline): stop unregisters that, and stopped is closed once an
	// interrupt that ran has set its deadline.
	stop    func() bool
	stopped chan struct{}
}

// lane returns a lane for a new request, counted as pending: an idle one,
// a new one while there are fewer than Lanes, else the least busy one; a
// new one if fresh is set.
func (ss *StreamSource) lane(ctx context.Context, fresh bool) (*lane, bool, error) {
	max := ss.Lanes
	if max <= 0 {
		max = DefaultLanes
	}
	ss.mu.Lock()
	var best *lane
	bestPending := 0
	keep := ss.lanes[:0]
	for _, l := range ss.lanes {
		l.mu.Lock()
		dead, pending := l.err != nil, l.pending
		idle := pending == 0 && time.Since(l.used) > maxStreamIdle
		l.mu.Unlock()
		if dead || idle {
			l.close()
			continue
		}
		keep = append(keep, l)
		if best == nil || pending < bestPending {
			best, bestPending = l, pending
		}
	}
	clear(ss.lanes[len(keep):])
	ss.lanes = keep
	if best != nil && !fresh && (bestPending == 0 || len(ss.lanes)+ss.opening >= max) {
		best.mu.Lock()
		best.pending++
		best.mu.Unlock()
		ss.mu.Unlock()
		return best, false, nil
	}
	ss.opening++
	ss.mu.Unlock()
	s, err := ss.Open(ctx)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.opening--
	if err != nil {
		return nil, false, err
	}
	done := make(chan struct{})
	close(done)
	l := &lane{s: s, tail: done, pending: 1, used: time.Now()}
	ss.lanes = append(ss.lanes, l)
	return l, true, nil
}

// send writes req on the lane and returns its turn.
func (l *lane) send(req Request) (*turn, error) {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	t := &turn{l: l, prev: l.tail, mine: make(chan struct{})}
	l.tail = t.mine
	if err := l.broken(); err != nil {
		t.done()
		return nil, err
	}
	l.s.SetWriteDeadline(time.Now().Add(streamIdle))
	if _, err := l.s.Write(EncodeRequest(req)); err != nil {
		l.fail(err)
		t.done()
		return nil, err
	}
	return t, nil
}

// await waits for the turn and reads the response header. It returns the
// payload length; or answer, the error a status other than OK stands for
// (the response was read and the turn passed; the lane is fine); or lerr,
// why the lane broke (the turn passed). If ctx ends first (the wait for an
// upload slot or a rate cap can hold a header back), it returns ctx's error
// as answer, and the rest of the response is read and dropped in the
// background.
func (t *turn) await(ctx context.Context, what string, maxLen int64) (n int64, answer, lerr error) {
	select {
	case <-t.prev:
	case <-ctx.Done():
		go t.abandon(nil, 0)
		return 0, ctx.Err(), nil
	}
	t.stopped = make(chan struct{})
	t.stop = context.AfterFunc(ctx, t.interrupt)
	var h [responseHdr]byte
	l := t.l
	err := l.broken()
	got := 0
	if err == nil {
		l.s.SetReadDeadline(time.Now().Add(streamIdle))
		got, err = io.ReadFull(l.s, h[:])
	}
	switch {
	case ctx.Err() != nil && (err == nil || os.IsTimeout(err)):
		go t.abandon(h[:got], got)
		return 0, ctx.Err(), nil
	case err != nil:
		l.fail(err)
		t.done()
		return 0, nil, err
	}
	n, answer = parseHeader(h, what, maxLen)
	if answer != nil {
		if n > maxLen {
			l.fail(answer)
		}
		t.done()
		return 0, answer, nil
	}
	return n, nil, nil
}

// parseHeader returns a response header's payload length, or the error its
// status stands for, or (with n over maxLen) an error for the length.
func parseHeader(h [responseHdr]byte, what string, maxLen int64) (int64, error) {
	if err := statusError(h[0], what); err != nil {
		return 0, err
	}
	n := int64(binary.BigEndian.Uint32(h[1:]))
	if n > maxLen {
		return n, fmt.Errorf("%s: %w: response of %d bytes, limit %d", what, ErrBadChunk, n, maxLen)
	}
	return n, nil
}

// abandon reads and drops t's response once its turn comes, got bytes of
// whose header are in head already.
func (t *turn) abandon(head []byte, got int) {
	<-t.prev
	t.settle()
	l := t.l
	var h [responseHdr]byte
	copy(h[:], head)
	if l.broken() == nil {
		l.s.SetReadDeadline(time.Now().Add(streamIdle))
		if _, err := io.ReadFull(l.s, h[got:]); err != nil {
			l.fail(err)
		} else if n, err := parseHeader(h, "", MaxChunkSize); err == nil {
			t.drop(n)
		} else if n > MaxChunkSize {
			l.fail(err)
		}
	}
	t.done()
}

// drop reads and drops the n bytes left of t's payload.
func (t *turn) drop(n int64) {
	t.settle()
	l := t.l
	if l.broken() != nil {
		return
	}
	l.s.SetReadDeadline(time.Now().Add(streamIdle))
	bp := sendBufs.Get().(*[]byte)
	_, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{io.LimitReader(l.s, n)}, *bp)
	sendBufs.Put(bp)
	if err != nil {
		l.fail(err)
	}
}

// interrupt makes a read blocked on t's response return (its asker's ctx
// ended).
func (t *turn) interrupt() {
	t.l.s.SetReadDeadline(time.Unix(1, 0))
	close(t.stopped)
}

// settle makes sure no interrupt of t is pending: one that runs later
// would cut a read of the next response short.
func (t *turn) settle() {
	if t.stop != nil && !t.stop() {
		<-t.stopped
	}
	t.stop = nil
}

// done passes the turn to the next response.
func (t *turn) done() {
	t.settle()
	l := t.l
	l.mu.Lock()
	l.pending--
	l.used = time.Now()
	l.mu.Unlock()
	close(t.mine)
}

func (l *lane) broken() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// fail breaks the lane: it is reset, and every request on it fails.
func (l *lane) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.err = fmt.Errorf("stream broke: %w", err)
		l.s.Reset()
	}
}

// close ends the lane: an idle one gracefully (the server closes its end
// too), a busy one with a reset, failing the requests on it.
func (l *lane) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return
	}
	l.err = errors.New("stream closed")
	if l.pending == 0 {
		l.s.CloseWrite()
		l.s.Close()
		return
	}
	l.s.Reset()
}

// laneReader reads one chunk payload off a lane, extending the read
// deadline as bytes arrive.
type laneReader struct {
	ctx  context.Context
	t    *turn
	left int64
	set  time.Time // when the read deadline was last set
	err  error     // sticky
	// release gives back the payload's memory reservation (see
	// MemoryReserver); Close calls it.
	release func()
}

func (r *laneReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if r.err != nil {
		return 0, r.err
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	l := r.t.l
	if now := time.Now(); now.Sub(r.set) > deadlineRefresh {
		l.s.SetReadDeadline(now.Add(streamIdle))
		r.set = now
	}
	n, err := l.s.Read(p)
	r.left -= int64(n)
	switch {
	case err == nil:
	case err == io.EOF && r.left == 0: // the server closed the stream after it
		l.fail(err)
		return n, nil
	case r.ctx.Err() != nil && os.IsTimeout(err): // interrupted: the rest is dropped on Close
		r.err = r.ctx.Err()
		return n, r.err
	case err == io.EOF && r.left > 0:
		err = io.ErrUnexpectedEOF
		fallthrough
	default:
		r.err = err
		l.fail(err)
	}
	return n, err
}

// Close passes the turn on, first reading and dropping the rest of the
// payload in the background if it was not read to its end.
func (r *laneReader) Close() error {
	t := r.t
	if t == nil {
		return nil
	}
	r.t = nil
	if r.release != nil {
		r.release()
	}
	if r.left == 0 || t.l.broken() != nil {
		t.done()
		return nil
	}
	left := r.left
	go func() {
		t.drop(left)
		t.done()
	}()
	return nil
}
