package transfer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zeebo/blake3"
)

// Download defaults. The scheduling constants are in picker.go.
const (
	DefaultMaxInFlight  = 16               // chunks in flight in all; the download holds at most twice this many chunk buffers (in flight, being written)
	DefaultPerSource    = 8                // chunks in flight per source at most: enough to keep a loopback or LAN link busy
	DefaultStallTimeout = 60 * time.Second // no chunk byte for this long ends a download
	DefaultHaveInterval = 500 * time.Millisecond
	maxIdleWake         = time.Second // the scheduler looks at its state at least this often
)

// DownloadOptions configures a Download. The zero value works.
type DownloadOptions struct {
	MaxInFlight int // chunks in flight in all; 0: DefaultMaxInFlight
	PerSource   int // most chunks in flight per source (see srcState.depth); 0: DefaultPerSource
	// MaxActive is how many sources the download trades with at once (its
	// active set, see picker.go); the others wait as candidates. 0:
	// DefaultMaxActive.
	MaxActive int
	Limiter   *Limiter // download cap on chunk bytes; nil: none
	// Progress, if set, is called after each chunk is stored, from the
	// download's goroutine; it must return quickly.
	Progress func(Progress)
	// BadChunk, if set, is called when a chunk from src fails verification
	// (src is then dropped), from the download's goroutine.
	BadChunk     func(src Source, err error)
	StallTimeout time.Duration // 0: DefaultStallTimeout
	// HaveInterval is how often a source that lacks chunks we need is asked
	// again what it has; 0: DefaultHaveInterval.
	HaveInterval time.Duration
	// WaitForSources keeps the download running while it has no usable
	// source, until the stall timeout, for callers that AddSource as they
	// discover sources. Without it, a download whose sources have all failed
	// for good ends with ErrNoSources.
	WaitForSources bool
	Logger         *slog.Logger // nil: slog.Default()
	// Trace, if set, gets one record per scheduling event of the download,
	// at Info level, for finding where a swarm's time goes (share peer
	// --trace, share bench --trace); nil: none, at no cost. Records:
	// "request" (chunk, source, endgame, depth, in_flight: the source's
	// requests before this one), "open" (chunk, source, wait_us: from the
	// request to its first byte, the source's queue included), "busy"
	// (chunk, source, wait_us: the answer's round trip), "done" (chunk,
	// source, won: whether it was the copy kept, age_us: from the request
	// to the whole chunk written), "failed" (chunk, source, lost: another
	// copy won and this request was cancelled, age_us, err). The time of
	// an event is its record's.
	Trace *slog.Logger
	// Retry, if set, is the transfer's retry state (see retry.go): a stored
	// chunk is progress, and a source's transient failure is reported to
	// its Retrying once per run of failures. The download keeps its own
	// stall check (StallTimeout).
	Retry *Retry
}

// Progress is a download's state after a chunk arrived.
type Progress struct {
	Chunks      int   // chunks held
	TotalChunks int   // chunks in the share
	Bytes       int64 // bytes held
	TotalBytes  int64 // bytes in the share
	Fetched     int64 // bytes this download fetched and kept
	Index       int   // the chunk that arrived
	From        Source
}

// SourceStats is what one source did for a download.
type SourceStats struct {
	Chunks  int   // chunks received and kept
	Bytes   int64 // their bytes
	Bad     int   // chunks that failed verification
	Errors  int   // failed requests
	Dropped bool  // no longer used: bad data or a permanent error
	LastErr error
}

// Stats summarizes a download.
type Stats struct {
	Chunks     int   // chunks fetched and kept
	Bytes      int64 // their bytes
	Duplicates int   // endgame requests that lost the race (wasted)
	BadChunks  int   // chunks that failed verification, from any source
	Haves      int   // have requests and long polls answered
	Busy       int   // chunk requests answered busy
	Elapsed    time.Duration
	Sources    map[string]SourceStats
	// Local is how Get made its output from a local daemon's copy of the
	// share (see LocalSource); CloneNone when it downloaded the chunks.
	Local CloneMethod
}

// Download fetches the missing chunks of a share from its sources. Create it
// with NewDownload, add sources (also while it runs) and Run it once.
type Download struct {
	sh   *Share
	m    *Manifest
	opts DownloadOptions
	log  *slog.Logger

	mu      sync.Mutex
	pending []Source      // added, not yet seen by Run
	gone    []string      // names of sources that left (SourceGone), not yet seen by Run
	wake    chan struct{} // cap 1: a source was added
	usable  atomic.Int32  // sources known and not dropped, as of the last scheduling pass

	byName map[string]*srcState // owned by Run's goroutine

	// dataAt is when chunk bytes last arrived from any source (Unix
	// nanoseconds), set by the readers of receive. A download is stalled
	// when no byte arrives for its stall timeout, not when no chunk is
	// completed: a chunk may take minutes where many downloaders share one
	// uplink (64 clients of one 10 Mbit/s server: ~20 kB/s each) while
	// every byte of it is progress.
	dataAt atomic.Int64
}

// clockReader records in at when bytes were last read through it.
type clockReader struct {
	r  io.Reader
	at *atomic.Int64
}

func (c clockReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.at.Store(time.Now().UnixNano())
	}
	return n, err
}

// NewDownload prepares a download into sh.
func NewDownload(sh *Share, opts DownloadOptions) *Download {
	opts.MaxInFlight = cmp.Or(opts.MaxInFlight, DefaultMaxInFlight)
	opts.PerSource = cmp.Or(opts.PerSource, DefaultPerSource)
	opts.MaxActive = cmp.Or(opts.MaxActive, DefaultMaxActive)
	opts.StallTimeout = cmp.Or(opts.StallTimeout, DefaultStallTimeout)
	opts.HaveInterval = cmp.Or(opts.HaveInterval, DefaultHaveInterval)
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Download{sh: sh, m: sh.m, opts: opts, log: log, wake: make(chan struct{}, 1), byName: map[string]*srcState{}}
}

// Usable returns how many sources the download knows that it has not
// dropped (for bad data or a permanent error), whether active or not. Safe to
// call from any goroutine.
func (d *Download) Usable() int { return int(d.usable.Load()) + d.pendingCount() }

func (d *Download) pendingCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.pending)
}

// AddSource adds a source; one with the same String() as a known source is
// ignored, so a source dropped for bad data cannot come back. Safe to call
// from any goroutine, before or during Run.
func (d *Download) AddSource(src Source) {
	d.mu.Lock()
	d.pending = append(d.pending, src)
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// SourceGone tells the download that src left (a peer that disconnected):
// at once, its offer stops holding a seed back (see picker.pickFree), its
// have request and chunk requests are cancelled, and it gives way in the
// active set as a source that failed twice does. A source that comes back
// counts again from its next have answer. Safe to call from any goroutine,
// for a source added or not.
func (d *Download) SourceGone(src Source) {
	d.mu.Lock()
	d.gone = append(d.gone, src.String())
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

type chunkResult struct {
	req      *request
	buf      []byte
	err      error
	local    bool          // err is ours (disk), not the source's
	received bool          // the chunk arrived and checked out; it is being written
	queued   time.Duration // how long the source kept the request in line (Queued)
}

type haveResult struct {
	s       *srcState
	bf      Bitfield
	seed    bool
	err     error
	stopped bool // cancelled because s left the active set: no answer
}

// run is the state of one Run call.
type run struct {
	d       *Download
	ctx     context.Context
	p       *picker
	held    int // chunk buffers in use: requests in flight, and chunks being written
	bufs    [][]byte
	results chan chunkResult
	haves   chan haveResult
	wg      sync.WaitGroup
	stats   Stats
	fetched int64
	last    time.Time // last chunk stored
}

// moved returns when the download last moved: a chunk stored, or chunk
// bytes received (see Download.dataAt).
func (r *run) moved() time.Time {
	if at := r.d.dataAt.Load(); at > r.last.UnixNano() {
		return time.Unix(0, at)
	}
	return r.last
}

// Run fetches every missing chunk, verifying each before it is stored, and
// returns when the share is complete, the context is done, the download
// stalls or runs out of sources. Chunks fetched before an error stay stored,
// so running a new Download later resumes.
func (d *Download) Run(ctx context.Context) (Stats, error) {
	begin := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	n := d.m.NumChunks()
	have := d.sh.Have()
	need := FullBitfield(n)
	for i := range n {
		if have.Has(i) {
			need.Clear(i)
		}
	}
	r := &run{
		d:       d,
		ctx:     ctx,
		p:       newPicker(n, d.m.chunkSize, need, d.opts, rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))),
		results: make(chan chunkResult),
		haves:   make(chan haveResult),
		last:    begin,
		stats:   Stats{Sources: map[string]SourceStats{}},
	}
	err := r.loop()
	cancel()
	r.wg.Wait()
	for _, b := range r.bufs {
		chunkBuffers.put(b)
	}
	if cerr := d.sh.Checkpoint(); err == nil && cerr != nil {
		err = cerr
	}
	for _, s := range r.p.sources {
		r.stats.Sources[s.name] = s.stats
	}
	r.stats.Elapsed = time.Since(begin)
	return r.stats, err
}

func (r *run) loop() error {
	d := r.d
	// The loop sleeps until an event or the next deadline it has (a
	// backoff ending, a refresh of the active set, the stall timeout): a
	// periodic tick would wake every downloading process tens of times a
	// second for nothing.
	timer := time.NewTimer(maxIdleWake)
	defer timer.Stop()
	for {
		r.addPending()
		if r.p.need.Count() == 0 { // requests still out lost a race; Run cancels them
			if !d.sh.Complete() && d.sh.HaveCount() == d.m.NumChunks() {
				return d.sh.finish()
			}
			if d.sh.Complete() || !r.relearnNeed() {
				return nil
			}
		}
		now := time.Now()
		r.schedule(now)
		if err := r.checkHope(now); err != nil {
			return err
		}
		wake := minTime(r.p.nextWake(now), r.moved().Add(d.opts.StallTimeout+time.Millisecond)).Sub(now)
		timer.Reset(min(max(wake, time.Millisecond), maxIdleWake))
		select {
		case res := <-r.results:
			if err := r.onChunk(res); err != nil {
				return err
			}
		case h := <-r.haves:
			r.onHave(h)
		case <-d.wake:
		case <-timer.C:
		case <-r.ctx.Done():
			return r.ctx.Err()
		}
	}
}

// relearnNeed adds to the chunks still needed those the share lost since
// they were stored (found damaged on disk, see verify.go), so that they are
// fetched again; it reports whether there were any.
func (r *run) relearnNeed() bool {
	have := r.d.sh.Have()
	lost := false
	for i := range r.d.m.NumChunks() {
		if !have.Has(i) && !r.p.need.Has(i) {
			r.p.need.Set(i)
			lost = true
		}
	}
	if lost {
		r.p.requeueAll()
	}
	return lost
}

// checkHope ends a download that cannot finish.
func (r *run) checkHope(now time.Time) error {
	d := r.d
	if now.Sub(r.moved()) > d.opts.StallTimeout {
		return fmt.Errorf("%w: no data for %v; %d of %d chunks held%s", ErrStalled,
			d.opts.StallTimeout, d.m.NumChunks()-r.p.need.Count(), d.m.NumChunks(), r.sourceErrors())
	}
	if d.opts.WaitForSources || r.p.active > 0 {
		return nil
	}
	for _, s := range r.p.sources {
		if !s.stats.Dropped {
			return nil
		}
	}
	return fmt.Errorf("%w for %s: %d of %d chunks held%s", ErrNoSources, d.m.id,
		d.m.NumChunks()-r.p.need.Count(), d.m.NumChunks(), r.sourceErrors())
}

func (r *run) sourceErrors() string {
	var b strings.Builder
	for _, s := range r.p.sources {
		if s.stats.LastErr != nil {
			fmt.Fprintf(&b, "\n  %s: %v", s.name, s.stats.LastErr)
		}
	}
	return b.String()
}

func (r *run) addPending() {
	d := r.d
	d.mu.Lock()
	pending, gone := d.pending, d.gone
	d.pending, d.gone = nil, nil
	d.mu.Unlock()
	for _, src := range pending {
		name := src.String()
		if _, ok := d.byName[name]; ok {
			continue
		}
		_, waiter := src.(HaveWaiter)
		s := &srcState{src: src, name: name, waiter: waiter}
		d.byName[name] = s
		r.p.add(s)
	}
	now := time.Now()
	for _, name := range gone {
		s := d.byName[name]
		if s == nil || s.stats.Dropped {
			continue
		}
		d.log.Debug("source gone", "source", name)
		r.p.gone(s, now)
		if s.stop != nil {
			s.stop()
		}
		for _, reqs := range r.p.inflight {
			for _, q := range reqs {
				if q.s == s && q.cancel != nil {
					q.cancel() // it fails as counted already (started before failAt)
				}
			}
		}
	}
}

// schedule keeps the active set, starts have requests for the active
// sources that need one, and chunk requests for every free slot.
func (r *run) schedule(now time.Time) {
	p := r.p
	p.expireGrace(now)
	for _, s := range p.arrange(now) {
		if s.stop != nil {
			s.stop() // it left the active set: its long poll is of no use
		}
	}
	r.d.usable.Store(int32(p.usable()))
	if len(p.sources) == 0 {
		return
	}
	free := p.free()
	// Rotate which source goes first, so no source always gets the best picks.
	off := p.rng.IntN(len(p.sources))
	for k := range p.sources {
		s := p.sources[(off+k)%len(p.sources)]
		if !s.active || !s.usable(now) {
			continue
		}
		if p.wantsHave(s, now) {
			r.askHave(s)
		}
		if !s.known || s.choked {
			continue
		}
		depth := s.depth(now, p.chunkSize, r.d.opts.PerSource)
		for s.inflight < depth && p.active < p.maxInFlight && r.held < 2*p.maxInFlight {
			i, endgame := p.next(s, now, free)
			if i < 0 {
				break
			}
			if endgame {
				r.d.log.Debug("endgame: duplicating chunk request", "chunk", i, "source", s.name)
			} else {
				free--
			}
			if t := r.d.opts.Trace; t != nil {
				t.Info("request", "chunk", i, "source", s.name, "endgame", endgame, "depth", depth, "in_flight", s.inflight)
			}
			r.startChunk(p.start(i, s, now))
		}
	}
}

// askHave asks s what it offers: at once the first time, then with a long
// poll if it is a HaveWaiter. The request is cancelled if s leaves the active
// set.
func (r *run) askHave(s *srcState) {
	s.asking = true
	poll, known := s.waiter && s.known, s.have.Digest()
	ctx, cancel := context.WithCancel(r.ctx)
	s.stop = cancel
	id, n := r.d.m.id, r.d.m.NumChunks()
	r.wg.Go(func() {
		defer cancel()
		var h haveResult
		if poll {
			h.bf, h.err = s.src.(HaveWaiter).WaitHave(ctx, id, n, known)
		} else {
			h.bf, h.err = s.src.Have(ctx, id, n)
		}
		h.s, h.stopped = s, ctx.Err() != nil && r.ctx.Err() == nil
		if h.err == nil {
			h.seed = h.bf.Full()
			if sd, ok := s.src.(Seeder); ok {
				h.seed = sd.Seeding(id)
			}
		}
		select {
		case r.haves <- h:
		case <-r.ctx.Done():
		}
	})
}

func (r *run) onHave(h haveResult) {
	s := h.s
	s.asking, s.stop = false, nil
	if h.stopped {
		return
	}
	r.stats.Haves++
	s.askAt = time.Now().Add(r.d.opts.HaveInterval)
	if h.err != nil {
		if r.ctx.Err() == nil {
			r.sourceFailed(s, h.err, time.Time{})
			s.askAt = s.backoff
		}
		return
	}
	if s.waiter {
		s.askAt = time.Time{} // poll again at once: the source answers when it has news
	}
	r.p.offered(s, h.bf, h.seed, time.Now())
}

func (r *run) startChunk(req *request) {
	var buf []byte
	if k := len(r.bufs); k > 0 {
		buf, r.bufs = r.bufs[k-1], r.bufs[:k-1]
	} else {
		buf = chunkBuffers.get(int(r.d.m.chunkSize))
	}
	ctx, cancel := context.WithCancel(r.ctx)
	req.cancel = cancel
	r.held++
	r.wg.Go(func() {
		send := func(res chunkResult) {
			select {
			case r.results <- res:
			case <-r.ctx.Done():
			}
		}
		res, sum := r.d.receive(ctx, req, buf)
		cancel()
		if res.err == nil {
			// The source is free for the next request while the chunk is
			// written: disk latency does not idle the network.
			send(chunkResult{req: req, received: true, queued: res.queued})
			res = r.d.store(req, buf, sum)
		}
		send(res)
	})
}

// receive reads chunk req.i from its source into buf and checks it against
// the manifest, hashing it as it arrives.
func (d *Download) receive(ctx context.Context, req *request, buf []byte) (chunkResult, Hash) {
	res := chunkResult{req: req, buf: buf}
	i, n := req.i, d.m.ChunkLen(req.i)
	var sum Hash
	rc, err := req.s.src.OpenChunk(ctx, d.m.id, i)
	if t := d.opts.Trace; t != nil {
		wait := slog.Int64("wait_us", time.Since(req.started).Microseconds())
		switch {
		case err == nil:
			t.Info("open", "chunk", i, "source", req.s.name, wait)
		case errors.Is(err, ErrBusy):
			t.Info("busy", "chunk", i, "source", req.s.name, wait)
		}
	}
	if err != nil {
		res.err = err
		return res, sum
	}
	defer rc.Close()
	if q, ok := rc.(Queued); ok {
		res.queued = q.Queued()
	}
	// Hash each piece as it arrives, while it is in cache, rather than in a
	// second pass over the chunk.
	h := hashers.Get().(*blake3.Hasher)
	h.Reset()
	defer hashers.Put(h)
	got, err := io.ReadFull(io.TeeReader(d.opts.Limiter.Reader(ctx, clockReader{rc, &d.dataAt}), h), buf[:n])
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		res.err = fmt.Errorf("chunk %d: short read, %d of %d bytes: %w", i, got, n, io.ErrUnexpectedEOF)
		return res, sum
	}
	if err != nil {
		res.err = fmt.Errorf("chunk %d: %w", i, err)
		return res, sum
	}
	var one [1]byte
	if k, _ := rc.Read(one[:]); k > 0 {
		res.err = fmt.Errorf("%w: chunk %d of %s from %s: more than its %d bytes", ErrBadChunk, i, d.m.id, req.s.name, n)
		return res, sum
	}
	h.Sum(sum[:0])
	if err := d.m.checkHash(i, n, sum); err != nil {
		err.(*ChunkError).Source = req.s.name
		res.err = err
	}
	return res, sum
}

// store writes a received, verified chunk to the share.
func (d *Download) store(req *request, buf []byte, sum Hash) chunkResult {
	res := chunkResult{req: req, buf: buf}
	if err := d.sh.putHashed(req.i, buf[:d.m.ChunkLen(req.i)], sum); err != nil {
		res.err, res.local = err, true
	}
	return res
}

func (r *run) onChunk(res chunkResult) error {
	p, req, s, i := r.p, res.req, res.req.s, res.req.i
	if res.received {
		p.received(req, int64(r.d.m.ChunkLen(i)), res.queued, time.Now())
		return nil
	}
	r.bufs = append(r.bufs, res.buf)
	r.held--
	won, lost := p.finish(req, res.err == nil)
	if t := r.d.opts.Trace; t != nil {
		age := slog.Int64("age_us", time.Since(req.started).Microseconds())
		switch {
		case res.err == nil:
			t.Info("done", "chunk", i, "source", s.name, "won", won, age)
		case !errors.Is(res.err, ErrBusy):
			t.Info("failed", "chunk", i, "source", s.name, "lost", req.lost, age, "err", res.err)
		}
	}
	switch {
	case res.err == nil && !won:
		r.stats.Duplicates++
		return nil
	case res.err == nil:
		n := int64(r.d.m.ChunkLen(i))
		r.stats.Chunks++
		r.stats.Bytes += n
		r.fetched += n
		s.stats.Chunks++
		s.stats.Bytes += n
		r.last = time.Now()
		if rt := r.d.opts.Retry; rt != nil {
			rt.progress(req.started)
		}
		for _, q := range lost {
			q.cancel()
		}
		if pr := r.d.opts.Progress; pr != nil {
			held := r.d.m.NumChunks() - p.need.Count()
			pr(Progress{Chunks: held, TotalChunks: r.d.m.NumChunks(), Bytes: r.d.sh.heldBytes(), TotalBytes: r.d.m.size, Fetched: r.fetched, Index: i, From: s.src})
		}
		return nil
	case req.lost || !p.need.Has(i):
		r.stats.Duplicates++
		return nil
	case res.local:
		return fmt.Errorf("store chunk %d: %w", i, res.err)
	case r.ctx.Err() != nil:
		return nil
	}
	p.requeue(i)
	if errors.Is(res.err, ErrBadChunk) {
		r.stats.BadChunks++
		s.stats.Bad++
		if r.d.opts.BadChunk != nil {
			r.d.opts.BadChunk(s.src, res.err)
		}
		s.stats.LastErr = res.err
		if !s.stats.Dropped {
			s.stats.Dropped = true
			r.d.log.Warn("dropping source: bad chunk", "source", s.name, "chunk", i, "err", res.err)
		}
		return nil
	}
	if errors.Is(res.err, ErrChunkNotHeld) && s.known {
		p.notHeld(s, i)
		s.stats.LastErr = res.err
		return nil
	}
	if errors.Is(res.err, ErrBusy) {
		// The source is sending all it can: it is choked until it has room
		// for us (see picker.busy). This is no failure.
		r.stats.Busy++
		p.busy(s, time.Now())
		return nil
	}
	r.sourceFailed(s, res.err, req.started)
	return nil
}

// sourceFailed handles an error from s for a request started at started
// (zero: a have request): a permanent one (Permanent) drops it, anything
// else backs it off, longer each time (see picker.failed).
func (r *run) sourceFailed(s *srcState, err error, started time.Time) {
	s.stats.Errors++
	s.stats.LastErr = err
	if Permanent(err) {
		if !s.stats.Dropped {
			s.stats.Dropped = true
			r.d.log.Warn("dropping source", "source", s.name, "err", err)
		}
		return
	}
	if back := r.p.failed(s, time.Now(), started); back > 0 {
		if rt := r.d.opts.Retry; rt != nil {
			rt.failed(s.name, err, back)
		}
		r.d.log.Debug("source failed; backing off", "source", s.name, "err", err, "backoff", back)
	}
}

// heldBytes returns the bytes of the chunks held.
func (s *Share) heldBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := int64(s.have.Count()) * s.m.chunkSize
	if last := s.m.NumChunks() - 1; last >= 0 && s.have.Has(last) {
		n -= s.m.chunkSize - int64(s.m.ChunkLen(last))
	}
	return n
}
