package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Source is where a download gets a share: a server, a peer, a local store.
// Its three calls are the whole chunk protocol; the server's HTTP routes and
// the peer's libp2p protocol each carry exactly these. A Source reports:
//
//   - ErrNotFound when it has no such share,
//   - ErrChunkNotHeld when it has the share but not that chunk (yet),
//   - ErrSourceRefused when it will not serve us (auth, limits): permanent,
//   - ErrBusy when it is at a limit right now: ask another source,
//
// wrapped with %w. Permanent decides which errors drop a source; any other
// error is treated as transient and retried after a backoff. Implementations are safe for concurrent use.
type Source interface {
	// Manifest returns the raw manifest of share id; the caller verifies it.
	Manifest(ctx context.Context, id ID) ([]byte, error)
	// Have returns the chunks of id (a share of n chunks) the source holds.
	Have(ctx context.Context, id ID, n int) (Bitfield, error)
	// OpenChunk returns a reader of chunk i of share id. The caller reads the
	// chunk's length (from the manifest), verifies it and closes the reader.
	OpenChunk(ctx context.Context, id ID, i int) (io.ReadCloser, error)
	// String names the source in messages and statistics.
	String() string
}

// ErrSourceRefused: the source will not serve this client (wrong token, not
// allowed); retrying does not help.
var ErrSourceRefused = errors.New("source refused the request")

// Queued is an optional ability of a chunk reader that Source.OpenChunk
// returns: how long the source kept the request waiting in line before it
// began to send (a server's send slots, reported in its Server-Timing
// header). A download takes it out of the request's latency, so that time
// in line does not pass for a longer round trip: the request depth follows
// the bandwidth-delay product, and a line grows by itself if waiting raised
// the depth (see srcState.depth).
type Queued interface {
	Queued() time.Duration
}

// HaveWaiter is an optional ability of a Source: a long poll for news, so a
// download learns at once when a source gains chunks (a peer that is itself
// downloading) instead of asking again and again.
type HaveWaiter interface {
	// WaitHave returns the chunks of id (n chunks) the source offers as soon
	// as they differ from the set whose Digest is known, or when ctx is done;
	// with ctx already done it returns at once. A source offers what it holds,
	// or less: a seed offers the chunks it has not yet sent, so each leaves it
	// once (see node). Hence a digest, not a count: the set may also shrink.
	WaitHave(ctx context.Context, id ID, n int, known uint32) (Bitfield, error)
}

// Seeder is an optional ability of a Source: whether, at its last have
// answer for share id, it held every chunk (a seed), even if it offered
// fewer (see HaveWaiter). A download uses it not to rotate a super-seeding
// seed out of its active set for being slow (see picker.go).
type Seeder interface {
	Seeding(id ID) bool
}

// HaveWaitTime is how long a download's long poll asks a source to wait.
const HaveWaitTime = 10 * time.Second

var _ HaveWaiter = (*Store)(nil)

// WaitHave implements HaveWaiter. Once there is news it waits a moment more
// (haveCoalesce), so a source gaining chunks fast answers once for several.
func (st *Store) WaitHave(ctx context.Context, id ID, n int, known uint32) (Bitfield, error) {
	s, err := st.Get(id)
	if err != nil {
		return Bitfield{}, err
	}
	if n != s.m.NumChunks() {
		return Bitfield{}, fmt.Errorf("have %s: asked for %d chunks, share has %d", id, n, s.m.NumChunks())
	}
	for {
		changed := s.Changed()
		if s.gone() {
			return Bitfield{}, fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		if have := s.Have(); have.Digest() != known {
			if have.Full() { // nothing more to come: no reason to wait
				return have, nil
			}
			select {
			case <-time.After(haveCoalesce):
			case <-ctx.Done():
			}
			return s.Have(), nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return s.Have(), nil
		}
	}
}

var _ Source = (*Store)(nil)

// Manifest implements Source.
func (st *Store) Manifest(_ context.Context, id ID) ([]byte, error) {
	s, err := st.Get(id)
	if err != nil {
		return nil, err
	}
	return s.m.raw, nil
}

// Have implements Source.
func (st *Store) Have(_ context.Context, id ID, n int) (Bitfield, error) {
	s, err := st.Get(id)
	if err != nil {
		return Bitfield{}, err
	}
	if n != s.m.NumChunks() {
		return Bitfield{}, fmt.Errorf("have %s: asked for %d chunks, share has %d", id, n, s.m.NumChunks())
	}
	return s.Have(), nil
}

// OpenChunk implements Source.
func (st *Store) OpenChunk(_ context.Context, id ID, i int) (io.ReadCloser, error) {
	s, err := st.Get(id)
	if err != nil {
		return nil, err
	}
	return s.OpenChunk(i)
}

// String implements Source.
func (st *Store) String() string { return "store " + st.dir }

// FetchManifest gets the manifest of id from the first source that has a
// valid one, trying them in order. A source that sends a manifest that does
// not match id is reported in the error.
func FetchManifest(ctx context.Context, id ID, sources ...Source) (*Manifest, error) {
	var errs []error
	for _, src := range sources {
		raw, err := src.Manifest(ctx, id)
		if err == nil {
			var m *Manifest
			if m, err = VerifyManifest(id, raw); err == nil {
				return m, nil
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		errs = append(errs, fmt.Errorf("%s: %w", src, err))
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("manifest of %s: %w", id, ErrNoSources)
	}
	return nil, fmt.Errorf("manifest of %s: %w", id, errors.Join(errs...))
}
