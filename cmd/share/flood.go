package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/sharefiles/share/node"
	"github.com/sharefiles/share/transfer"
)

// floodOptions are the flags of the hidden `share flood`, the flooding
// member of share bench's security scenario (node.Flood).
type floodOptions struct {
	swarmKey       string
	targets        []string
	share          string
	streamWorkers  int
	requestWorkers int
	duration       time.Duration
}

// maxFloodDuration bounds a flood whatever --duration says.
const maxFloodDuration = time.Hour

func newFloodCmd(stdout io.Writer) *cobra.Command {
	var o floodOptions
	cmd := &cobra.Command{
		Use:   "flood --target ADDR... [--swarm-key FILE] [--share ID] [--duration D]",
		Short: "Flood peers with streams and chunk requests (share bench's security scenario)",
		Long: `Flood peers, as a hostile member of their swarm, to measure what their resource
limits hold against: connect to each --target and, until --duration has passed or
a signal comes, open streams that never negotiate a protocol (--streams workers
per target) and ask for chunks of --share far beyond the target's limits,
ignoring "busy" (--requests workers per target). It prints "flooding as PEERID"
once connected, and at the end one line of JSON with what it did. Not a peer: it
serves nothing. share bench runs it; it is hidden from help.`,
		Hidden: true,
		Args:   noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runFlood(cmd.Context(), o, stdout)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.swarmKey, "swarm-key", "", "the swarm's key file (share keygen --swarm)")
	f.StringArrayVar(&o.targets, "target", nil, "full multiaddr (/ip4/HOST/tcp/PORT/p2p/PEERID) of a peer to flood; repeatable")
	f.StringVar(&o.share, "share", "", "share ID whose chunks to request (none: no requests)")
	f.IntVar(&o.streamWorkers, "streams", 1000, "workers per target opening unnegotiated streams")
	f.IntVar(&o.requestWorkers, "requests", 256, "workers per target asking for chunks")
	f.DurationVar(&o.duration, "duration", time.Minute, fmt.Sprintf("how long to flood (at most %v)", maxFloodDuration))
	return cmd
}

func runFlood(ctx context.Context, o floodOptions, stdout io.Writer) error {
	if len(o.targets) == 0 {
		return usageError{errors.New("flood: give at least one --target")}
	}
	if o.duration <= 0 || o.duration > maxFloodDuration {
		return usageError{fmt.Errorf("flood: --duration %v: want more than 0 and at most %v", o.duration, maxFloodDuration)}
	}
	if o.streamWorkers < 0 || o.requestWorkers < 0 {
		return usageError{errors.New("flood: --streams and --requests cannot be negative")}
	}
	opts := node.FloodOptions{
		Targets:        o.targets,
		StreamWorkers:  o.streamWorkers,
		RequestWorkers: o.requestWorkers,
		Started:        func(id peer.ID) { fmt.Fprintf(stdout, "flooding as %s\n", id) },
	}
	if o.share != "" {
		id, err := transfer.ParseID(o.share)
		if err != nil {
			return usageError{fmt.Errorf("flood: --share: %w", err)}
		}
		opts.Share = id
	}
	if o.swarmKey != "" {
		psk, err := node.LoadSwarmKey(o.swarmKey)
		if err != nil {
			return err
		}
		opts.SwarmKey = psk
	}
	ctx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	st, err := node.Flood(ctx, opts)
	if err != nil {
		return err
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s\n", b)
	return nil
}
