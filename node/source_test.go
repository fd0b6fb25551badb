package node

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/sharefiles/share/transfer"
)

func TestStreamErrorTranslation(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		want      error
		permanent bool
	}{
		{"nil", nil, nil, false},
		{"our resource manager", fmt.Errorf("failed to open stream: %w", network.ErrResourceLimitExceeded), transfer.ErrBusy, false},
		{"the peer's resource manager", &network.StreamError{ErrorCode: network.StreamResourceLimitExceeded, Remote: true}, transfer.ErrBusy, false},
		{"the peer's rate limit", &network.StreamError{ErrorCode: network.StreamRateLimited, Remote: true}, transfer.ErrBusy, false},
		{"our own reset", &network.StreamError{ErrorCode: network.StreamResourceLimitExceeded, Remote: false}, nil, false},
		{"a reset", network.ErrReset, network.ErrReset, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := streamError(tt.err)
			if tt.want != nil && !errors.Is(got, tt.want) {
				t.Fatalf("streamError(%v) = %v, want %v", tt.err, got, tt.want)
			}
			if tt.want == nil && errors.Is(got, transfer.ErrBusy) {
				t.Fatalf("streamError(%v) = %v, want it not busy", tt.err, got)
			}
			if p := transfer.Permanent(got); p != tt.permanent {
				t.Fatalf("Permanent(%v) = %v, want %v", got, p, tt.permanent)
			}
		})
	}

	// With real hosts: an address whose peer has another key than the ID
	// dialled is a permanent refusal; an unreachable one is transient.
	a, b, c := testNode(t, "", nil), testNode(t, "", nil), testNode(t, "", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := streamError(a.host.Connect(ctx, peer.AddrInfo{ID: c.ID(), Addrs: b.host.Addrs()}))
	if !errors.Is(err, transfer.ErrSourceRefused) || !transfer.Permanent(err) {
		t.Fatalf("dial of %s at %s's address: %v, want a permanent refusal", c.ID(), b.ID(), err)
	}
	var addrs []ma.Multiaddr // TCP only: a loopback dial to a closed port fails at once
	for _, addr := range c.host.Addrs() {
		if _, err := addr.ValueForProtocol(ma.P_TCP); err == nil {
			addrs = append(addrs, addr)
		}
	}
	c.Close()
	a.host.Peerstore().ClearAddrs(c.ID())
	err = streamError(a.host.Connect(ctx, peer.AddrInfo{ID: c.ID(), Addrs: addrs}))
	if err == nil || transfer.Permanent(err) {
		t.Fatalf("dial of a stopped peer: %v, want a transient error", err)
	}
}
