// Package transfer owns the content model of share and moves its bytes: content
// IDs, manifests, chunks, verification, the on-disk store, the chunk Source
// interface, the download scheduler and rate limits. Both modes (the HTTP server
// and the libp2p peer) move bytes through this package; it imports neither.
//
// # Content model
//
// A share is one regular file or one directory tree. Its bytes are the
// concatenation of its files' contents, in the manifest's file order (sorted by
// path), cut into fixed-size chunks of ChunkSize bytes; only the last chunk may
// be shorter. Unless a size is asked for, ChunkSizeFor chooses it from the
// share's size: the largest power of two up to DefaultChunkSize (1 MiB) that
// gives at least SwarmChunks (128) chunks, not below SwarmChunkSize (256 KiB)
// unless that is needed for MinChunks (64), down to MinChunkSize. A chunk may span
// several files, as BitTorrent v1 pieces do, so that every chunk but the last has
// the same size whatever the files are; that keeps scheduling and rate limiting
// uniform. Empty files take no bytes of the stream.
//
// Every chunk has a Hash: the 32-byte BLAKE3 digest of its bytes.
//
// # Manifest
//
// The manifest is a JSON document (see Manifest.Encode for the exact form):
//
//	{"version":1,"name":"photos","type":"dir","mode":493,"chunk_size":1048576,
//	 "chunk_hash":"blake3","size":1234,
//	 "files":[{"path":"a/b.jpg","size":1234,"mode":420}],
//	 "dirs":[{"path":"a","mode":493}],
//	 "chunks":["<64 hex digits>", ...]}
//
// A single-file share has type "file" and exactly one file whose path equals the
// name. A directory share has type "dir"; its paths are relative to the
// directory, slash-separated, and each element is a valid Name. Files and dirs
// are sorted by path and unique; modes are permission bits only (no setuid,
// setgid or sticky bits); mtimes are not recorded, so that the same content
// gives the same ID on any machine. "mode" is the top directory's own mode,
// for a directory share only; a manifest without it (made before it was
// recorded) means 0755. A download applies every mode with group and other
// write bits cleared and owner rwx kept on directories, the top one too.
//
// # Names
//
// A share's name and every element of a path in it is a Name (ValidName):
// 1 to MaxNameLen bytes of UTF-8, not "." or "..", without '/', '\',
// control characters (C0, C1, DEL), line or paragraph separators (U+2028,
// U+2029), bidirectional controls (U+061C, U+200E, U+200F, U+202A-U+202E,
// U+2066-U+2069: they make a listing show other text than the name, as in
// Trojan Source, CVE-2021-42574), or invisible format characters (category
// Cf and the other default-ignorable code points, such as U+200B, U+00AD,
// U+2060, U+FEFF, U+3164). Kept, because scripts and emoji need them: ZERO
// WIDTH NON-JOINER and JOINER (U+200C, U+200D), variation selectors, and
// the tag characters of an emoji tag sequence (U+1F3F4, tags, U+E007F: the
// flags of Scotland or Wales). The refusal names the code point. The rule
// holds wherever a name comes from: an upload's URL, a peer's manifest, a
// directory being shared.
//
// Characters that look like a path separator or a dot (Unicode TR #39
// confusables of '/', '\' and '.': FULLWIDTH SOLIDUS U+FF0F, FULLWIDTH FULL
// STOP U+FF0E, DIVISION SLASH U+2215, FRACTION SLASH U+2044, ONE and TWO DOT
// LEADER U+2024-U+2025, FULLWIDTH REVERSE SOLIDUS U+FF3C and a few more) are
// allowed: they are ordinary characters to the file system, and names in
// CJK text hold them. Where a person reads a list (share ls, the HTML
// index), DisplayName shows them escaped, as \uFF0F, so "．．／etc" cannot
// pass for "../etc"; JSON and tar streams keep the real name.
//
// Names share derives from a user's name stay within MaxNameLen: a
// download's working directory is ".NAME.share-partial" beside the output,
// or for a name over 85 bytes its start, "~" and 16 hex digits of its
// BLAKE3 hash (PartialDir: at most 100 bytes, the same on every run, so a
// rerun resumes); a directory share's tar download is called "NAME.tar", NAME
// cut at a character boundary if need be (FitName); tar entries use pax
// headers for paths of any length.
//
// # Content ID
//
// A share's ID is the CIDv1 (multicodec "json", 0x0200) of the BLAKE3-256
// multihash of the manifest's exact bytes. Because the manifest lists every
// chunk hash, the ID authenticates the whole share: a manifest is accepted only
// if its bytes hash to the ID (VerifyManifest), and a chunk only if its bytes
// hash to the manifest's entry (Manifest.VerifyChunk). The encoder is
// deterministic, so the same tree with the same chunk size gives the same ID on
// any machine. The ID's string form is the CID's base32 form, which is also the
// key the peer mode announces on the DHT.
//
// # Verification
//
// Nothing is stored, served onward or reported done before it is verified:
// Share.PutChunk hashes every chunk before it writes it, and only chunks that
// passed are marked held, served, journaled or counted. A mismatch is a
// *ChunkError that names the chunk and the source.
//
// # Rot on disk
//
// Bytes stored can change after they were verified (a failing disk, a flipped
// bit, a person editing a file in the store). The rule: a share that is served
// verifies each chunk the first time this process reads it from disk after
// opening the share, and remembers that in a per-chunk bit in memory; chunks
// this process verified itself as it wrote them (a download, an upload, an
// import) count as verified. So serving a chunk costs one hash the first time
// only, and a whole-file download keeps sendfile (each unverified piece is
// hashed just before it is sent: FileReader). A chunk that fails is never
// served: it is marked missing in the have bitfield and the journal, the
// share becomes partial and damaged (Share.Damaged), the store logs and counts
// it (Store.DamagedChunks) and calls its OnDamaged hooks (a peer fetches the
// chunk again from its swarm). Rot that happens after a chunk was verified in
// this process is found by a scrub: Store.Verify on demand, Store.Scrub
// periodically at a bounded rate.
//
// # Limits
//
// Untrusted input is bounded before anything is allocated for it: a manifest
// is at most MaxManifestSize bytes and MaxFiles entries, a path MaxPathLen
// bytes, a name MaxNameLen bytes, a share MaxShareSize bytes, a chunk between
// MinChunkSize and MaxChunkSize bytes. A download holds at most MaxInFlight
// chunk buffers, so its memory is a few chunks whatever the share's size.
//
// # Downloads
//
// A Download fetches the chunks it lacks from its sources (see Source). The
// choice of which chunk to ask of which source, and of which sources to
// trade with, is the picker's (picker.go): a pure state machine, tested with
// tables, that the run loop in fetch.go feeds with what happens. A download
// trades with at most MaxActive sources at once (its active set, refreshed
// every 2 s by rate, with one random newcomer: BitTorrent's choking seen
// from the downloader), asks each for its rarest chunks first, keeps its
// bandwidth-delay product plus DepthQueueTime of its rate in flight to it,
// and re-requests the last chunks from a second source (endgame). From a
// seed it takes only chunks no partial source of its active set offers,
// counting a partial source's offer only while that source delivers: not
// after the caller said it left (SourceGone), nor after PeerGrace (or twice
// its quickest chunk lately) of waiting on it (choked, or requests out)
// with nothing from it; so a download never waits on a source that is gone
// while a seed could send. With no partial source that delivers, it asks a
// seed for any chunk, offered or not (1. below).
//
// # Offers: the contract between a source, the wire and a downloader
//
// A source's answer to "which chunks do you have" is an offer. The peer mode
// (package node: seeding.go, choke.go), the chunk protocol (wire.go) and
// the downloader (fetch.go, picker.go) agree on the following:
//
//  1. An offer is a hint. A source may offer fewer chunks than it holds (a
//     seed offers the chunks it has sent least, so that each leaves it once
//     before any leaves it twice: super-seeding), and it never refuses a
//     request for a chunk it holds that it did not offer. Whether it holds
//     every chunk is told apart from the offer (the wire's Complete status;
//     Seeder), so a downloader knows a seed that offers little is not slow.
//     A seed that offers every chunk is not rationing its upload: a
//     downloader may ask it for any, also those peers offer (pickFree).
//  2. A long poll (HaveWaiter.WaitHave; on the wire a have request with a
//     wait) carries the Digest of the offer the asker knows. The source
//     answers it with its offer then current: a partial holder as soon as
//     that differs from the one the asker knows (BitTorrent's HAVE); a
//     complete holder, and any source after a busy answer (3.), only when
//     it has room to send the asker a chunk; or when the wait the asker
//     asked for (HaveWaitTime) or the longest it grants (MaxHaveWait) has
//     passed.
//  3. A source with no room for a chunk request answers ErrBusy: the asker
//     is choked. It sends that source no chunk request until the source's
//     next have answer, and asks for it with a long poll, which the source
//     answers, first come first served, as room frees, keeping the room
//     for the asker's next request for a moment (node's grantTTL). A source
//     that cannot long-poll is asked again after Backoff(1).
//  4. A downloader keeps one long poll parked at each source of its active
//     set (transfer's picker.go) that offers less than everything, never
//     polling on a timer. So a partial holder's answers cost O(1) messages
//     per chunk it gains (one per peer that has it in its active set,
//     about MaxActive whatever the swarm's size), and a seed's are paced by
//     its upload: one waiting asker is answered per freed room.
//
// The timing constants of both sides must agree: a poll's wait
// (HaveWaitTime) within what a source grants (MaxHaveWait), both well
// within a stream's idle limit; room kept for an unchoked asker far shorter
// than a poll's wait; a downloader's DepthQueueTime within what a source
// queues (two upload slots of an eighth of a second each). node's
// TestTimingConstantsAgree checks them.
package transfer
