package node

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sharefiles/share/transfer"
	"github.com/sharefiles/share/transfer/transfertest"
)

// traceBuffer collects JSON trace records written from many goroutines.
type traceBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (t *traceBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.b.Write(p)
}

// count returns how many records of each message name peer (the "peer" or
// "source" attribute), by chunk.
func (t *traceBuffer) count(tb testing.TB, peer string) map[string]map[int]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string]map[int]int{}
	for _, line := range strings.Split(strings.TrimSpace(t.b.String()), "\n") {
		var r struct {
			Msg    string `json:"msg"`
			Chunk  int    `json:"chunk"`
			Peer   string `json:"peer"`
			Source string `json:"source"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			tb.Fatalf("trace record %q: %v", line, err)
		}
		if r.Peer != peer && !strings.Contains(r.Source, peer) {
			continue
		}
		if out[r.Msg] == nil {
			out[r.Msg] = map[int]int{}
		}
		out[r.Msg][r.Chunk]++
	}
	return out
}

// TestTrace: a traced seed records every chunk it sends to a traced peer,
// and the peer records every chunk it asked the seed for and kept.
func TestTrace(t *testing.T) {
	const chunk = transfer.MinChunkSize
	content := transfertest.Bytes(7, 20*chunk)
	var seedTrace, peerTrace traceBuffer
	seed := testNode(t, "", func(o *Options) { o.Trace = slog.New(slog.NewJSONHandler(&seedTrace, nil)) })
	p := testNode(t, "", func(o *Options) { o.Trace = slog.New(slog.NewJSONHandler(&peerTrace, nil)) }, seed)
	sh := importShare(t, seed, "traced.bin", content, chunk)
	fetch(t, p, sh.ID())
	sameContent(t, waitComplete(t, p, sh.ID(), time.Minute), content)
	// The seed records a send once the peer read the chunk to its end:
	// the last may come a moment after the download finished.
	deadline := time.Now().Add(10 * time.Second)
	for {
		sent := seedTrace.count(t, p.ID().String())["serve sent"]
		if len(sent) == 20 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	sent := seedTrace.count(t, p.ID().String())
	got := peerTrace.count(t, seed.ID().String())
	for i := range 20 {
		if sent["serve send"][i] == 0 || sent["serve sent"][i] == 0 {
			t.Errorf("chunk %d: the seed's trace has %d sends and %d sent", i, sent["serve send"][i], sent["serve sent"][i])
		}
		if got["request"][i] == 0 || got["done"][i] == 0 {
			t.Errorf("chunk %d: the peer's trace has %d requests and %d done of the seed", i, got["request"][i], got["done"][i])
		}
	}
	if n := seedTrace.count(t, "")["peer"]; len(n) != 1 {
		t.Errorf("the seed's trace does not start with its peer ID: %v", n)
	}
}
