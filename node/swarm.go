package node

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/sharefiles/share/transfer"
)

// lookupDelays are the waits before the first provider lookups of a
// download; after them it looks up every LookupInterval. Early lookups are
// frequent because a swarm forms quickly: peers that start downloading at
// once announce themselves within milliseconds of each other. A lookup is
// skipped while the download knows wantSources usable sources, and stops
// once it has found that many providers: the 20 DHT nodes closest to a
// share hold all its provider records and answer each lookup with all of
// them, so an unbounded lookup by each of N downloaders costs O(N^2).
var lookupDelays = []time.Duration{0, 250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second}

// Announcing a share being downloaded: every downloader announcing itself
// on the DHT costs a lookup and some twenty puts each, dialling some twenty
// peers: in a flash crowd of N downloaders, O(N) connections each, before
// any chunk moves. The swarm finds itself through peer exchange (pex.go)
// instead, and the DHT needs to know only enough providers that a newcomer
// finds a live one: a download announces at announceDelay only if it knows
// fewer than wantProviders other peers of the share (a small swarm, where
// every peer counts), and once complete with the probability
// wantProviders / (peers known + 1), so that about wantProviders peers of a
// swarm of any size announce it. Complete shares are announced again every
// ReprovideInterval.
const (
	announceDelay = time.Second
	wantProviders = 8
)

// wantSources is how many sources a download wants to know of: a few times
// its active set (transfer.DownloadOptions.MaxActive), so that it can
// replace sources that leave or are slow without another lookup. Lookups
// that find no new source double the wait before the next, up to
// LookupInterval << maxLookupBackoff.
const (
	wantSources      = 32
	maxLookupBackoff = 3
)

// swarmDownload is one share being fetched from the swarm.
type swarmDownload struct {
	id     transfer.ID
	sh     *transfer.Share
	d      *transfer.Download
	cancel context.CancelFunc

	mu    sync.Mutex
	added map[peer.ID]*peerSource // sources given to d
	done  bool                    // the download ended: add no more
}

// Fetch returns the share id, starting a swarm download if it is not held
// complete: it finds providers on the DHT, takes the manifest from the first
// that has a valid one, and creates the partial share, which is served to
// other peers chunk by chunk as it fills. It returns once the download is
// under way (or ctx is done, or no provider was found within FetchTimeout).
func (n *Node) Fetch(ctx context.Context, id transfer.ID) (*transfer.Share, error) {
	if sh, err := n.store.Get(id); err == nil {
		if !sh.Complete() {
			n.ensureDownload(sh, nil)
		}
		return sh, nil
	}
	ctx, cancel := context.WithTimeout(ctx, n.opts.FetchTimeout)
	defer cancel()
	m, providers, err := n.fetchManifest(ctx, id)
	if err != nil {
		return nil, err
	}
	sh, _, err := n.store.Create(m)
	if err != nil {
		return nil, err
	}
	n.ensureDownload(sh, providers)
	return sh, nil
}

// fetchManifest finds providers of id and returns the first valid manifest
// one of them sends, with the providers seen so far.
func (n *Node) fetchManifest(ctx context.Context, id transfer.ID) (*transfer.Manifest, []peer.ID, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the lookup once we have what we need
	var providers []peer.ID
	var m *transfer.Manifest
	var errs []error
	start, lookups := time.Now(), 0
	for m == nil && ctx.Err() == nil {
		lookups++
		_, err := n.findProviders(ctx, id, 0, func(ai peer.AddrInfo) bool {
			providers = append(providers, ai.ID)
			src := n.peerSource(ai.ID)
			got, err := transfer.FetchManifest(ctx, id, src)
			src.Close()
			if err != nil {
				errs = append(errs, err)
				return true
			}
			m = got
			return false
		})
		if err != nil {
			break
		}
		if m == nil { // nobody yet: a provider may announce in a moment
			select {
			case <-time.After(500 * time.Millisecond):
			case <-ctx.Done():
			}
		}
	}
	if m == nil {
		if len(errs) > 0 {
			return nil, nil, fmt.Errorf("%w: %s: %d %s found in the DHT, but none could be reached or sent a valid manifest: %w",
				transfer.ErrNotFound, id, len(providers), plural(len(providers), "provider", "providers"), errors.Join(errs...))
		}
		return nil, nil, fmt.Errorf("%w: no peer provides %s: %s", transfer.ErrNotFound, id, n.lookupReport(time.Since(start), lookups))
	}
	return m, providers, nil
}

// ensureDownload starts a swarm download of a partial share unless one
// runs; either way it adds the given peers as sources.
func (n *Node) ensureDownload(sh *transfer.Share, providers []peer.ID) {
	id := sh.ID()
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	sw, ok := n.downloads[id]
	if !ok {
		ctx, cancel := context.WithCancel(n.ctx)
		sw = &swarmDownload{id: id, sh: sh, cancel: cancel, added: map[peer.ID]*peerSource{}}
		sw.d = transfer.NewDownload(sh, transfer.DownloadOptions{
			MaxInFlight:    n.opts.MaxInFlight,
			PerSource:      n.opts.PerSource,
			MaxActive:      n.opts.MaxActive,
			Limiter:        n.opts.DownloadLimit,
			StallTimeout:   n.opts.StallTimeout,
			WaitForSources: true,
			Progress:       n.progress(sh.Manifest()),
			BadChunk:       func(transfer.Source, error) { n.m.badChunks.Inc() },
			Logger:         n.log,
			Trace:          n.opts.Trace,
		})
		n.downloads[id] = sw
		n.wg.Go(func() { n.runDownload(ctx, sw) })
	}
	n.mu.Unlock()
	for _, pid := range providers {
		n.addSource(sw, pid)
	}
}

// addSource gives pid to sw's download as a source, once; it reports
// whether pid is new.
func (n *Node) addSource(sw *swarmDownload, pid peer.ID) bool {
	if pid == n.host.ID() {
		return false
	}
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if _, ok := sw.added[pid]; ok || sw.done {
		return false
	}
	src := n.peerSource(pid)
	sw.added[pid] = src
	n.host.ConnManager().Protect(pid, protectTag(sw.id))
	sw.d.AddSource(src)
	return true
}

func protectTag(id transfer.ID) string { return "share:" + id.String() }

// peerGone tells the downloads that have pid as a source that it left, once
// its last connection closed: a download must not wait on a peer that is
// gone (see transfer.Download.SourceGone), and a peer that leaves after a
// graceful close may never fail a request of ours. It runs from the
// network's notifications, so it only takes locks and returns.
func (n *Node) peerGone(pid peer.ID) {
	if n.host.Network().Connectedness(pid) == network.Connected {
		return // another connection is up
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	for _, sw := range n.downloads {
		sw.mu.Lock()
		if src, ok := sw.added[pid]; ok && !sw.done {
			sw.d.SourceGone(src)
		}
		sw.mu.Unlock()
	}
}

// noticeDownloader adds a peer that asks us for a share we are downloading
// as a source of that download: it is downloading it too, and will have
// chunks to trade. This forms the swarm faster than DHT lookups alone. It
// runs on every request, so it takes read locks only for a peer already
// known.
func (n *Node) noticeDownloader(id transfer.ID, pid peer.ID) {
	n.mu.RLock()
	sw, ok := n.downloads[id]
	n.mu.RUnlock()
	if ok {
		n.addSource(sw, pid)
	}
}

// runDownload runs a swarm download to its end, looking up providers all
// along.
func (n *Node) runDownload(ctx context.Context, sw *swarmDownload) {
	lookupCtx, stopLookups := context.WithCancel(ctx)
	var lookups = make(chan struct{})
	go func() {
		defer close(lookups)
		n.lookupLoop(lookupCtx, sw)
	}()
	start := time.Now()
	n.log.Info("swarm download started", "share", sw.id, "name", sw.sh.Manifest().Name(), "have", sw.sh.HaveCount(), "chunks", sw.sh.Manifest().NumChunks())
	announced := make(chan struct{})
	go func() {
		defer close(announced)
		select {
		case <-time.After(announceDelay):
			if sw.d.Usable() < wantProviders {
				n.announce(sw.id) // a small swarm: it serves chunks as soon as it has some
			}
		case <-lookupCtx.Done():
		}
	}()
	stats, err := sw.d.Run(ctx)
	stopLookups()
	<-lookups
	<-announced
	if err == nil && rand.Float64()*float64(sw.d.Usable()+1) < wantProviders {
		n.announce(sw.id)
	}

	n.mu.Lock()
	delete(n.downloads, sw.id)
	n.mu.Unlock()
	sw.mu.Lock()
	sw.done = true
	for pid, src := range sw.added {
		n.host.ConnManager().Unprotect(pid, protectTag(sw.id))
		src.Close()
	}
	sw.mu.Unlock()
	st := n.share(sw.id)
	st.mu.Lock()
	st.lastErr = ""
	if err != nil {
		st.lastErr = err.Error()
	}
	st.mu.Unlock()
	switch {
	case err == nil:
		n.log.Info("swarm download complete", "share", sw.id, "chunks", stats.Chunks, "bad_chunks", stats.BadChunks,
			"sources", len(stats.Sources), "took", time.Since(start).Round(time.Millisecond))
	case errors.Is(err, context.Canceled):
		n.log.Info("swarm download stopped", "share", sw.id)
	default:
		n.log.Warn("swarm download failed; chunks fetched are kept", "share", sw.id, "err", err)
	}
}

// lookupLoop keeps learning sources while a download runs: by peer
// exchange, else from the DHT.
func (n *Node) lookupLoop(ctx context.Context, sw *swarmDownload) {
	idle := 0 // rounds in a row that found no new source
	for k := 0; ; k++ {
		wait := n.opts.LookupInterval << min(idle, maxLookupBackoff)
		if k < len(lookupDelays) {
			wait = lookupDelays[k]
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
		if sw.d.Usable() >= wantSources {
			continue
		}
		// Ask a source first (peer exchange): one round trip on a
		// connection that exists; the DHT only if that found nobody new.
		added := n.exchangeWithSome(ctx, sw)
		if added == 0 {
			lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			n.findProviders(lctx, sw.id, wantSources, func(ai peer.AddrInfo) bool {
				if n.addSource(sw, ai.ID) {
					added++
				}
				return true
			})
			cancel()
		}
		if added == 0 {
			idle++
		} else {
			idle = 0
		}
	}
}

// progress returns the Progress callback of a download: it counts bytes per
// peer, per share, and chunks from seeds against chunks from peers.
func (n *Node) progress(m *transfer.Manifest) func(transfer.Progress) {
	return func(p transfer.Progress) {
		size := m.ChunkLen(p.Index)
		from := ""
		if ps, ok := p.From.(*peerSource); ok {
			n.m.peerRecv.add(ps.pid.String(), float64(size))
			from = "peer"
			if ps.seed.Load() {
				from = "seed"
			}
			n.m.chunksRecv.WithLabelValues(from).Inc()
		}
		st := n.share(m.ID())
		st.down.Add(int64(size))
		switch from {
		case "seed":
			st.fromSeed.Add(1)
		case "peer":
			st.fromPeers.Add(1)
		}
		n.uploads.changed() // it offers one chunk more
	}
}

// lookupReport says, for a lookup that found no provider, where the peer
// looked and what may be wrong, in words for the user of its API.
func (n *Node) lookupReport(took time.Duration, lookups int) string {
	if n.dht.RoutingTable().Size() == 0 {
		return fmt.Sprintf("this peer knows no other peer (its DHT routing table stayed empty for %v): start it with --bootstrap and the address of a peer of your network", took.Round(time.Second))
	}
	return fmt.Sprintf("%d DHT %s in %v, with %d peers connected and %d in the routing table; is a peer that holds the share running and joined to this network?",
		lookups, plural(lookups, "lookup", "lookups"), took.Round(time.Second), len(n.host.Network().Peers()), n.dht.RoutingTable().Size())
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
