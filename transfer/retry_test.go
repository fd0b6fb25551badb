package transfer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	tests := []struct {
		n        int
		min, max time.Duration
	}{
		{0, 50 * time.Millisecond, 100 * time.Millisecond}, // as the first
		{1, 50 * time.Millisecond, 100 * time.Millisecond},
		{2, 100 * time.Millisecond, 200 * time.Millisecond},
		{3, 200 * time.Millisecond, 400 * time.Millisecond},
		{5, 800 * time.Millisecond, 1600 * time.Millisecond},
		{6, time.Second, 2 * time.Second}, // capped at maxBackoff
		{60, time.Second, 2 * time.Second},
	}
	for _, tt := range tests {
		seen := map[time.Duration]bool{}
		for range 200 {
			d := Backoff(tt.n)
			if d < tt.min || d > tt.max {
				t.Fatalf("Backoff(%d) = %v, want within [%v, %v]", tt.n, d, tt.min, tt.max)
			}
			seen[d] = true
		}
		if len(seen) < 50 {
			t.Errorf("Backoff(%d): %d distinct values in 200: no jitter", tt.n, len(seen))
		}
	}
}

func TestRetryDo(t *testing.T) {
	transient := fmt.Errorf("POST 127.0.0.1:1: %w", syscall.ECONNREFUSED)
	tests := []struct {
		name     string
		errs     []error // what op returns, call after call; nil after the list
		stall    time.Duration
		calls    int
		wantErr  error // errors.Is; nil: success
		retrying int   // calls of Retrying
	}{
		{"success", nil, time.Minute, 1, nil, 0},
		{"transient then success", []error{transient, transient, transient}, time.Minute, 4, nil, 1},
		{"permanent at once", []error{fmt.Errorf("x: %w", ErrNotFound)}, time.Minute, 1, ErrNotFound, 0},
		{"refusal at once", []error{fmt.Errorf("x: %w", ErrSourceRefused)}, time.Minute, 1, ErrSourceRefused, 0},
		{"transient then permanent", []error{transient, ErrBadManifest}, time.Minute, 2, ErrBadManifest, 1},
		{"busy is retried", []error{ErrBusy, ErrBusy, ErrBusy, ErrBusy, ErrBusy}, time.Minute, 6, nil, 1},
		{"stall ends it", []error{transient, transient, transient, transient, transient, transient, transient, transient, transient, transient}, 300 * time.Millisecond, -1, ErrStalled, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRetry(tt.stall)
			var retrying, resumed int
			r.Resumed = func() { resumed++ }
			r.Retrying = func(what string, err error, wait time.Duration) {
				retrying++
				if what != "op" || err == nil || wait <= 0 {
					t.Errorf("Retrying(%q, %v, %v)", what, err, wait)
				}
			}
			calls := 0
			err := r.Do(context.Background(), "op", func(context.Context) error {
				calls++
				if calls <= len(tt.errs) {
					return tt.errs[calls-1]
				}
				return nil
			})
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == ErrStalled && !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("a stalled retry does not say the last error: %v", err)
			}
			if tt.calls >= 0 && calls != tt.calls {
				t.Fatalf("%d calls, want %d", calls, tt.calls)
			}
			if retrying != tt.retrying {
				t.Fatalf("Retrying called %d times, want %d", retrying, tt.retrying)
			}
			if want := btoi(tt.retrying > 0 && err == nil); resumed != want {
				t.Fatalf("Resumed called %d times, want %d", resumed, want)
			}
		})
	}
}

// Busy answers do not grow the pause: five of them take about five first
// backoffs, not a doubling series (which would be over 3 s).
func TestRetryBusyDoesNotGrow(t *testing.T) {
	r := NewRetry(time.Minute)
	n := 0
	start := time.Now()
	r.Do(context.Background(), "op", func(context.Context) error {
		if n++; n <= 5 {
			return ErrBusy
		}
		return nil
	})
	if took := time.Since(start); took > 5*minBackoff+time.Second {
		t.Fatalf("5 busy answers took %v", took)
	}
}

// The stall clock is the transfer's: a request that keeps failing goes on
// while other requests of the same transfer succeed, and ends once none
// has for the stall timeout.
func TestRetrySharedStallClock(t *testing.T) {
	const stall = 800 * time.Millisecond
	r := NewRetry(stall)
	var others atomic.Bool
	others.Store(true)
	var wg sync.WaitGroup
	wg.Go(func() { // a request that succeeds every 100 ms while others is set
		for others.Load() {
			r.Do(context.Background(), "ok", func(context.Context) error { return nil })
			time.Sleep(100 * time.Millisecond)
		}
	})
	start := time.Now()
	time.AfterFunc(2*stall, func() { others.Store(false) })
	err := r.Do(context.Background(), "failing", func(context.Context) error { return syscall.ECONNRESET })
	wg.Wait()
	took := time.Since(start)
	if !errors.Is(err, ErrStalled) || took < 2*stall || took > 2*stall+stall+3*maxBackoff {
		t.Fatalf("failing request ended after %v with %v; want ErrStalled once the others stopped at %v, within the stall timeout %v", took, err, 2*stall, stall)
	}
}

func TestRetryContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	err := NewRetry(time.Minute).Do(ctx, "op", func(context.Context) error { return syscall.ECONNREFUSED })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// A request already under way when the failures began (a server shutting
// down gracefully) may still succeed: that is progress, but not the server
// being back.
func TestRetryResumedOnlyByNewRequests(t *testing.T) {
	r := NewRetry(time.Minute)
	var retrying, resumed int
	r.Retrying = func(string, error, time.Duration) { retrying++ }
	r.Resumed = func() { resumed++ }
	before := time.Now()
	time.Sleep(time.Millisecond)
	r.failed("GET chunk 1", syscall.ECONNREFUSED, time.Millisecond)
	r.failed("GET chunk 2", syscall.ECONNREFUSED, time.Millisecond) // the same outage: told once
	r.progress(before)
	if retrying != 1 || resumed != 0 {
		t.Fatalf("after an older request's success: Retrying %d, Resumed %d; want 1, 0", retrying, resumed)
	}
	r.progress(time.Now())
	r.progress(time.Now())
	if resumed != 1 {
		t.Fatalf("after a new request's success: Resumed %d, want 1", resumed)
	}
	r.failed("GET chunk 3", syscall.ECONNREFUSED, time.Millisecond) // a new outage: told again
	if retrying != 2 {
		t.Fatalf("a second outage: Retrying %d, want 2", retrying)
	}
}

// ctx ending while op fails for another reason still reads as ctx's end:
// callers tell "the user gave up" from "the server is gone" by it.
func TestRetryContextEndsDuringOp(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	err := NewRetry(time.Minute).Do(ctx, "op", func(context.Context) error {
		cancel()
		return syscall.ECONNREFUSED
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}
