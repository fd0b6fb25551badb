package server

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/sharefiles/share/transfer"
	"github.com/sharefiles/share/transfer/transfertest"
)

// TestSendSlots: with every send slot taken, a chunk request waits for one
// and says how long in Server-Timing; after slotWait it is sent anyway; a
// client that gives up while it waits leaves no waiter behind. Whole-file
// downloads never wait for a slot.
func TestSendSlots(t *testing.T) {
	ts := startServer(t, nil, func(o *Options) { o.SendSlots = 1 })
	ts.Server.slotWait = 2 * time.Second
	c := ts.client(t, testToken)
	content := transfertest.Bytes(9, 3*transfer.MinChunkSize)
	info, err := c.Upload(context.Background(), "f", bytes.NewReader(content), int64(len(content)))
	if err != nil {
		t.Fatal(err)
	}
	chunkURL := ts.URL + "/v1/shares/" + info.ID.String() + "/chunks/0"
	get := func(ctx context.Context) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, "GET", chunkURL, nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		return http.DefaultClient.Do(req)
	}

	// A free slot: no wait, no Server-Timing.
	resp := request(t, "GET", chunkURL, testToken, nil)
	if resp.StatusCode != 200 || resp.Header.Get("Server-Timing") != "" {
		t.Fatalf("free slot: %s, Server-Timing %q", resp.Status, resp.Header.Get("Server-Timing"))
	}
	readBody(t, resp)

	// The only slot taken: the request waits until it is given back.
	ts.Server.slots <- struct{}{}
	type answer struct {
		resp *http.Response
		err  error
		at   time.Time
	}
	got := make(chan answer, 1)
	start := time.Now()
	go func() {
		r, err := get(context.Background())
		got <- answer{r, err, time.Now()}
	}()
	time.Sleep(300 * time.Millisecond)
	<-ts.Server.slots
	a := <-got
	if a.err != nil {
		t.Fatal(a.err)
	}
	body, _ := io.ReadAll(a.resp.Body)
	a.resp.Body.Close()
	if !bytes.Equal(body, content[:transfer.MinChunkSize]) {
		t.Fatal("chunk 0 differs")
	}
	if d := slotWait(a.resp.Header.Values("Server-Timing")); d < 250*time.Millisecond || d > a.at.Sub(start) {
		t.Fatalf("waited %v, Server-Timing %q says %v", a.at.Sub(start), a.resp.Header.Get("Server-Timing"), d)
	}

	// The slot never given back: after slotWait the chunk goes out anyway.
	ts.Server.slots <- struct{}{}
	start = time.Now()
	r, err := get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, r)
	if waited := time.Since(start); waited < ts.Server.slotWait || r.StatusCode != 200 {
		t.Fatalf("sent after %v with %s; want 200 after slotWait %v", waited, r.Status, ts.Server.slotWait)
	}
	if d := slotWait(r.Header.Values("Server-Timing")); d < ts.Server.slotWait {
		t.Fatalf("Server-Timing %q after waiting slotWait", r.Header.Get("Server-Timing"))
	}

	// Whole-file downloads do not take slots.
	resp = request(t, "GET", ts.URL+"/v1/shares/"+info.ID.String(), testToken, nil)
	if b := readBody(t, resp); !bytes.Equal(b, content) || resp.Header.Get("Server-Timing") != "" {
		t.Fatalf("content while slots are taken: %d bytes, Server-Timing %q", len(b), resp.Header.Get("Server-Timing"))
	}

	// A client that gives up while it waits.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := get(ctx); err == nil {
		t.Fatal("request answered while every slot was taken")
	}
	waiting := func() float64 {
		mfs, _ := ts.Server.reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() != "share_active_transfers" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetValue() == "wait" {
						return m.GetGauge().GetValue()
					}
				}
			}
		}
		return 0
	}
	for deadline := time.Now().Add(5 * time.Second); waiting() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%v chunk requests still waiting after their client left", waiting())
		}
	}
	<-ts.Server.slots
}

// TestSlotHeldTooLong: a response holding its slot longer than slotWait
// (a client reading slowly) gives the slot back for the next request.
func TestSlotHeldTooLong(t *testing.T) {
	ts := startServer(t, nil, func(o *Options) { o.SendSlots = 1 })
	s := ts.Server
	s.slotHold = 100 * time.Millisecond
	release, waited, err := s.sendSlot(context.Background())
	if err != nil || waited != 0 {
		t.Fatalf("first slot: waited %v, %v", waited, err)
	}
	start := time.Now()
	release2, waited, err := s.sendSlot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(s.slots) != 1 || waited < 50*time.Millisecond || time.Since(start) > 5*time.Second {
		t.Fatalf("second request waited %v, %d slots taken", waited, len(s.slots))
	}
	release()
	release() // twice: a no-op
	release2()
	if len(s.slots) != 0 {
		t.Fatalf("%d slots still taken", len(s.slots))
	}
}

func TestSlotWaitHeader(t *testing.T) {
	for _, tc := range []struct {
		values []string
		want   time.Duration
	}{
		{nil, 0},
		{[]string{"slot;dur=12.5"}, 12500 * time.Microsecond},
		{[]string{`db;dur=3, slot;desc="send slot";dur=250`}, 250 * time.Millisecond},
		{[]string{"cache;dur=1", " slot ; dur = 7 "}, 7 * time.Millisecond},
		{[]string{`slot;dur="40"`}, 40 * time.Millisecond},
		{[]string{"slot"}, 0},
		{[]string{"slot;dur=-5"}, 0},
		{[]string{"slot;dur=NaN"}, 0},
		{[]string{"slot;dur=1e300"}, 0},
		{[]string{"slots;dur=5"}, 0},
	} {
		if got := slotWait(tc.values); got != tc.want {
			t.Errorf("slotWait(%q) = %v, want %v", tc.values, got, tc.want)
		}
	}
}

func FuzzSlotWait(f *testing.F) {
	for _, s := range []string{"slot;dur=12.5", `a;dur=1, slot;desc="x";dur=3`, "slot;dur=" + strconv.Itoa(1<<30)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if d := slotWait([]string{v}); d < 0 || d > time.Hour {
			t.Fatalf("slotWait(%q) = %v", v, d)
		}
	})
}
