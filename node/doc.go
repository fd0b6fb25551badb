// Package node owns share's peer mode: the libp2p host, the Kademlia DHT
// through which peers find who holds a share, and the chunk protocol
// (/share/chunk/1.0.0) over libp2p streams. It moves bytes with package
// transfer exactly as the server mode does — the same store, verification,
// downloader and wire requests — and adds only discovery and the transport.
//
// A Node is also what the peer's local HTTP API serves: it has the methods
// of server.Backend (List, Get, Create, Import, Remove) plus Fetch, which
// gets a share it does not hold from the swarm, and Status. cmd/share
// composes the two; node never imports server.
//
// # Swarm policy
//
// A peer's cost must not grow with the size of its swarm: per chunk it
// receives or sends, a peer does a bounded amount of work, however many
// peers share the file (a flash crowd of 128 peers on one 2-core machine is
// what share bench measures). The policy that keeps it so, in BitTorrent's
// terms (Cohen, "Incentives Build Robustness in BitTorrent", 2003):
//
//   - Active set (the downloader's side of choking; transfer's picker.go). A
//     download knows up to wantSources (32) peers of its swarm but trades
//     with at most transfer.DefaultMaxActive (8) at once; the others are
//     candidates and cost nothing. Every 2 s (activeRefresh) the active peer
//     that delivered least gives way to a random candidate: the optimistic
//     slot, through which better peers are found, and through which a peer
//     that joined late, known to all and active in no one's set, gets asked. A peer that fails twice in a row gives
//     way at once; a super-seeding seed is kept (it is slow by design).
//   - Choking (the uploader's side; choke.go). A peer's upload holds
//     2 × uploadSlotBytes (an eighth of a second of its cap each): one chunk
//     being sent, one queued. A peer with no cap of share's own (its link is
//     the cap) measures the rate its uplink delivers, and sends at once
//     slotTime (125 ms) of that rate plus one chunk (uploads.weight): one
//     chunk at a time on a DSL uplink, many on a LAN. That measure counts
//     bytes handed to the connection, not bytes on the wire: a send ends
//     once its chunk is in the multiplexer's and the kernel's send buffers,
//     a quarter of a second before it left a 10 Mbit/s uplink, so the next
//     chunk, and this peer's requests and answers on that connection, wait
//     behind it (a first byte 220 ms after its send began, traced on the
//     dsl profile). A cap a little below the line (--upload-limit; share
//     bench --pace) keeps those buffers short: 1.29-1.30x the bound at
//     N = 16 on dsl instead of 1.42x (BENCHMARKS.md, "Pacing"). A request beyond
//     that is answered "busy": the asker is choked, and waits with a long
//     poll, which the peer answers when it has room, first come first
//     served, keeping the room for the asker's request for grantTTL
//     (500 ms). No peer retries on a timer.
//   - Haves (transfer/doc.go, "Offers"). A download keeps a long poll
//     parked at every peer of its active set: BitTorrent's HAVE messages to
//     the connected peers. A partial holder answers them as soon as it gains
//     a chunk, so rarest-first works on what the active set holds now; that
//     costs O(1) per chunk gained, since a peer is in about MaxActive active
//     sets whatever the swarm's size. A seed answers them, and any poll
//     after a busy answer, one per freed upload room: its offer is an
//     unchoke.
//   - Super-seeding (seeding.go, BEP 16). A complete holder whose upload
//     is full (it answered a request busy in the last seedRoomAfter, 1 s)
//     offers the chunks it has sent least in the last seedRecent (20 s)
//     and nobody is fetching from it: each chunk leaves it once before any
//     leaves twice, and the peers trade the copies. A downloader, for its
//     part, asks a super-seeding seed only for chunks no partial peer of
//     its active set offers (transfer's pickFree), so that second copies
//     come from peers and the seed's upload goes to the chunks the swarm
//     lacks; a peer whose chunks take transfer's slowPeer (4) times as long
//     as the seed's does not count. A seed whose upload has room offers
//     every chunk, and is asked for any: on unequal links (a fibre seed,
//     DSL peers) its upload would otherwise stand idle while downloaders
//     wait on peers with a fraction of it. A peer's offer
//     counts only while it delivers: not once its last connection closed
//     (swarm.go's peerGone, from the network's notifications, calls
//     transfer.Download.SourceGone), nor once it kept the download waiting
//     transfer.PeerGrace (1 s, or twice its quickest chunk lately) without
//     a chunk or an answer: a peer that left without a word, or lingers in
//     a graceful shutdown without serving, must not stall a download the
//     seed could finish. With no peer that delivers, a seed is asked for
//     any chunk, not only those it offers (it does not offer chunks it sent
//     in the last seedRecent, to peers that may be gone). In the endgame a
//     seed races the last requests.
//   - Request depth (transfer's srcState.depth): a source's
//     bandwidth-delay product plus transfer.DepthQueueTime (250 ms) of its
//     rate, at least 2 and at most DefaultPerSource requests.
//   - Chunk size (transfer.ChunkSizeFor): at least 128 chunks per share as
//     far as 256 KiB chunks allow, and 64 as far as 16 KiB chunks allow, so
//     that the store-and-forward hops of a chunk through the swarm stay
//     short.
//
// Discovery must not steal the CPU of running transfers either: a download
// looks up providers with a bounded lookup (wantSources at most), skips
// lookups while it knows enough peers and backs off when they find nothing
// new (swarm.go); the DHT's routing table is refreshed every RefreshInterval
// (10 min), staggered, instead of by every peer at start (discovery.go);
// provides run on provideWorkers (4) goroutines off the request path.
//
// # Limits
//
// One peer must not use up what all peers share (limits.go): a peer's
// inbound streams are capped at peerStreamsInbound (128 by default: two
// per chunk request it may have served at once, plus otherStreamsInbound),
// which does not grow with memory; the transient pool (streams not yet
// negotiated) and the system pool hold at least minPeersToExhaust (16) and
// twice that many peers' caps. A stream not negotiated within
// negotiationTimeout (5 s) is reset. The chunk protocol has its own
// per-peer and total stream and memory limits; serving a chunk reserves its
// send buffer on the stream's scope, receiving one its payload, and a
// refused reservation answers busy or drops the chunk. Refusals are counted
// in share_peer_streams_refused_total{reason="limit"|"negotiation"|"memory"|"busy"}
// and logged at most once a minute per peer. Flood (flood.go) is the hostile
// member share bench's security scenario runs against them.
package node
