package main

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"sync"

	"github.com/spf13/cobra"

	"github.com/sharefiles/share/server"
	"github.com/sharefiles/share/transfer"
)

type putOptions struct {
	client      clientFlags
	paths       []string
	chunkSize   string
	parallel    int
	uploadLimit transfer.Rate
}

func newPutCmd(stdout, stderr io.Writer) *cobra.Command {
	var o putOptions
	cmd := &cobra.Command{
		Use:   "put PATH...",
		Short: "Upload files or directories; print each share's ID",
		Long: `Upload files or directories. Each is hashed into chunks, its manifest is sent,
then the chunks the server lacks. Prints each share's ID on stdout, one per
line, and nothing else there. An interrupted put resumes when run again.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.paths = args
			return runPut(cmd.Context(), o, stdout, stderr)
		},
	}
	o.client.register(cmd)
	f := cmd.Flags()
	f.StringVar(&o.chunkSize, "chunk-size", "1MiB", "chunk size")
	f.IntVar(&o.parallel, "parallel", server.DefaultParallel, "chunk uploads in flight")
	f.Var(&o.uploadLimit, "upload-limit", "cap on bytes sent, e.g. 20MiB/s")
	return cmd
}

func runPut(ctx context.Context, o putOptions, stdout, stderr io.Writer) error {
	cs, err := transfer.ParseSize(o.chunkSize)
	if err != nil || cs < transfer.MinChunkSize || cs > transfer.MaxChunkSize {
		return usageError{fmt.Errorf("--chunk-size %q: want %d to %d bytes", o.chunkSize, transfer.MinChunkSize, transfer.MaxChunkSize)}
	}
	if o.parallel < 1 {
		return usageError{fmt.Errorf("--parallel must be at least 1")}
	}
	c, err := o.client.client()
	if err != nil {
		return err
	}
	limiter := transfer.NewLimiter(o.uploadLimit)
	for _, path := range o.paths {
		var b *bar
		var mu sync.Mutex
		info, err := c.Put(ctx, path, server.PutOptions{
			Build: transfer.BuildOptions{
				ChunkSize: cs,
				Skipped: func(p string, mode fs.FileMode) {
					fmt.Fprintf(stderr, "share: skipping %s (%s: not a regular file or directory)\n", p, mode.Type())
				},
			},
			Parallel: o.parallel,
			Limiter:  limiter,
			Started: func(m *transfer.Manifest, toSend int64) {
				b = newBar(stderr, toSend, m.Name())
			},
			Progress: func(n int64) {
				mu.Lock()
				b.add(n)
				mu.Unlock()
			},
		})
		if err != nil {
			b.abandon(stderr)
			return hint(fmt.Errorf("put %s: %w", path, err), &o.client)
		}
		b.finish()
		fmt.Fprintln(stdout, info.ID)
	}
	return nil
}
