package transfer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// The retry policy of every request of a transfer, in both directions: a
// client's put (the manifest, the have bitfield, each chunk upload, the
// final check) and get (the manifest, a peer's fetch), and a download's
// sources (see Download). It is the same everywhere:
//
//   - an error that Permanent calls permanent ends the request at once;
//   - any other error is retried after Backoff(n) for the n-th failure in a
//     row: exponential from minBackoff, at most maxBackoff, with jitter;
//     a busy source (ErrBusy) is no failure, so its pause does not grow;
//   - the transfer ends when it has made no progress (no request of it
//     succeeded) for its stall timeout, DefaultStallTimeout unless set.
//
// Hence a server or peer that restarts in the middle of a transfer, at any
// request, is found again within maxBackoff of its return.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 2 * time.Second // a restarted server is found again within this
)

// Backoff returns the pause after the n-th failure in a row (n >= 1):
// minBackoff doubled n-1 times, at most maxBackoff, of which a random half
// ("equal jitter"), so that clients cut off together do not retry in step.
func Backoff(n int) time.Duration {
	back := min(minBackoff<<min(max(n, 1)-1, 10), maxBackoff)
	return back/2 + rand.N(back/2+1)
}

// Retry carries the policy through one transfer: its stall clock, which
// every success restarts, is shared by all of the transfer's requests, also
// those made at once from several goroutines. Create it with NewRetry; it is
// safe for concurrent use.
type Retry struct {
	stall time.Duration
	// Retrying, if set, is called when a request failed with a transient
	// error and will be tried again after wait: once per run of failures
	// (not again until a request succeeds), from the failing goroutine.
	Retrying func(what string, err error, wait time.Duration)
	// Resumed, if set, is called when a request succeeds after Retrying was
	// called: the transfer moves again.
	Resumed func()

	mu         sync.Mutex
	last       time.Time // the last progress
	reported   bool      // Retrying was called, and no request started since has succeeded
	reportedAt time.Time
}

// NewRetry returns the retry state of a transfer whose stall timeout is
// stall (0: DefaultStallTimeout); its stall clock starts now.
func NewRetry(stall time.Duration) *Retry {
	return &Retry{stall: cmp.Or(stall, DefaultStallTimeout), last: time.Now()}
}

// StallTimeout returns how long the transfer may go without progress.
func (r *Retry) StallTimeout() time.Duration { return r.stall }

// Progress records that the transfer moved forward, restarting its stall
// clock.
func (r *Retry) Progress() { r.progress(time.Now()) }

// progress records the success of a request started at started. Only one
// started after Retrying was called means the server is back (Resumed): a
// request already under way when a server begins to shut down may still
// finish.
func (r *Retry) progress(started time.Time) {
	r.mu.Lock()
	r.last = time.Now()
	resumed := r.reported && !started.Before(r.reportedAt)
	if resumed {
		r.reported = false
	}
	r.mu.Unlock()
	if resumed && r.Resumed != nil {
		r.Resumed()
	}
}

// failed records a transient failure of a request named what, to be tried
// again after wait, and tells Retrying once per run of failures. It reports
// whether the transfer has gone without progress for its stall timeout by
// the end of the wait, in which case it should give up.
func (r *Retry) failed(what string, err error, wait time.Duration) (stalled bool) {
	r.mu.Lock()
	idle := time.Since(r.last)
	notify := r.Retrying != nil && !r.reported && idle+wait <= r.stall
	if notify {
		r.reported, r.reportedAt = true, time.Now()
	}
	r.mu.Unlock()
	if notify {
		r.Retrying(what, err, wait)
	}
	return idle+wait > r.stall
}

// Do runs op, a request named what (for messages, e.g. "POST manifest"),
// until it succeeds, fails with a permanent error, ctx is done, or the
// transfer has made no progress for its stall timeout; it returns op's last
// error, wrapped with ErrStalled in the last case, and an error that is
// ctx's (errors.Is(err, context.Canceled) or DeadlineExceeded) once ctx is
// done, even when op returned before it saw ctx end. A success is progress.
func (r *Retry) Do(ctx context.Context, what string, op func(context.Context) error) error {
	fails := 0
	for {
		start := time.Now()
		err := op(ctx)
		switch {
		case err == nil:
			r.progress(start)
			return nil
		case ctx.Err() != nil:
			if errors.Is(err, ctx.Err()) {
				return err
			}
			return fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), err)
		case Permanent(err):
			return err
		}
		if !errors.Is(err, ErrBusy) {
			fails++
		}
		wait := Backoff(fails)
		if r.failed(what, err, wait) {
			return &stalledError{what: what, stall: r.stall, err: err}
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// stalledError ends a request that kept failing until its transfer had made
// no progress for the stall timeout. It is an ErrStalled and wraps the last
// error.
type stalledError struct {
	what  string
	stall time.Duration
	err   error
}

func (e *stalledError) Error() string {
	return fmt.Sprintf("%s: gave up after %v without progress (the stall timeout): %v", e.what, e.stall, e.err)
}
func (e *stalledError) Unwrap() error        { return e.err }
func (e *stalledError) Is(target error) bool { return target == ErrStalled }
