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
package node
