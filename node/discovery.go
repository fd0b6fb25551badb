package node

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"

	"github.com/sharefiles/share/transfer"
)

const (
	// RefreshInterval is how often the DHT routing table is refreshed: the
	// DHT's own period (go-libp2p-kad-dht's RoutingTableRefreshPeriod).
	RefreshInterval = 10 * time.Minute

	provideQueueLen = 4096
	provideWorkers  = 4 // Provides in flight: each waits on up to 20 peers
	provideAttempts = 6
	// Bootstrap dials back off from the first to the second.
	minBootstrapBackoff = 250 * time.Millisecond
	maxBootstrapBackoff = 30 * time.Second
	mdnsService         = "share-p2p"
)

// startDiscovery joins the network and starts announcing: it dials the
// bootstrap peers (and keeps retrying those it cannot reach, as a peer may
// start before its bootstrap peer does), keeps the DHT routing table, runs
// the provide workers and the reprovide loop, and mDNS if asked.
func (n *Node) startDiscovery(boot []peer.AddrInfo) {
	for _, ai := range boot {
		n.wg.Go(func() { n.connectLoop(ai) })
	}
	n.wg.Go(n.joinLoop)
	for range provideWorkers {
		n.wg.Go(n.provideWorker)
	}
	n.wg.Go(n.reprovideLoop)
	if n.opts.MDNS {
		svc := mdns.NewMdnsService(n.host, mdnsService, mdnsNotifee{n})
		if err := svc.Start(); err != nil {
			n.log.Warn("mDNS discovery not started", "err", err)
		} else {
			n.mdns = svc
		}
	}
}

// connectLoop dials a bootstrap peer until it is connected, backing off up
// to maxBootstrapBackoff; if the connection drops later, it dials again. An
// error transfer.Permanent calls permanent (a peer whose key does not match
// the address's ID, a host name that does not resolve) is logged as a
// warning and retried at the longest interval only: a daemon keeps trying,
// as its bootstrap peer may be fixed or started later.
func (n *Node) connectLoop(ai peer.AddrInfo) {
	back := minBootstrapBackoff
	warned := false
	for {
		if len(n.host.Network().ConnsToPeer(ai.ID)) == 0 {
			ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
			err := streamError(n.host.Connect(ctx, ai))
			cancel()
			switch {
			case err == nil:
				n.log.Info("connected to bootstrap peer", "peer", ai.ID)
				back, warned = minBootstrapBackoff, false
			case n.ctx.Err() != nil:
			case transfer.Permanent(err):
				back = maxBootstrapBackoff
				if !warned {
					n.log.Warn("cannot join through bootstrap peer; retrying every "+back.String(), "peer", ai.ID, "err", err)
					warned = true
				}
			default:
				n.log.Debug("bootstrap peer unreachable; retrying", "peer", ai.ID, "in", back, "err", err)
				back = min(2*back, maxBootstrapBackoff)
			}
		} else {
			back = 5 * time.Second
		}
		select {
		case <-time.After(back):
		case <-n.ctx.Done():
			return
		}
	}
}

// joinLoop keeps the DHT routing table: a refresh (a lookup of this peer's
// own ID and of a random ID in each bucket) every RefreshInterval, the first
// after a random part of it, so that peers started together do not refresh
// together.
//
// A Kademlia node joins by looking up its own ID (Maymounkov and Mazières,
// "Kademlia", 2002, section 2.3), and go-libp2p-kad-dht's own refresh does
// that and more at start: its own ID and a random ID in every bucket, up to
// three times while bootstrapping, each lookup dialling some twenty peers.
// With 64 peers started at once off one bootstrap peer, that was every peer
// dialling half of the others (a TLS handshake and an identify exchange
// each, ~8 ms of CPU together on this project's machines): 0.3 CPU-s per
// peer, about a third of what a 16 MiB swarm transfer costs, spent before
// any transfer (BENCHMARKS.md). It is not needed to start working: a peer
// that knows its bootstrap peer can look up and announce at once, the
// bootstrap peer knows every peer that joined through it, and the peers a
// peer trades with join its routing table as they connect (the DHT adds
// every connected DHT server it can query). So a peer is ready as soon as it
// is connected to its bootstrap peer, and the table fills in the background.
func (n *Node) joinLoop() {
	if err := n.waitRoutingTable(n.ctx); err != nil {
		return
	}
	for {
		wait := RefreshInterval/2 + rand.N(RefreshInterval/2)
		select {
		case <-time.After(wait):
		case <-n.ctx.Done():
			return
		}
		select {
		case <-n.dht.RefreshRoutingTable():
		case <-n.ctx.Done():
			return
		}
	}
}

// announce queues a provider record for id. Never blocks: if the queue is
// full, the next reprovide round catches up.
func (n *Node) announce(id transfer.ID) {
	select {
	case n.provideQ <- id:
	default:
		n.log.Warn("provide queue full; the share will be announced on the next round", "share", id)
	}
}

// Announce queues a provider record for a share added to the store by
// someone else than the node (an upload session committed through the API).
func (n *Node) Announce(id transfer.ID) { n.announce(id) }

func (n *Node) provideWorker() {
	for {
		select {
		case id := <-n.provideQ:
			n.provide(id)
		case <-n.ctx.Done():
			return
		}
	}
}

// provide announces id on the DHT, off the request path, with a timeout
// (Provide blocks until every put is done), retrying with backoff.
func (n *Node) provide(id transfer.ID) {
	back := time.Second
	for attempt := 1; ; attempt++ {
		if _, err := n.store.Get(id); err != nil {
			return // removed meanwhile
		}
		if err := n.waitRoutingTable(n.ctx); err != nil {
			return
		}
		start := time.Now()
		ctx, cancel := context.WithTimeout(n.ctx, n.opts.ProvideTimeout)
		err := n.dht.Provide(ctx, id.CID(), true)
		cancel()
		n.m.provideSeconds.Observe(time.Since(start).Seconds())
		if err == nil {
			n.m.provides.WithLabelValues("ok").Inc()
			st := n.share(id)
			st.mu.Lock()
			st.provided = time.Now()
			st.mu.Unlock()
			n.log.Debug("announced", "share", id, "took", time.Since(start).Round(time.Millisecond))
			return
		}
		n.m.provides.WithLabelValues("error").Inc()
		if n.ctx.Err() != nil || attempt == provideAttempts || transfer.Permanent(err) {
			n.log.Warn("announce failed", "share", id, "err", err)
			return
		}
		select {
		case <-time.After(back):
		case <-n.ctx.Done():
			return
		}
		back *= 2
	}
}

// reprovideLoop announces every share again each ReprovideInterval: the DHT
// does not, and records expire.
func (n *Node) reprovideLoop() {
	t := time.NewTicker(n.opts.ReprovideInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			for _, sh := range n.store.List() {
				n.announce(sh.ID())
			}
		case <-n.ctx.Done():
			return
		}
	}
}

// waitRoutingTable waits until the DHT knows a peer. An empty routing table
// makes Provide fail and lookups return nothing, without an error.
func (n *Node) waitRoutingTable(ctx context.Context) error {
	for n.dht.RoutingTable().Size() == 0 {
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// findProviders looks id up on the DHT and calls found for each provider
// other than this peer, as they arrive, until found returns false, the
// lookup has found max providers (0: no limit), it ends, or ctx is done. It
// returns how many it found.
func (n *Node) findProviders(ctx context.Context, id transfer.ID, max int, found func(peer.AddrInfo) bool) (int, error) {
	if err := n.waitRoutingTable(ctx); err != nil {
		return 0, err
	}
	start := time.Now()
	count := 0
	if max > 0 {
		max++ // the lookup may find this peer too
	}
	for ai := range n.dht.FindProvidersAsync(ctx, id.CID(), max) {
		if ai.ID == n.host.ID() {
			continue
		}
		if count == 0 {
			n.m.lookupSeconds.Observe(time.Since(start).Seconds())
		}
		count++
		if len(ai.Addrs) > 0 {
			n.host.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.AddressTTL)
		}
		st := n.share(id)
		st.mu.Lock()
		st.providers[ai.ID] = true
		st.mu.Unlock()
		if !found(ai) {
			break
		}
	}
	switch {
	case count > 0:
		n.m.lookups.WithLabelValues("found").Inc()
	case ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded):
		return 0, ctx.Err()
	default:
		n.m.lookups.WithLabelValues("none").Inc()
	}
	return count, nil
}

type mdnsNotifee struct{ n *Node }

// HandlePeerFound connects to a peer found on the LAN; the DHT then adds it.
func (m mdnsNotifee) HandlePeerFound(ai peer.AddrInfo) {
	if ai.ID == m.n.host.ID() {
		return
	}
	ctx, cancel := context.WithTimeout(m.n.ctx, 10*time.Second)
	defer cancel()
	if err := m.n.host.Connect(ctx, ai); err == nil {
		m.n.log.Info("found peer on the LAN", "peer", ai.ID)
	}
}
