package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/sharefiles/share/transfer"
)

// Peer exchange: a peer tells another which peers it knows in a share's
// swarm (BitTorrent's PEX, BEP 11). A download learns its first sources from
// the DHT, and then the rest of the swarm from them: one round trip to a
// peer already connected, instead of DHT lookups that each dial some twenty
// peers. Every peer remembers who asked it for a share lately (the seed of a
// flash crowd hears from every downloader within a round trip of its start)
// and answers with those and the sources of its own download of it.
//
// PEXProtocolID: the asker writes the share's ID (its text form) and a
// newline; the answer is a JSON object {"peers":[{"id":ID,"addrs":[MULTIADDR,
// ...]}, ...]}, at most pexMaxPeers peers of pexMaxAddrs addresses each,
// pexMaxBytes in all; then the stream is closed. An unknown share gets an
// empty list. Answers are hints from a peer that may lie: their peers become
// candidates of the download like those from the DHT, and are dropped the
// same way if they do not serve the share.
const (
	PEXProtocolID protocol.ID = "/share/pex/1.0.0"

	pexMaxPeers   = 32       // peers in one answer: wantSources
	pexMaxAddrs   = 4        // addresses of one peer
	pexMaxBytes   = 16 << 10 // an answer, encoded
	pexMaxRequest = 128      // a request, encoded
	pexTimeout    = 10 * time.Second
	recentPeers   = 64 // askers a peer remembers per share
)

// pexAnswer is the wire form of an answer.
type pexAnswer struct {
	Peers []pexPeer `json:"peers"`
}

type pexPeer struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
}

// decodePEX parses an answer from untrusted bytes: its peers with their
// addresses; peers without a valid address are left out.
func decodePEX(b []byte) ([]peer.AddrInfo, error) {
	if len(b) > pexMaxBytes {
		return nil, fmt.Errorf("peer exchange: answer of %d bytes, limit %d", len(b), pexMaxBytes)
	}
	var a pexAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, fmt.Errorf("peer exchange: %w", err)
	}
	if len(a.Peers) > pexMaxPeers {
		return nil, fmt.Errorf("peer exchange: %d peers, limit %d", len(a.Peers), pexMaxPeers)
	}
	var out []peer.AddrInfo
	for _, p := range a.Peers {
		id, err := peer.Decode(p.ID)
		if err != nil {
			return nil, fmt.Errorf("peer exchange: peer %q: %w", truncate(p.ID, 60), err)
		}
		if len(p.Addrs) > pexMaxAddrs {
			return nil, fmt.Errorf("peer exchange: peer %s: %d addresses, limit %d", id, len(p.Addrs), pexMaxAddrs)
		}
		ai := peer.AddrInfo{ID: id}
		for _, s := range p.Addrs {
			a, err := ma.NewMultiaddr(s)
			if err != nil {
				return nil, fmt.Errorf("peer exchange: peer %s: address %q: %w", id, truncate(s, 60), err)
			}
			ai.Addrs = append(ai.Addrs, a)
		}
		if len(ai.Addrs) > 0 {
			out = append(out, ai)
		}
	}
	return out, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// handlePEX answers a peer-exchange request.
func (n *Node) handlePEX(s network.Stream) {
	defer s.Close()
	asker := s.Conn().RemotePeer()
	s.SetDeadline(time.Now().Add(pexTimeout))
	line, err := bufio.NewReader(io.LimitReader(s, pexMaxRequest)).ReadString('\n')
	if err != nil {
		s.Reset()
		return
	}
	id, err := transfer.ParseID(strings.TrimSuffix(line, "\n"))
	if err != nil {
		s.Reset()
		return
	}
	var a pexAnswer
	for _, pid := range n.swarmPeers(id, asker) {
		addrs := n.host.Peerstore().Addrs(pid)
		if len(addrs) == 0 {
			continue
		}
		p := pexPeer{ID: pid.String()}
		for _, addr := range addrs[:min(len(addrs), pexMaxAddrs)] {
			p.Addrs = append(p.Addrs, addr.String())
		}
		a.Peers = append(a.Peers, p)
		if len(a.Peers) == pexMaxPeers {
			break
		}
	}
	b, _ := json.Marshal(a)
	for len(b) > pexMaxBytes { // long addresses: fewer peers
		a.Peers = a.Peers[:len(a.Peers)/2]
		b, _ = json.Marshal(a)
	}
	if _, err := s.Write(b); err != nil {
		s.Reset()
	}
}

// swarmPeers returns the peers this peer knows in share id's swarm, in a
// random order, but for except: the sources of its download and the peers
// that asked it for the share lately.
func (n *Node) swarmPeers(id transfer.ID, except peer.ID) []peer.ID {
	seen := map[peer.ID]bool{except: true, n.host.ID(): true}
	var out []peer.ID
	add := func(pid peer.ID) {
		if !seen[pid] {
			seen[pid] = true
			out = append(out, pid)
		}
	}
	st := n.share(id)
	st.mu.Lock()
	for pid := range st.recent {
		add(pid)
	}
	st.mu.Unlock()
	n.mu.RLock()
	sw := n.downloads[id]
	n.mu.RUnlock()
	if sw != nil {
		sw.mu.Lock()
		for pid := range sw.added {
			add(pid)
		}
		sw.mu.Unlock()
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// noteAsker remembers that pid asked for share id: it is in its swarm.
func (n *Node) noteAsker(id transfer.ID, pid peer.ID) {
	st := n.share(id)
	st.mu.Lock()
	defer st.mu.Unlock()
	if _, ok := st.recent[pid]; ok {
		st.recent[pid] = time.Now()
		return
	}
	if len(st.recent) >= recentPeers { // forget the one heard from least lately
		var old peer.ID
		var at time.Time
		for p, t := range st.recent {
			if old == "" || t.Before(at) {
				old, at = p, t
			}
		}
		delete(st.recent, old)
	}
	st.recent[pid] = time.Now()
}

// exchangePeers asks from for the peers it knows in sw's swarm and adds them
// as candidate sources; it returns how many were new.
func (n *Node) exchangePeers(ctx context.Context, sw *swarmDownload, from peer.ID) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, pexTimeout)
	defer cancel()
	s, err := n.host.NewStream(network.WithAllowLimitedConn(ctx, "share: peer exchange is small"), from, PEXProtocolID)
	if err != nil {
		return 0, err
	}
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	if _, err := s.Write([]byte(sw.id.String() + "\n")); err != nil {
		s.Reset()
		return 0, err
	}
	s.CloseWrite()
	b, err := io.ReadAll(io.LimitReader(s, pexMaxBytes+1))
	if err != nil {
		s.Reset()
		return 0, err
	}
	s.Close()
	peers, err := decodePEX(b)
	if err != nil {
		return 0, err
	}
	added := 0
	for _, ai := range peers {
		if ai.ID == n.host.ID() {
			continue
		}
		n.host.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.AddressTTL)
		if n.addSource(sw, ai.ID) {
			added++
		}
	}
	n.m.pexPeers.Add(float64(added))
	return added, nil
}

// exchangeWithSome asks a random connected source of sw for peers; it
// returns how many were new.
func (n *Node) exchangeWithSome(ctx context.Context, sw *swarmDownload) int {
	sw.mu.Lock()
	var connected []peer.ID
	for pid := range sw.added {
		if n.host.Network().Connectedness(pid) == network.Connected {
			connected = append(connected, pid)
		}
	}
	sw.mu.Unlock()
	if len(connected) == 0 {
		return 0
	}
	added, err := n.exchangePeers(ctx, sw, connected[rand.IntN(len(connected))])
	if err != nil && !errors.Is(err, context.Canceled) {
		n.log.Debug("peer exchange failed", "share", sw.id, "err", err)
	}
	return added
}
