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
		Args:  args(1, -1, "rm ID...", "the ID of a share to delete"),
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
	for k, id := range ids {
		if err := c.Remove(ctx, id); err != nil {
			if _, ok := interrupted(ctx); ok && k > 0 {
				return interruptedError{fmt.Sprintf("rm: interrupted after removing %d of %d shares", k, len(ids))}
			}
			if errors.Is(err, transfer.ErrNotFound) {
				return fmt.Errorf("rm: no share %s on %s\n  'share ls' lists the shares there", id, o.client.url)
			}
			return hint(fmt.Errorf("rm %s: %w", id, err), &o.client)
		}
	}
	return nil
}
