package transfer

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"path/filepath"
	"testing"

	"github.com/zeebo/blake3"
)

// BenchmarkHash compares the chunk hash with SHA-256 on 1 MiB chunks, one
// core: the figure behind choosing BLAKE3 (see Hash).
func BenchmarkHash(b *testing.B) {
	data := randomBytes(1, DefaultChunkSize)
	b.Run("blake3", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			blake3.Sum256(data)
		}
	})
	b.Run("sha256", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			sha256.Sum256(data)
		}
	})
}

// BenchmarkStorePutChunk measures verified chunk writes into a partial share
// (hash, pwrite, journal), the receiving side of every download.
func BenchmarkStorePutChunk(b *testing.B) {
	const chunks = 256
	content := randomBytes(7, chunks*DefaultChunkSize)
	m, err := NewManifest("f", false, DefaultChunkSize, []File{{Path: "f", Size: int64(len(content))}}, nil, hashAll(content))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(DefaultChunkSize)
	dir := b.TempDir()
	var sh *Share
	i, shares := chunks, 0
	for b.Loop() {
		if i == chunks {
			b.StopTimer()
			if sh != nil {
				sh.Close()
			}
			shares++
			if sh, err = CreateShare(filepath.Join(dir, fmt.Sprint(shares)), m); err != nil {
				b.Fatal(err)
			}
			i = 0
			b.StartTimer()
		}
		if err := sh.PutChunk(i, content[i*DefaultChunkSize:(i+1)*DefaultChunkSize]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	sh.Close()
}

// BenchmarkImport measures streaming an upload into the store (write + hash).
func BenchmarkImport(b *testing.B) {
	st, err := OpenStore(b.TempDir(), StoreOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	const size = 64 << 20
	b.SetBytes(size)
	for k := 0; b.Loop(); k++ {
		r := &countingZeroes{left: size, salt: byte(k)}
		sh, err := st.Import(context.Background(), "f", r, ImportOptions{})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		st.Remove(sh.ID())
		b.StartTimer()
	}
}

// countingZeroes yields left zero bytes, the first one salt, then io.EOF.
type countingZeroes struct {
	left int64
	salt byte
}

func (c *countingZeroes) Read(p []byte) (int, error) {
	if c.left == 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), c.left)
	clear(p[:n])
	p[0] = c.salt
	c.left -= n
	return int(n), nil
}

func hashAll(b []byte) []Hash {
	var hs []Hash
	for off := 0; off < len(b); off += DefaultChunkSize {
		hs = append(hs, HashChunk(b[off:min(off+DefaultChunkSize, len(b))]))
	}
	return hs
}
