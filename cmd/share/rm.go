package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/sharefiles/share/transfer"
)

type rmOptions struct {
	client clientFlags
	ids    []string
}

func newRmCmd(stdout, stderr io.Writer) *cobra.Command {
	var o rmOptions
	cmd := &cobra.Command{
		Use:   "rm ID...",
		Short: "Delete shares from the server",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.ids = args
			return runRm(cmd.Context(), o)
		},
	}
	o.client.register(cmd)
	return cmd
}

func runRm(ctx context.Context, o rmOptions) error {
	ids := make([]transfer.ID, len(o.ids))
	for k, s := range o.ids {
		id, err := transfer.ParseID(s)
		if err != nil {
			return usageError{err}
		}
		ids[k] = id
	}
	c, err := o.client.client()
	if err != nil {
		return err
	}
	for _, id := range ids {
		if err := c.Remove(ctx, id); err != nil {
			if errors.Is(err, transfer.ErrNotFound) {
				return fmt.Errorf("rm: no share %s on %s", id, o.client.server)
			}
			return hint(fmt.Errorf("rm %s: %w", id, err), &o.client)
		}
	}
	return nil
}
