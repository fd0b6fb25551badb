package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/sharefiles/share/server"
	"github.com/sharefiles/share/transfer"
)

type lsOptions struct {
	client clientFlags
	json   bool
}

func newLsCmd(stdout, stderr io.Writer) *cobra.Command {
	var o lsOptions
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the server's shares",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runLs(cmd.Context(), o, stdout)
		},
	}
	o.client.register(cmd)
	cmd.Flags().BoolVar(&o.json, "json", false, "print JSON, as GET /v1/shares returns it")
	return cmd
}

func runLs(ctx context.Context, o lsOptions, stdout io.Writer) error {
	c, err := o.client.client()
	if err != nil {
		return err
	}
	shares, err := c.List(ctx)
	if err != nil {
		return hint(err, &o.client)
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(server.ListResponse{Shares: shares})
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSIZE\tSTATE\tCREATED")
	for _, s := range shares {
		name := transfer.DisplayName(s.Name) // confusable separators escaped
		if s.Type == "dir" {
			name += "/"
		}
		state := "complete"
		switch {
		case s.Damaged > 0:
			state = fmt.Sprintf("damaged %d/%d", s.Have, s.Chunks)
		case !s.Complete:
			state = fmt.Sprintf("partial %d/%d", s.Have, s.Chunks)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.ID, name, humanize.IBytes(uint64(s.Size)), state, s.Created.Local().Format(time.DateTime))
	}
	return tw.Flush()
}
