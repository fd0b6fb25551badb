package transfer

import (
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"math/bits"
	"sync"
	"time"
	"unsafe"

	"github.com/zeebo/blake3"
)

// Chunk sizes, in bytes.
const (
	DefaultChunkSize = 1 << 20  // 1 MiB, the largest default: ~1000 chunks per GiB keeps manifests small and requests cheap
	MinChunkSize     = 16 << 10 // below this, per-request overhead dominates
	MaxChunkSize     = 16 << 20 // bounds every chunk buffer a peer can make us allocate
	// MinChunks is how many chunks a share is cut into at least by default
	// (see ChunkSizeFor), as far as MinChunkSize allows.
	MinChunks = 64
	// SwarmChunks is how many chunks a share is cut into by default as far
	// as SwarmChunkSize allows (see ChunkSizeFor).
	SwarmChunks    = 128
	SwarmChunkSize = 256 << 10
)

// ChunkSizeFor returns the chunk size of a share of size bytes when none is
// asked for: the largest power of two, at most DefaultChunkSize, that cuts
// it into at least SwarmChunks chunks, but not below SwarmChunkSize; smaller
// still, down to MinChunkSize, only as far as it takes to cut it into
// MinChunks. So 1 MiB from 128 MiB up, 512 KiB from 64 MiB, 256 KiB from
// 16 MiB, 64 chunks below 16 MiB. It depends on the size alone, so that
// the same content gets the same ID on any machine running the same rule.
// (A share stored with an explicit chunk size gets another ID. The rule was
// 64 chunks as far as MinChunkSize allows until 2026-12-01: shares of 32 MiB
// to 128 MiB cut by it have other IDs than the same files cut now.)
//
// Why smaller chunks for smaller shares: a peer can pass a chunk on only
// once it has arrived whole and been verified, so each hop of a chunk
// through a swarm takes one chunk's sending time. With M chunks sent to N
// peers of equal upload u the best schedule takes about M + log2 N chunk
// times (Mundinger, Weber and Weiss, "Optimal scheduling of peer-to-peer
// file dissemination", J. Scheduling 11, 2008), against M for the bound
// F/u: 16 one-MiB chunks to 128 peers need at least 1.44 times the bound,
// 64 chunks 1.11 times. A peer keeps one chunk queued behind the one it
// sends (node/choke.go), so in practice a hop takes two chunk times: 64
// one-MiB chunks to 16 peers on loopback, every upload capped at 8 MiB/s,
// took 1.20-1.22x the bound (medians of 3, share bench's default), 128 of
// 512 KiB 1.13x and 256 of 256 KiB 1.13x, at 7 % and 20 % more CPU per GiB
// (2026-12-01). Below 256 KiB a chunk's sending time on a slow uplink nears
// the round trip and per-request costs win: 128 KiB chunks of 16 MiB among
// 16 dsl peers (10 Mbit/s up, 30 ms) were no faster than 256 KiB (1.48x
// against 1.38-1.46x). BitTorrent tools choose piece sizes from the file
// size for the same reason (mktorrent, libtorrent). Shares of 128 MiB and
// up keep DefaultChunkSize, so large transfers make few requests.
func ChunkSizeFor(size int64) int64 {
	cs := int64(DefaultChunkSize)
	for cs > SwarmChunkSize && size/cs < SwarmChunks {
		cs /= 2
	}
	for cs > MinChunkSize && size/cs < MinChunks {
		cs /= 2
	}
	return cs
}

// AlignedBuffer returns an n-byte buffer aligned for direct I/O, so that
// Share.PutChunk can write it without a copy through the page cache.
func AlignedBuffer(n int) []byte {
	b := make([]byte, n+directAlign)
	off := (directAlign - int(uintptr(unsafe.Pointer(unsafe.SliceData(b)))%directAlign)) % directAlign
	return b[off : off+n : off+n]
}

// chunkBuffers keeps the chunk buffers downloads are done with for the next
// ones, instead of leaving them to the garbage collector: memory a process
// keeps costs nothing to reuse, while memory it frees and allocates again
// is returned to the system by the scavenger and touched anew, which on the
// virtual machines this project is measured on costs ~3 ms per MiB (the
// host maps every page again). A download of 1 GiB used to take ~40 MiB of
// fresh buffers this way (BenchmarkOneToOne, perf stat's page faults).
var chunkBuffers = bufferPool{max: maxPooledBytes, idle: pooledIdle}

// Buffer pool bounds: at most maxPooledBytes kept, all of them dropped after
// pooledIdle without use, so an idle peer does not hold them.
const (
	maxPooledBytes = 32 << 20
	pooledIdle     = 10 * time.Second
)

// bufferPool is a bounded free list of aligned buffers of any size. It is
// safe for concurrent use.
type bufferPool struct {
	max  int
	idle time.Duration

	mu    sync.Mutex
	free  [][]byte
	bytes int
	drop  *time.Timer // empties the pool after idle; nil while empty
}

// get returns an aligned buffer of n bytes (see AlignedBuffer), a kept one
// if it has one of that size.
func (p *bufferPool) get(n int) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k := len(p.free) - 1; k >= 0; k-- {
		if b := p.free[k]; len(b) == n {
			last := len(p.free) - 1
			p.free[k], p.free[last] = p.free[last], nil
			p.free = p.free[:last]
			p.bytes -= n
			return b
		}
	}
	return AlignedBuffer(n)
}

// put keeps b for a later get, unless the pool is full. b must come from
// get (or AlignedBuffer) and must not be used after.
func (p *bufferPool) put(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bytes+len(b) > p.max {
		return
	}
	p.free = append(p.free, b)
	p.bytes += len(b)
	if p.drop == nil {
		p.drop = time.AfterFunc(p.idle, p.empty)
	} else {
		p.drop.Reset(p.idle)
	}
}

// empty drops every kept buffer.
func (p *bufferPool) empty() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.free)
	p.free, p.bytes, p.drop = p.free[:0], 0, nil
}

// hashers are reused BLAKE3 hashers: each allocates ~8 KiB of state, once
// per chunk otherwise.
var hashers = sync.Pool{New: func() any { return blake3.New() }}

// Hash is the BLAKE3-256 digest of a chunk.
//
// Why BLAKE3: every byte a share moves is hashed once by the receiver, so the
// hash caps throughput per core. Measured on this project's machines
// (BenchmarkHash, one core, 1 MiB writes): on a Xeon without SHA extensions
// SHA-256 does ~330 MB/s per core, below a libp2p TCP+TLS stream (~750 MB/s
// on the same machine) and far below loopback HTTP (~1 GB/s), while
// zeebo/blake3 does 2.2-2.9 GB/s. On CPUs with SHA-NI, SHA-256 gets closer but BLAKE3 (AVX2/
// AVX-512) is still faster, and it does not depend on an optional CPU feature.
type Hash [32]byte

// HashChunk returns the hash of one chunk's bytes.
func HashChunk(b []byte) Hash { return blake3.Sum256(b) }

// String returns the hash in lower-case hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// Short returns the first 12 hex digits, for messages.
func (h Hash) Short() string { return hex.EncodeToString(h[:6]) }

// ParseHash parses 64 hex digits.
func ParseHash(s string) (Hash, error) {
	var h Hash
	if len(s) != 2*len(h) {
		return h, fmt.Errorf("hash %q: want %d hex digits", truncate(s, 80), 2*len(h))
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("hash %q: %v", truncate(s, 80), err)
	}
	return h, nil
}

// Bitfield is a set of chunk indexes in [0, Len()), encoded as in BitTorrent:
// bit i is the (7 - i%8)th bit of byte i/8, and spare bits are zero. The zero
// value is an empty set of length 0. A Bitfield is not safe for concurrent
// mutation; its owner locks.
type Bitfield struct {
	n int
	b []byte
}

// NewBitfield returns an empty set of n chunks.
func NewBitfield(n int) Bitfield { return Bitfield{n: n, b: make([]byte, (n+7)/8)} }

// FullBitfield returns the set of all n chunks.
func FullBitfield(n int) Bitfield {
	bf := NewBitfield(n)
	for i := range bf.b {
		bf.b[i] = 0xff
	}
	bf.clearSpare()
	return bf
}

// ParseBitfield decodes the wire form of an n-chunk set. It refuses a wrong
// length and set spare bits.
func ParseBitfield(n int, b []byte) (Bitfield, error) {
	if n < 0 || len(b) != (n+7)/8 {
		return Bitfield{}, fmt.Errorf("bitfield: %d bytes for %d chunks, want %d", len(b), n, (n+7)/8)
	}
	bf := Bitfield{n: n, b: append([]byte(nil), b...)}
	if n%8 != 0 && bf.b[len(bf.b)-1]&byte(0xff>>(n%8)) != 0 {
		return Bitfield{}, fmt.Errorf("bitfield: spare bits set")
	}
	return bf, nil
}

func (bf *Bitfield) clearSpare() {
	if bf.n%8 != 0 {
		bf.b[len(bf.b)-1] &^= byte(0xff >> (bf.n % 8))
	}
}

// Len returns the number of chunks the set ranges over.
func (bf Bitfield) Len() int { return bf.n }

// Has reports whether i is in the set; out-of-range indexes are not.
func (bf Bitfield) Has(i int) bool {
	return i >= 0 && i < bf.n && bf.b[i/8]&(0x80>>(i%8)) != 0
}

// Set adds i; it panics if i is out of range.
func (bf Bitfield) Set(i int) { bf.b[i/8] |= 0x80 >> (i % 8) }

// Clear removes i; it panics if i is out of range.
func (bf Bitfield) Clear(i int) { bf.b[i/8] &^= 0x80 >> (i % 8) }

// Count returns the number of chunks in the set.
func (bf Bitfield) Count() int {
	c := 0
	for _, x := range bf.b {
		c += bits.OnesCount8(x)
	}
	return c
}

// Full reports whether every chunk is in the set.
func (bf Bitfield) Full() bool { return bf.Count() == bf.n }

// Bytes returns the wire form; the caller must not modify it.
func (bf Bitfield) Bytes() []byte { return bf.b }

// Digest returns a 32-bit digest of the set (CRC-32 of its wire form): what
// a long poll sends to say which set it already knows.
func (bf Bitfield) Digest() uint32 { return crc32.ChecksumIEEE(bf.b) }

// Clone returns an independent copy.
func (bf Bitfield) Clone() Bitfield { return Bitfield{n: bf.n, b: append([]byte(nil), bf.b...)} }
