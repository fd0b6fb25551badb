package netem

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"
	"time"
)

// gsoTestFrame builds a virtio-net header and an IPv4 frame of proto (TCP
// or UDP) with payload, as a GSO frame of gsoSize-byte packets (0: none).
// TCP carries flags and the timestamp option (a 32-byte header).
func gsoTestFrame(proto byte, payload []byte, gsoSize int, tcpFlags byte) []byte {
	l4len := 8
	gsoType := byte(gsoUDPL4)
	if proto == protoTCP {
		l4len, gsoType = 32, gsoTCPv4
	}
	if gsoSize == 0 {
		gsoType = gsoNone
	}
	b := make([]byte, vnetHdrLen+ethHdrLen+20+l4len+len(payload))
	b[0] = vnetNeedsCsum
	b[1] = gsoType
	binary.NativeEndian.PutUint16(b[2:], uint16(ethHdrLen+20+l4len))
	binary.NativeEndian.PutUint16(b[4:], uint16(gsoSize))
	eth := b[vnetHdrLen:]
	copy(eth[0:6], []byte{2, 0, 0, 0, 0, 2})
	copy(eth[6:12], []byte{2, 0, 0, 0, 0, 1})
	eth[12], eth[13] = 0x08, 0x00
	ip := eth[ethHdrLen:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+l4len+len(payload)))
	binary.BigEndian.PutUint16(ip[4:], 0x1234)
	ip[6] = 0x40 // DF
	ip[8], ip[9] = 64, proto
	copy(ip[12:16], []byte{10, 77, 0, 1})
	copy(ip[16:20], []byte{10, 77, 0, 2})
	l4 := ip[20:]
	binary.BigEndian.PutUint16(l4[0:], 40000)
	binary.BigEndian.PutUint16(l4[2:], 5201)
	if proto == protoTCP {
		binary.BigEndian.PutUint32(l4[4:], 0xfffff000) // wraps within the frame
		binary.BigEndian.PutUint32(l4[8:], 77)
		l4[12] = 8 << 4
		l4[13] = tcpFlags
		binary.BigEndian.PutUint16(l4[14:], 502)
		l4[20], l4[21], l4[22] = 1, 1, 8 // NOP NOP TS
		l4[23] = 10
	} else {
		binary.BigEndian.PutUint16(l4[4:], uint16(8+len(payload)))
	}
	copy(l4[l4len:], payload)
	return b
}

// checksumOK reports whether b (with its checksum field) sums to 0xffff
// from s.
func checksumOK(b []byte, s uint32) bool { return fold(sum(b, s)) == 0xffff }

func TestPayloadFraction(t *testing.T) {
	if got, want := PayloadFraction, 1448.0/1514; math.Abs(got-want) > 1e-12 {
		t.Errorf("PayloadFraction = %v, want 1448/1514 = %v", got, want)
	}
}

func TestSegment(t *testing.T) {
	payload := make([]byte, 3*1448+100) // 4 packets, the last short
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	const flags = 0x80 | 0x10 | 0x08 | 0x01 // CWR ACK PSH FIN
	tests := []struct {
		name  string
		proto byte
		keep  []int
	}{
		{"tcp all", protoTCP, []int{0, 1, 2, 3}},
		{"tcp first lost", protoTCP, []int{1, 2, 3}},
		{"tcp last lost", protoTCP, []int{0, 1, 2}},
		{"tcp one left", protoTCP, []int{2}},
		{"udp middle lost", protoUDP, []int{0, 2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := gsoTestFrame(tt.proto, payload, 1448, flags)
			if n := packetsIn(in); n != 4 {
				t.Fatalf("packetsIn = %d, want 4", n)
			}
			keep := map[int]bool{}
			for _, j := range tt.keep {
				keep[j] = true
			}
			out := segment(nil, in, func(j int) bool { return keep[j] }, func(n int) []byte { return make([]byte, 0, n) })
			if len(out) != len(tt.keep) {
				t.Fatalf("%d packets out, want %d", len(out), len(tt.keep))
			}
			hdrLen := ethHdrLen + 20 + 32
			if tt.proto == protoUDP {
				hdrLen = ethHdrLen + 20 + 8
			}
			for k, b := range out {
				j := tt.keep[k]
				if !bytes.Equal(b[:vnetHdrLen], make([]byte, vnetHdrLen)) {
					t.Errorf("packet %d: virtio-net header %x, want zeros (no GSO, checksum complete)", j, b[:vnetHdrLen])
				}
				eth := b[vnetHdrLen:]
				lo, hi := j*1448, min((j+1)*1448, len(payload))
				if !bytes.Equal(eth[hdrLen:], payload[lo:hi]) {
					t.Errorf("packet %d: payload differs", j)
				}
				ip := eth[ethHdrLen : ethHdrLen+20]
				if got := int(binary.BigEndian.Uint16(ip[2:])); got != len(eth)-ethHdrLen {
					t.Errorf("packet %d: IP total length %d, want %d", j, got, len(eth)-ethHdrLen)
				}
				if got := binary.BigEndian.Uint16(ip[4:]); got != 0x1234+uint16(j) {
					t.Errorf("packet %d: IP ID %#x, want %#x", j, got, 0x1234+j)
				}
				if !checksumOK(ip, 0) {
					t.Errorf("packet %d: bad IP header checksum", j)
				}
				l4 := eth[ethHdrLen+20:]
				if !checksumOK(l4, pseudo(ip, tt.proto, len(l4))) {
					t.Errorf("packet %d: bad L4 checksum", j)
				}
				if tt.proto == protoUDP {
					if got := int(binary.BigEndian.Uint16(l4[4:])); got != len(l4) {
						t.Errorf("packet %d: UDP length %d, want %d", j, got, len(l4))
					}
					continue
				}
				if got, want := binary.BigEndian.Uint32(l4[4:]), uint32(0xfffff000)+uint32(lo); got != want {
					t.Errorf("packet %d: seq %#x, want %#x", j, got, want)
				}
				want := byte(0x10)
				if j == 0 {
					want |= 0x80
				}
				if j == 3 {
					want |= 0x08 | 0x01
				}
				if l4[13] != want {
					t.Errorf("packet %d: flags %#x, want %#x", j, l4[13], want)
				}
			}
		})
	}
}

// TestParseFrameRejects: what is not a GSO frame of IPv4 TCP or UDP is one
// packet, never cut.
func TestParseFrameRejects(t *testing.T) {
	payload := make([]byte, 3000)
	mutate := []struct {
		name string
		f    func(b []byte)
	}{
		{"no gso", func(b []byte) { b[1] = gsoNone }},
		{"zero gso_size", func(b []byte) { b[4], b[5] = 0, 0 }},
		{"ipv6 ethertype", func(b []byte) { b[vnetHdrLen+12], b[vnetHdrLen+13] = 0x86, 0xdd }},
		{"ip version 6", func(b []byte) { b[vnetHdrLen+ethHdrLen] = 0x65 }},
		{"short ihl", func(b []byte) { b[vnetHdrLen+ethHdrLen] = 0x44 }},
		{"fragment", func(b []byte) { b[vnetHdrLen+ethHdrLen+6] = 0x20 }},
		{"udp in a tcp gso frame", func(b []byte) { b[vnetHdrLen+ethHdrLen+9] = protoUDP }},
		{"tcp data offset 4", func(b []byte) { b[vnetHdrLen+ethHdrLen+20+12] = 4 << 4 }},
		{"tcp data offset past the end", func(b []byte) { b[vnetHdrLen+ethHdrLen+20+12] = 15 << 4 }},
	}
	for _, m := range mutate {
		b := gsoTestFrame(protoTCP, payload, 1448, 0x10)
		if m.name == "tcp data offset past the end" {
			b = b[:vnetHdrLen+ethHdrLen+20+40] // header says 60 bytes, 40 there
		}
		m.f(b)
		if n := packetsIn(b); n != 1 {
			t.Errorf("%s: packetsIn = %d, want 1", m.name, n)
		}
		if out := segment(nil, b, func(int) bool { return true }, func(n int) []byte { return make([]byte, 0, n) }); len(out) != 0 {
			t.Errorf("%s: cut into %d packets", m.name, len(out))
		}
	}
	if n := packetsIn([]byte{1, 2, 3}); n != 1 {
		t.Errorf("a runt: packetsIn = %d, want 1", n)
	}
}

// FuzzSegment: any bytes from a packet socket are parsed without a panic,
// and whatever is cut has consistent lengths and checksums.
func FuzzSegment(f *testing.F) {
	f.Add(gsoTestFrame(protoTCP, make([]byte, 4000), 1448, 0x19))
	f.Add(gsoTestFrame(protoUDP, make([]byte, 2500), 1200, 0))
	f.Add(gsoTestFrame(protoTCP, make([]byte, 100), 0, 0x10))
	f.Fuzz(func(t *testing.T, b []byte) {
		n := packetsIn(b)
		if n < 1 {
			t.Fatalf("packetsIn = %d", n)
		}
		out := segment(nil, b, func(j int) bool { return j%2 == 0 }, func(n int) []byte { return make([]byte, 0, n) })
		if len(out) > (n+1)/2 {
			t.Fatalf("%d packets out of %d, keeping every other", len(out), n)
		}
		for _, p := range out {
			eth := p[vnetHdrLen:]
			ihl := int(eth[ethHdrLen]&0xf) * 4
			ip := eth[ethHdrLen : ethHdrLen+ihl]
			if int(binary.BigEndian.Uint16(ip[2:])) != len(eth)-ethHdrLen || !checksumOK(ip, 0) {
				t.Fatalf("packet with a bad IP header")
			}
			l4 := eth[ethHdrLen+ihl:]
			if !checksumOK(l4, pseudo(ip, ip[9], len(l4))) {
				t.Fatalf("packet with a bad L4 checksum")
			}
		}
	})
}

// TestLossProcess: the loss of each packet is a Bernoulli trial of
// probability p, whatever the frames' sizes.
func TestLossProcess(t *testing.T) {
	for _, p := range []float64{0, 0.001, 0.05, 1} {
		var g lossProcess
		lost, total := 0, 0
		for i := range 200000 {
			k := 1 + i%44 // frames of 1 to 44 packets
			m := make([]bool, k)
			n := g.lose(p, m)
			marked := 0
			for _, l := range m {
				if l {
					marked++
				}
			}
			if n != marked {
				t.Fatalf("lose returned %d, marked %d", n, marked)
			}
			lost += n
			total += k
		}
		got := float64(lost) / float64(total)
		// 4.5 million packets: the standard deviation of the fraction is
		// below 0.0001 for p = 0.05.
		if math.Abs(got-p) > 0.0005+p*0.05 {
			t.Errorf("p = %v: lost %v of the packets", p, got)
		}
	}
	// Packets already lost upstream are not trials.
	var g lossProcess
	m := []bool{true, true, true}
	if n := g.lose(1, m); n != 0 {
		t.Errorf("lost %d packets already lost", n)
	}
}

// TestForwardLossCounts: the delay line's loss of GSO frames between two
// ports is a Bernoulli trial per packet and direction, and its counters
// add up: every packet the sender's port took is lost on its upload, lost
// on the receiver's download or sent on, each in one place only; a frame
// loses whole or is cut into the packets that survive. A loss applied per
// frame, twice, or counted on the wrong direction fails here, far beyond
// chance (the integration test, TestLossyLink, can only tell a loss
// fraction within a few standard deviations of tens of thousands of
// packets).
func TestForwardLossCounts(t *testing.T) {
	const p = 0.01
	l := Link{Loss: p}
	s := &delaySwitch{byIndex: map[int32]*port{}, byMAC: map[[6]byte]*port{}}
	s.attach(1, 11, []byte{2, 0, 0, 0, 0, 1}, l)
	s.attach(2, 12, []byte{2, 0, 0, 0, 0, 2}, l) // gsoTestFrame's destination
	from, to := s.port(1), s.port(2)
	payload := make([]byte, 44*100)
	var total, delivered, partial, whole int64
	var hitWant, hitVar float64 // frames with a loss: expected, variance
	now := time.Now()
	for i := range 40000 {
		k := 1 + i%44
		gso := 100
		if k == 1 {
			gso = 0
		}
		data := gsoTestFrame(protoTCP, payload[:k*100], gso, 0x10)
		if got := packetsIn(data); got != k {
			t.Fatalf("frame %d: packetsIn = %d, want %d", i, got, k)
		}
		cut := s.cut.Load()
		s.mu.RLock()
		s.forward(from, data, now)
		s.mu.RUnlock()
		n := int64(0)
		for len(s.queue) > 0 {
			f := s.queue.pop()
			if f.dst != to {
				t.Fatalf("frame %d sent to node %d", i, f.dst.node)
			}
			n += int64(packetsIn(f.data))
			s.release(f.data)
		}
		switch {
		case n == 0:
			whole++
		case n < int64(k):
			partial++
			if s.cut.Load() != cut+1 {
				t.Fatalf("frame %d: %d of %d packets went on, but the frame was not counted cut", i, n, k)
			}
		}
		total += int64(k)
		delivered += n
		// Each of the k packets is lost with probability p on the upload,
		// else p on the download.
		hit := 1 - math.Pow(1-p, float64(2*k))
		hitWant += hit
		hitVar += hit * (1 - hit)
	}
	up, down := from.upLost.Load(), to.downLost.Load()
	if from.upPackets.Load() != total || to.downPackets.Load() != total-up {
		t.Errorf("packets counted: %d up, %d down; want %d up, %d down (what the upload did not lose)",
			from.upPackets.Load(), to.downPackets.Load(), total, total-up)
	}
	if up+down+delivered != total {
		t.Errorf("%d packets: %d lost up, %d lost down, %d sent on; want them to add up", total, up, down, delivered)
	}
	if to.upLost.Load() != 0 || from.downLost.Load() != 0 || to.upPackets.Load() != 0 || from.downPackets.Load() != 0 {
		t.Errorf("counted on the wrong directions: %d packets, %d lost on the receiver's upload; %d, %d on the sender's download",
			to.upPackets.Load(), to.upLost.Load(), from.downPackets.Load(), from.downLost.Load())
	}
	if partial == 0 || s.cut.Load() != partial {
		t.Errorf("%d frames cut, %d frames partly lost", s.cut.Load(), partial)
	}
	// Losses per packet hit frames in proportion to their packets; a loss
	// per frame would hit far fewer, and lose them whole.
	if hit := float64(partial + whole); math.Abs(hit-hitWant) > 5*math.Sqrt(hitVar) {
		t.Errorf("%.0f frames lost packets, want %.0f ± %.0f (5 sd): not a loss per packet", hit, hitWant, 5*math.Sqrt(hitVar))
	}
	// 900,000 packets: each direction's loss within 5 standard deviations
	// of a binomial's (about 3.5 % of p here).
	for _, c := range []struct {
		dir        string
		lost, pkts int64
	}{{"upload", up, total}, {"download", down, total - up}} {
		want := p * float64(c.pkts)
		if sd := math.Sqrt(want * (1 - p)); math.Abs(float64(c.lost)-want) > 5*sd {
			t.Errorf("lost %d of %d packets on the %s, want %.0f ± %.0f (5 sd)", c.lost, c.pkts, c.dir, want, 5*sd)
		}
	}
	t.Logf("%d packets in 40000 frames: %d lost up, %d down; %d frames cut, %d lost whole", total, up, down, partial, whole)
}
