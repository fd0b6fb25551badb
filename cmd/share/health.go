package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
)

type healthOptions struct {
	client  clientFlags
	timeout time.Duration
}

func newHealthCmd(stdout, stderr io.Writer) *cobra.Command {
	var o healthOptions
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Check that a server answers; exit 0 if it does",
		Long:  "Check that a server or peer answers GET /healthz; for scripts and container health checks.",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runHealth(cmd.Context(), o, stdout)
		},
	}
	o.client.register(cmd)
	cmd.Flags().DurationVar(&o.timeout, "timeout", 5*time.Second, "how long to wait for an answer")
	return cmd
}

func runHealth(ctx context.Context, o healthOptions, stdout io.Writer) error {
	c, err := o.client.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if err := c.Health(ctx); err != nil {
		return hint(err, &o.client)
	}
	fmt.Fprintln(stdout, "ok")
	return nil
}
