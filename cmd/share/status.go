package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/sharefiles/share/node"
	"github.com/sharefiles/share/server"
	"github.com/sharefiles/share/transfer"
)

type statusOptions struct {
	client clientFlags
	json   bool
}

func newStatusCmd(stdout, stderr io.Writer) *cobra.Command {
	var o statusOptions
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a peer's (or server's) state: peer ID, connections, DHT, shares",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runStatus(cmd.Context(), o, stdout)
		},
	}
	o.client.register(cmd)
	cmd.Flags().BoolVar(&o.json, "json", false, "print JSON, as GET /v1/status returns it")
	return cmd
}

func runStatus(ctx context.Context, o statusOptions, stdout io.Writer) error {
	c, err := o.client.client()
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := c.Status(ctx, &raw); err != nil {
		return hint(err, &o.client)
	}
	if o.json {
		_, err := fmt.Fprintf(stdout, "%s\n", raw)
		return err
	}
	var mode struct{ Mode string }
	if err := json.Unmarshal(raw, &mode); err != nil {
		return err
	}
	if mode.Mode == "peer" {
		var st node.Status
		if err := json.Unmarshal(raw, &st); err != nil {
			return err
		}
		printPeerStatus(stdout, st)
		return nil
	}
	var st server.ServerStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "server %s at %s, %d shares\n", st.Version, o.client.url, len(st.Shares))
	return nil
}

func printPeerStatus(w io.Writer, st node.Status) {
	fmt.Fprintf(w, "peer:     %s\n", st.PeerID)
	for _, a := range st.Addrs {
		fmt.Fprintf(w, "          %s\n", a)
	}
	printSwarm(w, st)
	fmt.Fprintf(w, "peers:    %d connected\n", len(st.Peers))
	for _, p := range st.Peers {
		via := ""
		switch {
		case p.Limited:
			via = " (relayed, limited: no chunks)"
		case p.Relayed:
			via = " (relayed)"
		}
		fmt.Fprintf(w, "          %s %s%s\n", p.ID, p.Addr, via)
	}
	fmt.Fprintf(w, "dht:      %d peers in the routing table\n", st.RoutingTable)
	fmt.Fprintf(w, "shares:   %d\n", len(st.Shares))
	if len(st.Shares) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nID\tNAME\tSIZE\tCHUNKS\tSTATE\tPROVIDERS\tUP\tDOWN")
	for _, s := range st.Shares {
		state := "complete"
		switch {
		case s.Damaged > 0 && s.Downloading:
			state = "damaged, repairing"
		case s.Damaged > 0:
			state = "damaged"
		case s.Downloading:
			state = "downloading"
		case !s.Complete:
			state = "partial"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\t%d\t%s\t%s\n", s.ID, transfer.DisplayName(s.Name), humanize.IBytes(uint64(s.Size)),
			s.Have, s.Chunks, state, s.Providers, humanize.IBytes(uint64(s.BytesUp)), humanize.IBytes(uint64(s.BytesDown)))
		if s.LastError != "" {
			fmt.Fprintf(tw, "\t  last error: %s\n", s.LastError)
		}
	}
	tw.Flush()
}

// printSwarm shows the private-swarm and NAT-traversal state of a peer.
func printSwarm(w io.Writer, st node.Status) {
	p := st.Private
	if p.SwarmKey != "" {
		fmt.Fprintf(w, "swarm:    private, swarm key %s; %s only\n", p.SwarmKey, strings.Join(p.Transports, ", "))
	} else {
		fmt.Fprintf(w, "swarm:    public: any peer that reaches this one may join (%s)\n", strings.Join(p.Transports, ", "))
	}
	if len(p.AllowPeers) > 0 {
		fmt.Fprintf(w, "allowed:  only these %d peers (%d connections refused)\n", len(p.AllowPeers), p.Refused)
		for _, id := range p.AllowPeers {
			fmt.Fprintf(w, "          %s\n", id)
		}
	}
	n := st.NAT
	fmt.Fprintf(w, "nat:      reachability %s; hole punches %d tried, %d succeeded; chunk protocol %s direct, %s relayed\n",
		n.Reachability, n.HolePunches.Tried, n.HolePunches.Succeeded, humanize.IBytes(uint64(n.BytesDirect)), humanize.IBytes(uint64(n.BytesRelayed)))
	for _, a := range n.RelayAddrs {
		fmt.Fprintf(w, "          through relay: %s\n", a)
	}
	if n.RelayService != "" {
		fmt.Fprintf(w, "relay:    relaying for others: %s\n", n.RelayService)
	}
}

// peerDownloadError returns the last error of the swarm download of id by
// the peer c talks to ("" for a server, or if there is none): why a peer
// had no chunks to give its client.
func peerDownloadError(ctx context.Context, c *server.Client, id transfer.ID) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var st node.Status
	if err := c.Status(ctx, &st); err != nil || st.Mode != "peer" {
		return ""
	}
	for _, s := range st.Shares {
		if s.ID == id {
			return s.LastError
		}
	}
	return ""
}
