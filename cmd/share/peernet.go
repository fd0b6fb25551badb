package main

import (
	"fmt"
	"os"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/pflag"

	"github.com/sharefiles/share/node"
	"github.com/sharefiles/share/transfer"
)

// peerNetFlags are the flags of a peer's network beyond its LAN: a private
// swarm (swarm key, allow-list) and NAT traversal (relays, hole punching).
type peerNetFlags struct {
	swarmKey       string
	allowPeers     []string
	allowFile      string
	relays         []string
	relayService   bool
	relayData      string
	relayDuration  time.Duration
	relayUnlimited bool
	reachability   string
}

func (f *peerNetFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.swarmKey, "swarm-key", os.Getenv("SHARE_SWARM_KEY"), "join the private swarm of this key file ('share keygen --swarm' writes one; mode 0600): peers without it cannot connect; TCP only (env SHARE_SWARM_KEY)")
	fs.StringArrayVar(&f.allowPeers, "allow-peer", nil, "accept and dial only these peer IDs, plus the bootstrap peers and relays (repeatable)")
	fs.StringVar(&f.allowFile, "allow-peers-file", "", "a file of peer IDs to allow, one per line, '#' comments (adds to --allow-peer)")
	fs.StringArrayVar(&f.relays, "relay", splitList(os.Getenv("SHARE_RELAY")), "full address of a relay to reserve a slot on when behind a NAT; bootstrap peers that relay are used too (repeatable; env SHARE_RELAY, comma separated)")
	fs.BoolVar(&f.relayService, "relay-service", false, "relay connections for peers behind NATs (circuit relay v2); run it on a peer others can reach")
	fs.StringVar(&f.relayData, "relay-limit-data", "128KiB", "with --relay-service: bytes a relayed connection may carry each way; enough for requests and the hole punch, not for chunks")
	fs.DurationVar(&f.relayDuration, "relay-limit-duration", 2*time.Minute, "with --relay-service: how long a relayed connection may last")
	fs.BoolVar(&f.relayUnlimited, "relay-unlimited", false, "with --relay-service: no limits; peers whose hole punch fails then transfer through this relay, at its bandwidth cost")
	fs.StringVar(&f.reachability, "reachability", "auto", "auto (AutoNAT finds out), public, or private (behind a NAT)")
}

// apply sets opts from the flags; errors are usage errors.
func (f *peerNetFlags) apply(opts *node.Options) error {
	if f.swarmKey != "" {
		psk, err := node.LoadSwarmKey(f.swarmKey)
		if err != nil {
			return err
		}
		opts.SwarmKey = psk
	}
	for _, s := range f.allowPeers {
		id, err := peer.Decode(s)
		if err != nil {
			return usageError{fmt.Errorf("--allow-peer %q: not a peer ID: %w", s, err)}
		}
		opts.AllowPeers = append(opts.AllowPeers, id)
	}
	if f.allowFile != "" {
		ids, err := node.ReadPeerIDs(f.allowFile)
		if err != nil {
			return usageError{fmt.Errorf("--allow-peers-file: %w", err)}
		}
		if len(ids) == 0 {
			return usageError{fmt.Errorf("--allow-peers-file %s: no peer ID in it (an empty list would refuse everyone)", f.allowFile)}
		}
		opts.AllowPeers = append(opts.AllowPeers, ids...)
	}
	if _, err := node.ParseBootstrap(f.relays); err != nil {
		return usageError{fmt.Errorf("--relay: %w", err)}
	}
	opts.Relays = f.relays
	r, err := node.ParseReachability(f.reachability)
	if err != nil {
		return usageError{fmt.Errorf("--reachability: %w", err)}
	}
	opts.Reachability = r
	opts.RelayService = f.relayService
	data, err := transfer.ParseSize(f.relayData)
	if err != nil || data <= 0 {
		return usageError{fmt.Errorf("--relay-limit-data %q: want a size such as 128KiB", f.relayData)}
	}
	if f.relayDuration < time.Second {
		return usageError{fmt.Errorf("--relay-limit-duration %v: want at least 1s", f.relayDuration)}
	}
	opts.RelayLimits = node.RelayLimits{Data: data, Duration: f.relayDuration, Unlimited: f.relayUnlimited}
	return nil
}
