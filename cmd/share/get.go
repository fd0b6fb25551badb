package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sharefiles/share/server"
	"github.com/sharefiles/share/transfer"
)

type getOptions struct {
	client        clientFlags
	id            string
	out           string
	force         bool
	parallel      int
	downloadLimit transfer.Rate
	stallTimeout  string
}

func newGetCmd(stdout, stderr io.Writer) *cobra.Command {
	var o getOptions
	cmd := &cobra.Command{
		Use:   "get ID",
		Short: "Download a share; print where it was written",
		Long: `Download a share by its ID, in parallel chunks, each verified before it is
written. The file or directory goes to -o PATH (default: its name in the current
directory; an existing directory: its name inside it). Work in progress is kept
beside it in .NAME.share-partial, so an interrupted get resumes when run again.
Prints the output path on stdout.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.id = args[0]
			return runGet(cmd.Context(), o, stdout, stderr)
		},
	}
	o.client.register(cmd)
	f := cmd.Flags()
	f.StringVarP(&o.out, "output", "o", "", "output path")
	f.BoolVar(&o.force, "force", false, "replace an existing output")
	f.IntVar(&o.parallel, "parallel", server.DefaultParallel, "chunk requests in flight")
	f.Var(&o.downloadLimit, "download-limit", "cap on bytes received, e.g. 20MiB/s")
	f.StringVar(&o.stallTimeout, "stall-timeout", transfer.DefaultStallTimeout.String(), "give up when no chunk arrives for this long")
	return cmd
}

func runGet(ctx context.Context, o getOptions, stdout, stderr io.Writer) error {
	id, err := transfer.ParseID(o.id)
	if err != nil {
		return usageError{err}
	}
	if o.parallel < 1 {
		return usageError{fmt.Errorf("--parallel must be at least 1")}
	}
	stall, err := parseDuration(o.stallTimeout)
	if err != nil {
		return usageError{fmt.Errorf("--stall-timeout: %w", err)}
	}
	c, err := o.client.client()
	if err != nil {
		return err
	}
	var b *bar
	out, stats, err := c.Get(ctx, id, transfer.GetOptions{
		Out:   o.out,
		Force: o.force,
		Started: func(m *transfer.Manifest, held int64) {
			b = newBar(stderr, m.Size(), m.Name())
			b.set(held)
		},
		Download: transfer.DownloadOptions{
			MaxInFlight:  o.parallel,
			PerSource:    o.parallel,
			Limiter:      transfer.NewLimiter(o.downloadLimit),
			StallTimeout: stall,
			Progress:     func(p transfer.Progress) { b.set(p.Bytes) },
			Logger:       quietLogger(stderr),
		},
	})
	if err != nil {
		b.abandon(stderr)
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			return fmt.Errorf("get %s: interrupted; run the same command again to resume", id)
		}
		if errors.Is(err, transfer.ErrNotFound) {
			return fmt.Errorf("no share %s on %s", id, o.client.server)
		}
		if !errors.Is(err, transfer.ErrExists) && !errors.Is(err, server.ErrUnauthorized) && !isConnRefused(err) {
			if why := peerDownloadError(ctx, c, id); why != "" { // a peer with no chunks to give says why
				err = fmt.Errorf("%w\n  the peer's download from the swarm: %s", err, strings.ReplaceAll(why, "\n", "\n  "))
			}
			err = fmt.Errorf("%w\n  chunks already fetched are kept: run the same command again to resume", err)
		}
		return hint(err, &o.client)
	}
	b.finish()
	if stats.Local != transfer.CloneNone {
		fmt.Fprintf(stderr, "share: made from the local peer's copy (%s)%s\n", stats.Local, localNote[stats.Local])
	}
	fmt.Fprintln(stdout, out)
	return nil
}

// localNote says what a user should know of an output made from a local
// peer's copy.
var localNote = map[transfer.CloneMethod]string{
	transfer.CloneHardlink: ": the output shares its inode with the peer's copy; edit a copy, not in place",
}
