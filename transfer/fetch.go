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
	"time"

	"github.com/zeebo/blake3"
)

// Download defaults.
const (
	DefaultMaxInFlight  = 16               // chunks in flight in all; the download holds at most twice this many chunk buffers (in flight, being written)
	DefaultPerSource    = 8                // chunks in flight per source: enough to keep a loopback or LAN link busy
	DefaultStallTimeout = 60 * time.Second // no chunk for this long ends a download
	DefaultHaveInterval = 500 * time.Millisecond
	minDepth            = 2                      // requests kept in flight to any source
	depthQueueTime      = 250 * time.Millisecond // a source's depth: this much of its rate
	rateWindow          = 2 * time.Second        // rates are measured over this window
	schedTick           = 25 * time.Millisecond  // how often the scheduler looks at timers
)

// DownloadOptions configures a Download. The zero value works.
type DownloadOptions struct {
	MaxInFlight int      // chunks in flight in all; 0: DefaultMaxInFlight
	PerSource   int      // most chunks in flight per source (see srcState.depth); 0: DefaultPerSource
	Limiter     *Limiter // download cap on chunk bytes; nil: none
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
	wake    chan struct{} // cap 1: a source was added

	// Owned by Run's goroutine.
	sources []*srcState
	byName  map[string]*srcState
}

// NewDownload prepares a download into sh.
func NewDownload(sh *Share, opts DownloadOptions) *Download {
	opts.MaxInFlight = cmp.Or(opts.MaxInFlight, DefaultMaxInFlight)
	opts.PerSource = cmp.Or(opts.PerSource, DefaultPerSource)
	opts.StallTimeout = cmp.Or(opts.StallTimeout, DefaultStallTimeout)
	opts.HaveInterval = cmp.Or(opts.HaveInterval, DefaultHaveInterval)
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Download{sh: sh, m: sh.m, opts: opts, log: log, wake: make(chan struct{}, 1), byName: map[string]*srcState{}}
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

type srcState struct {
	src     Source
	name    string
	waiter  bool // src is a HaveWaiter
	have    Bitfield
	known   bool      // have is valid
	asking  bool      // a Have request is in flight
	askAt   time.Time // next Have request allowed
	starved bool      // has nothing we need right now; cleared when that may change
	active  int       // chunk requests in flight
	fails   int       // consecutive failures, counting requests in flight together as one
	failAt  time.Time // when the last failure was counted
	backoff time.Time // no new requests before this
	done    []sample  // chunks received in the last rateWindow
	stats   SourceStats
}

type sample struct {
	at time.Time
	n  int64
}

// depth is how many requests to keep in flight to s: enough to cover
// depthQueueTime of its recent rate, within [minDepth, max]. A source that
// is slow (a seed whose uplink is shared by many) gets few requests, so its
// chunks arrive one after another, soon enough to be passed on to other
// peers, instead of all arriving late together; a fast one gets many.
func (s *srcState) depth(now time.Time, chunkSize int64, limit int) int {
	for len(s.done) > 0 && now.Sub(s.done[0].at) > rateWindow {
		s.done = s.done[1:]
	}
	if len(s.done) < 2 {
		return min(minDepth, limit)
	}
	var bytes int64
	for _, d := range s.done {
		bytes += d.n
	}
	span := max(now.Sub(s.done[0].at), 10*time.Millisecond)
	rate := float64(bytes) / span.Seconds()
	want := int(rate*depthQueueTime.Seconds()/float64(chunkSize)) + 1
	return min(max(want, minDepth), limit)
}

func (s *srcState) usable(now time.Time) bool {
	return !s.stats.Dropped && !now.Before(s.backoff)
}

type request struct {
	i        int
	s        *srcState
	started  time.Time
	cancel   context.CancelFunc
	lost     bool // another request for the chunk won
	received bool // its source slot was given back; the chunk is being written
}

type chunkResult struct {
	req      *request
	buf      []byte
	err      error
	local    bool // err is ours (disk), not the source's
	received bool // the chunk arrived and checked out; it is being written
}

type haveResult struct {
	s   *srcState
	bf  Bitfield
	err error
}

// run is the state of one Run call.
type run struct {
	d        *Download
	ctx      context.Context
	need     Bitfield // chunks not held
	avail    []int32  // per chunk, how many known sources have it
	inflight map[int][]*request
	active   int // requests in flight on the network
	held     int // chunk buffers in use: requests in flight, and chunks being written
	bufs     [][]byte
	results  chan chunkResult
	haves    chan haveResult
	wg       sync.WaitGroup
	stats    Stats
	fetched  int64
	last     time.Time // last chunk stored
}

// Run fetches every missing chunk, verifying each before it is stored, and
// returns when the share is complete, the context is done, the download
// stalls or runs out of sources. Chunks fetched before an error stay stored,
// so running a new Download later resumes.
func (d *Download) Run(ctx context.Context) (Stats, error) {
	begin := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	n := d.m.NumChunks()
	r := &run{
		d:        d,
		ctx:      ctx,
		avail:    make([]int32, n),
		inflight: map[int][]*request{},
		results:  make(chan chunkResult),
		haves:    make(chan haveResult),
		last:     begin,
		stats:    Stats{Sources: map[string]SourceStats{}},
	}
	have := d.sh.Have()
	r.need = FullBitfield(n)
	for i := range n {
		if have.Has(i) {
			r.need.Clear(i)
		}
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
	for _, s := range d.sources {
		r.stats.Sources[s.name] = s.stats
	}
	r.stats.Elapsed = time.Since(begin)
	return r.stats, err
}

func (r *run) loop() error {
	d := r.d
	tick := time.NewTicker(schedTick)
	defer tick.Stop()
	for {
		r.addPending()
		if r.need.Count() == 0 { // requests still out lost a race; Run cancels them
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
		select {
		case res := <-r.results:
			if err := r.onChunk(res); err != nil {
				return err
			}
		case h := <-r.haves:
			r.onHave(h)
		case <-d.wake:
		case <-tick.C:
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
		if !have.Has(i) && !r.need.Has(i) {
			r.need.Set(i)
			lost = true
		}
	}
	if lost {
		r.requeueAll()
	}
	return lost
}

// checkHope ends a download that cannot finish.
func (r *run) checkHope(now time.Time) error {
	d := r.d
	if now.Sub(r.last) > d.opts.StallTimeout {
		return fmt.Errorf("%w: no chunk for %v; %d of %d chunks held%s", ErrStalled,
			d.opts.StallTimeout, d.m.NumChunks()-r.need.Count(), d.m.NumChunks(), r.sourceErrors())
	}
	if d.opts.WaitForSources || r.active > 0 {
		return nil
	}
	for _, s := range d.sources {
		if !s.stats.Dropped {
			return nil
		}
	}
	return fmt.Errorf("%w for %s: %d of %d chunks held%s", ErrNoSources, d.m.id,
		d.m.NumChunks()-r.need.Count(), d.m.NumChunks(), r.sourceErrors())
}

func (r *run) sourceErrors() string {
	var b strings.Builder
	for _, s := range r.d.sources {
		if s.stats.LastErr != nil {
			fmt.Fprintf(&b, "\n  %s: %v", s.name, s.stats.LastErr)
		}
	}
	return b.String()
}

func (r *run) addPending() {
	d := r.d
	d.mu.Lock()
	pending := d.pending
	d.pending = nil
	d.mu.Unlock()
	for _, src := range pending {
		name := src.String()
		if _, ok := d.byName[name]; ok {
			continue
		}
		_, waiter := src.(HaveWaiter)
		s := &srcState{src: src, name: name, waiter: waiter}
		d.byName[name] = s
		d.sources = append(d.sources, s)
	}
}

// schedule starts Have requests for sources that need one and chunk requests
// for every free slot.
func (r *run) schedule(now time.Time) {
	d := r.d
	if len(d.sources) == 0 {
		return
	}
	free := r.need.Count()
	for i := range r.inflight {
		if r.need.Has(i) {
			free--
		}
	}
	// Rotate which source goes first, so no source always gets the best picks.
	off := rand.IntN(len(d.sources))
	for k := range d.sources {
		s := d.sources[(off+k)%len(d.sources)]
		if !s.usable(now) {
			continue
		}
		if !s.asking && r.shouldAsk(s, now) {
			r.askHave(s)
		}
		if !s.known {
			continue
		}
		depth := s.depth(now, d.m.chunkSize, d.opts.PerSource)
		for s.active < depth && r.active < d.opts.MaxInFlight && r.held < 2*d.opts.MaxInFlight {
			if free > 0 {
				if s.starved {
					break
				}
				i := r.pickFree(s)
				if i < 0 {
					s.starved = true
					break
				}
				r.startChunk(i, s, now)
				free--
				continue
			}
			i := r.pickEndgame(s)
			if i < 0 {
				s.starved = true // ask again what it has: it may have gained a chunk to race for
				break
			}
			d.log.Debug("endgame: duplicating chunk request", "chunk", i, "source", s.name)
			r.startChunk(i, s, now)
		}
	}
}

// pickFree chooses the next chunk to ask s for: the rarest missing chunk
// that is not in flight and that s has, scanning from a random point. The
// random start spreads concurrent requests, and concurrent downloaders, over
// the share, so that a seed is not asked for the same chunk twice while
// other chunks wait; chunks are written where they belong, so order costs
// nothing. It returns -1 if s has none of them.
func (r *run) pickFree(s *srcState) int {
	n := len(r.avail)
	best, bestAvail := -1, int32(1<<30)
	start := rand.IntN(n)
	for k := 0; k < n; k++ {
		i := start + k
		if i >= n {
			i -= n
		}
		if i%8 == 0 && i+8 <= n && r.need.b[i/8] == 0 {
			k += 7 // eight held chunks at once
			continue
		}
		if !r.need.Has(i) || len(r.inflight[i]) > 0 || !s.have.Has(i) {
			continue
		}
		if r.avail[i] < bestAvail {
			best, bestAvail = i, r.avail[i]
			if bestAvail <= 1 {
				break
			}
		}
	}
	return best
}

// pickEndgame is for when every missing chunk is in flight: it returns the
// oldest chunk with a single request, from another source, that s could
// duplicate, or -1. The first copy to arrive wins; the other is cancelled.
func (r *run) pickEndgame(s *srcState) int {
	var oldest *request
	for i, reqs := range r.inflight {
		if len(reqs) != 1 || reqs[0].s == s || !r.need.Has(i) || !s.have.Has(i) {
			continue
		}
		if oldest == nil || reqs[0].started.Before(oldest.started) {
			oldest = reqs[0]
		}
	}
	if oldest == nil {
		return -1
	}
	return oldest.i
}

// shouldAsk decides whether to ask s what it holds: always at first; then,
// for a source that lacks chunks, either keep a long poll outstanding (a
// HaveWaiter tells us the moment it gains chunks) or, for other sources,
// ask again every HaveInterval while it has nothing for us.
func (r *run) shouldAsk(s *srcState, now time.Time) bool {
	switch {
	case !s.known:
		return true
	case s.have.Full() || now.Before(s.askAt):
		return false
	case s.waiter:
		return true
	}
	return s.starved && s.active == 0
}

func (r *run) askHave(s *srcState) {
	s.asking = true
	poll, known := s.waiter && s.known, s.have.Digest()
	r.wg.Go(func() {
		var bf Bitfield
		var err error
		if poll {
			bf, err = s.src.(HaveWaiter).WaitHave(r.ctx, r.d.m.id, r.d.m.NumChunks(), known)
		} else {
			bf, err = s.src.Have(r.ctx, r.d.m.id, r.d.m.NumChunks())
		}
		select {
		case r.haves <- haveResult{s: s, bf: bf, err: err}:
		case <-r.ctx.Done():
		}
	})
}

func (r *run) onHave(h haveResult) {
	s := h.s
	s.asking = false
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
	for i := range len(r.avail) {
		was, is := s.known && s.have.Has(i), h.bf.Has(i)
		switch {
		case is && !was:
			r.avail[i]++
		case was && !is:
			r.avail[i]--
		}
	}
	s.have, s.known, s.starved, s.fails = h.bf, true, false, 0
}

func (r *run) startChunk(i int, s *srcState, now time.Time) {
	var buf []byte
	if k := len(r.bufs); k > 0 {
		buf, r.bufs = r.bufs[k-1], r.bufs[:k-1]
	} else {
		buf = chunkBuffers.get(int(r.d.m.chunkSize))
	}
	ctx, cancel := context.WithCancel(r.ctx)
	req := &request{i: i, s: s, started: now, cancel: cancel}
	r.inflight[i] = append(r.inflight[i], req)
	r.active++
	r.held++
	s.active++
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
			send(chunkResult{req: req, received: true})
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
	if err != nil {
		res.err = err
		return res, sum
	}
	defer rc.Close()
	// Hash each piece as it arrives, while it is in cache, rather than in a
	// second pass over the chunk.
	h := hashers.Get().(*blake3.Hasher)
	h.Reset()
	defer hashers.Put(h)
	got, err := io.ReadFull(io.TeeReader(d.opts.Limiter.Reader(ctx, rc), h), buf[:n])
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
	req, s, i := res.req, res.req.s, res.req.i
	if res.received {
		req.received = true
		r.active--
		s.active--
		s.fails = 0 // it works
		s.done = append(s.done, sample{at: time.Now(), n: int64(r.d.m.ChunkLen(i))})
		return nil
	}
	r.bufs = append(r.bufs, res.buf)
	r.held--
	if !req.received {
		r.active--
		s.active--
	}
	reqs := r.inflight[i]
	for k, q := range reqs {
		if q == req {
			reqs = append(reqs[:k], reqs[k+1:]...)
			break
		}
	}
	if len(reqs) == 0 {
		delete(r.inflight, i)
	} else {
		r.inflight[i] = reqs
	}

	switch {
	case res.err == nil:
		s.fails = 0
		if !r.need.Has(i) {
			r.stats.Duplicates++
			return nil
		}
		r.need.Clear(i)
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
		for _, q := range r.inflight[i] {
			q.lost = true
			q.cancel()
		}
		if p := r.d.opts.Progress; p != nil {
			held := r.d.m.NumChunks() - r.need.Count()
			p(Progress{Chunks: held, TotalChunks: r.d.m.NumChunks(), Bytes: r.d.sh.heldBytes(), TotalBytes: r.d.m.size, Fetched: r.fetched, Index: i, From: s.src})
		}
		return nil
	case req.lost || !r.need.Has(i):
		r.stats.Duplicates++
		return nil
	case res.local:
		return fmt.Errorf("store chunk %d: %w", i, res.err)
	case r.ctx.Err() != nil:
		return nil
	}
	r.requeue(i)
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
		if s.have.Has(i) {
			s.have.Clear(i)
			r.avail[i]--
		}
		s.stats.LastErr = res.err
		return nil
	}
	if errors.Is(res.err, ErrBusy) {
		// The source is sending all it can: ask the others for now. This is
		// no failure, so the pause does not grow.
		s.backoff = time.Now().Add(Backoff(1))
		return nil
	}
	r.sourceFailed(s, res.err, req.started)
	return nil
}

// requeueAll makes every needed chunk available to pick again.
func (r *run) requeueAll() {
	for _, s := range r.d.sources {
		s.starved = false
	}
}

// requeue makes chunk i available to pick again.
func (r *run) requeue(i int) {
	for _, s := range r.d.sources {
		if s.known && s.have.Has(i) {
			s.starved = false
		}
	}
}

// sourceFailed handles an error from s for a request started at started: a
// permanent one (Permanent) drops it, anything else backs it off, longer each time. The
// requests that were already in flight when a failure was counted fail
// together (a restarted server resets them all) and count once.
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
	if !started.IsZero() && started.Before(s.failAt) {
		return
	}
	s.fails++
	s.failAt = time.Now()
	back := Backoff(s.fails) // the policy of every request of a transfer: see retry.go
	s.backoff = time.Now().Add(back)
	if rt := r.d.opts.Retry; rt != nil {
		rt.failed(s.name, err, back)
	}
	r.d.log.Debug("source failed; backing off", "source", s.name, "err", err, "backoff", back)
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
