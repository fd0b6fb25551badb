package netem

import (
	"encoding/binary"
)

// Frames as the delay line reads them from a packet socket with
// PACKET_VNET_HDR: a struct virtio_net_hdr (include/uapi/linux/virtio_net.h,
// in the host's byte order for a packet socket), then the Ethernet frame.
// With segmentation offload on, one frame may be a GSO frame: headers of
// one packet followed by the payload of several, which the kernel cuts into
// wire packets of gso_size payload bytes on the way out (or never, between
// two veths). The delay line must lose packets, not GSO frames, so it counts
// and, where a loss hits inside one, cuts them itself.
const (
	vnetNeedsCsum = 1    // VIRTIO_NET_HDR_F_NEEDS_CSUM: checksum from csum_start to the end, stored at csum_start+csum_offset
	gsoNone       = 0    // VIRTIO_NET_HDR_GSO_NONE
	gsoTCPv4      = 1    // VIRTIO_NET_HDR_GSO_TCPV4
	gsoUDPL4      = 5    // VIRTIO_NET_HDR_GSO_UDP_L4 (UDP segmentation offload, RFC 8085 datagrams of gso_size each)
	gsoECN        = 0x80 // VIRTIO_NET_HDR_GSO_ECN (flag)
	ethHdrLen     = 14
	protoTCP      = 6
	protoUDP      = 17
)

// gsoFrame is the parsed layout of a frame: where its headers end and how
// its payload is cut into packets.
type gsoFrame struct {
	l3, l4, payload int // offsets in the frame (after the virtio-net header) of the IPv4 header, the L4 header and the payload
	proto           byte
	gsoSize         int // payload bytes per packet; 0: one packet
	packets         int
}

// parseFrame parses eth (a frame without its virtio-net header) given the
// header's gso_type and gso_size. A frame that is not a GSO frame of IPv4
// TCP or UDP (with GSO type and protocol agreeing), or that is malformed,
// is one packet: ok is false and it is never cut.
func parseFrame(gsoType byte, gsoSize int, eth []byte) (f gsoFrame, ok bool) {
	f.packets = 1
	typ := gsoType &^ gsoECN
	if typ == gsoNone || gsoSize <= 0 || len(eth) < ethHdrLen+20 || eth[12] != 0x08 || eth[13] != 0x00 {
		return f, false
	}
	ip := eth[ethHdrLen:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ihl < 20 || len(ip) < ihl || int(binary.BigEndian.Uint16(ip[2:4])) < ihl {
		return f, false
	}
	if ip[6]&0x3f != 0 || ip[7] != 0 { // more fragments, or an offset: a fragment is never a GSO frame
		return f, false
	}
	f.l3, f.l4, f.proto = ethHdrLen, ethHdrLen+ihl, ip[9]
	var l4len int
	switch {
	case typ == gsoTCPv4 && f.proto == protoTCP:
		if len(eth) < f.l4+20 {
			return f, false
		}
		l4len = int(eth[f.l4+12]>>4) * 4
		if l4len < 20 {
			return f, false
		}
	case typ == gsoUDPL4 && f.proto == protoUDP:
		l4len = 8
	default:
		return f, false
	}
	f.payload = f.l4 + l4len
	if len(eth) <= f.payload {
		return f, false
	}
	f.gsoSize = gsoSize
	f.packets = (len(eth) - f.payload + gsoSize - 1) / gsoSize
	return f, true
}

// packetsIn returns the wire packets in data (a virtio-net header and a
// frame): a GSO frame's payload over its gso_size, else 1.
func packetsIn(data []byte) int {
	if len(data) < vnetHdrLen {
		return 1
	}
	f, _ := parseFrame(data[1], int(binary.NativeEndian.Uint16(data[4:6])), data[vnetHdrLen:])
	return f.packets
}

// segment appends to out, for each packet j of the GSO frame data (with its
// virtio-net header) for which keep(j) holds, that packet as a frame of its
// own with a virtio-net header: what the kernel's GSO would have sent on the
// wire (net/ipv4/tcp_offload.c tcp_gso_segment, net/ipv4/udp_offload.c
// __udp_gso_segment): the IPv4 header with its total length, its ID
// increased by j and its checksum; TCP with its sequence number advanced by
// j × gso_size, CWR on the first packet only, FIN and PSH on the last only;
// UDP with its length. The L4 checksum is computed here in full (these are
// the few frames a loss hits), so the header asks for no checksum work.
// It returns out unchanged if data is not a GSO frame it can cut.
func segment(out [][]byte, data []byte, keep func(j int) bool, alloc func(n int) []byte) [][]byte {
	if len(data) < vnetHdrLen {
		return out
	}
	eth := data[vnetHdrLen:]
	f, ok := parseFrame(data[1], int(binary.NativeEndian.Uint16(data[4:6])), eth)
	if !ok {
		return out
	}
	hdr := eth[:f.payload]
	payload := eth[f.payload:]
	ip := hdr[f.l3:f.l4]
	id := binary.BigEndian.Uint16(ip[4:6])
	var seq uint32
	if f.proto == protoTCP {
		seq = binary.BigEndian.Uint32(hdr[f.l4+4:])
	}
	for j := range f.packets {
		if !keep(j) {
			continue
		}
		lo := j * f.gsoSize
		hi := min(lo+f.gsoSize, len(payload))
		b := alloc(vnetHdrLen + len(hdr) + hi - lo)
		b = b[:vnetHdrLen+len(hdr)+hi-lo]
		clear(b[:vnetHdrLen]) // no GSO, no checksum to complete
		p := b[vnetHdrLen:]
		copy(p, hdr)
		copy(p[len(hdr):], payload[lo:hi])
		pip := p[f.l3:f.l4]
		binary.BigEndian.PutUint16(pip[2:4], uint16(len(p)-f.l3))
		if j > 0 {
			binary.BigEndian.PutUint16(pip[4:6], id+uint16(j))
		}
		pip[10], pip[11] = 0, 0
		binary.BigEndian.PutUint16(pip[10:12], ^fold(sum(pip, 0)))
		l4 := p[f.l4:]
		switch f.proto {
		case protoTCP:
			binary.BigEndian.PutUint32(l4[4:8], seq+uint32(lo))
			if j > 0 {
				l4[13] &^= 0x80 // CWR
			}
			if j < f.packets-1 {
				l4[13] &^= 0x01 | 0x08 // FIN, PSH
			}
			l4[16], l4[17] = 0, 0
			binary.BigEndian.PutUint16(l4[16:18], ^fold(sum(l4, pseudo(pip, protoTCP, len(l4)))))
		case protoUDP:
			binary.BigEndian.PutUint16(l4[4:6], uint16(len(l4)))
			l4[6], l4[7] = 0, 0
			c := ^fold(sum(l4, pseudo(pip, protoUDP, len(l4))))
			if c == 0 {
				c = 0xffff // RFC 768: a computed zero is sent as all ones
			}
			binary.BigEndian.PutUint16(l4[6:8], c)
		}
		out = append(out, b)
	}
	return out
}

// pseudo returns the sum of the IPv4 pseudo-header of an L4 segment of n
// bytes (RFC 793 section 3.1, RFC 768).
func pseudo(ip []byte, proto byte, n int) uint32 {
	s := uint32(binary.BigEndian.Uint16(ip[12:14])) + uint32(binary.BigEndian.Uint16(ip[14:16])) +
		uint32(binary.BigEndian.Uint16(ip[16:18])) + uint32(binary.BigEndian.Uint16(ip[18:20]))
	return s + uint32(proto) + uint32(n)
}

// sum adds b as big-endian 16-bit words to s (RFC 1071), a trailing odd
// byte padded with zero.
func sum(b []byte, s uint32) uint32 {
	for len(b) >= 8 {
		s += uint32(binary.BigEndian.Uint16(b)) + uint32(binary.BigEndian.Uint16(b[2:])) +
			uint32(binary.BigEndian.Uint16(b[4:])) + uint32(binary.BigEndian.Uint16(b[6:]))
		b = b[8:]
		s = s&0xffff + s>>16
	}
	for len(b) >= 2 {
		s += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

// fold folds a 32-bit one's-complement sum into 16 bits.
func fold(s uint32) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}
