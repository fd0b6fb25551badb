package node

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"

	"github.com/sharefiles/share/transfer"
)

// Status is what `share status` shows of a peer.
type Status struct {
	Mode         string        `json:"mode"` // "peer"
	PeerID       string        `json:"peer_id"`
	Addrs        []string      `json:"addrs"` // full multiaddrs, for --bootstrap
	Peers        []PeerStatus  `json:"peers"` // connected
	RoutingTable int           `json:"routing_table"`
	Private      PrivateStatus `json:"private"`
	NAT          NATStatus     `json:"nat"`
	Shares       []ShareStatus `json:"shares"`
}

// PeerStatus is one connected peer.
type PeerStatus struct {
	ID      string `json:"id"`
	Addr    string `json:"addr"`
	Relayed bool   `json:"relayed,omitempty"` // through a circuit relay
	Limited bool   `json:"limited,omitempty"` // a relayed connection with limits: no chunks
}

// ShareStatus is one share's state on this peer.
type ShareStatus struct {
	ID          transfer.ID `json:"id"`
	Name        string      `json:"name"`
	DisplayName string      `json:"display_name"` // transfer.DisplayName(Name), for people
	Size        int64       `json:"size"`
	Chunks      int         `json:"chunks"`
	Have        int         `json:"have"`
	Complete    bool        `json:"complete"`
	Damaged     int         `json:"damaged,omitempty"` // chunks found damaged on disk, not fetched again yet
	Downloading bool        `json:"downloading"`
	Providers   int         `json:"providers"` // other peers seen providing it
	BytesUp     int64       `json:"bytes_up"`
	BytesDown   int64       `json:"bytes_down"`
	FromSeed    int         `json:"chunks_from_seed"`  // chunks this peer got from a seed
	FromPeers   int         `json:"chunks_from_peers"` // and from other downloaders
	Announced   time.Time   `json:"announced,omitzero"`
	LastError   string      `json:"last_error,omitempty"`
}

// Status reports the peer's state.
func (n *Node) Status(context.Context) any {
	st := Status{Mode: "peer", PeerID: n.host.ID().String(), RoutingTable: n.dht.RoutingTable().Size(),
		Private: n.privateStatus(), NAT: n.natStatus()}
	for _, a := range n.Addrs() {
		st.Addrs = append(st.Addrs, a.String())
	}
	for _, c := range n.host.Network().Conns() {
		st.Peers = append(st.Peers, PeerStatus{ID: c.RemotePeer().String(), Addr: c.RemoteMultiaddr().String(),
			Relayed: isRelayed(c), Limited: c.Stat().Limited})
	}
	// One line per peer: its best connection (direct before relayed).
	slices.SortFunc(st.Peers, func(a, b PeerStatus) int {
		return cmp.Or(strings.Compare(a.ID, b.ID), cmp.Compare(boolInt(a.Relayed), boolInt(b.Relayed)))
	})
	st.Peers = slices.CompactFunc(st.Peers, func(a, b PeerStatus) bool { return a.ID == b.ID })
	n.mu.RLock()
	defer n.mu.RUnlock()
	for _, sh := range n.store.List() {
		m := sh.Manifest()
		ss := ShareStatus{
			ID: m.ID(), Name: m.Name(), DisplayName: transfer.DisplayName(m.Name()), Size: m.Size(), Chunks: m.NumChunks(),
			Have: sh.HaveCount(), Complete: sh.Complete(), Damaged: sh.Damaged(),
		}
		_, ss.Downloading = n.downloads[m.ID()]
		n.sharesMu.RLock()
		s, ok := n.shares[m.ID()]
		n.sharesMu.RUnlock()
		if ok {
			ss.BytesUp, ss.BytesDown = s.up.Load(), s.down.Load()
			ss.FromSeed, ss.FromPeers = int(s.fromSeed.Load()), int(s.fromPeers.Load())
			s.mu.Lock()
			ss.Providers, ss.Announced, ss.LastError = len(s.providers), s.provided, s.lastErr
			s.mu.Unlock()
		}
		st.Shares = append(st.Shares, ss)
	}
	return st
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
