package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/dustin/go-humanize"
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
	stall       string
}

func newPutCmd(stdout, stderr io.Writer) *cobra.Command {
	var o putOptions
	cmd := &cobra.Command{
		Use:   "put PATH...",
		Short: "Upload files or directories; print each share's ID",
		Long: `Upload files or directories. Each is hashed into chunks, its manifest is sent,
then the chunks the server lacks. Prints each share's ID on stdout, one per
line, and nothing else there. An interrupted put resumes when run again.`,
		Args: args(1, -1, "put PATH...", "a file or directory to upload"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.paths = args
			return runPut(cmd.Context(), o, stdout, stderr)
		},
	}
	o.client.register(cmd)
	f := cmd.Flags()
	f.StringVar(&o.chunkSize, "chunk-size", "auto", "chunk size (auto: from the share's size, 16KiB to 1MiB)")
	f.IntVar(&o.parallel, "parallel", server.DefaultParallel, "chunk uploads in flight")
	f.Var(&o.uploadLimit, "upload-limit", "cap on bytes sent, e.g. 20MiB/s")
	f.StringVar(&o.stall, "stall-timeout", transfer.DefaultStallTimeout.String(), "give up when no request succeeds for this long (a server restarting is waited for)")
	return cmd
}

func runPut(ctx context.Context, o putOptions, stdout, stderr io.Writer) error {
	cs, err := parseChunkSize(o.chunkSize)
	if err != nil {
		return usageError{err}
	}
	if o.parallel < 1 {
		return usageError{fmt.Errorf("--parallel must be at least 1")}
	}
	stall, err := parseDuration(o.stall)
	if err != nil {
		return usageError{fmt.Errorf("--stall-timeout: %w", err)}
	}
	c, err := o.client.client()
	if err != nil {
		return err
	}
	limiter := transfer.NewLimiter(o.uploadLimit)
	for _, path := range o.paths {
		var b *bar
		var started bool // the server said what it lacks
		var sent, toSend atomic.Int64
		var skipped int
		retryingPut, resumedPut := retrying(stderr, "put "+path, o.client.url, stall)
		info, err := c.Put(ctx, path, server.PutOptions{
			Build: transfer.BuildOptions{
				ChunkSize: cs,
				Skipped: func(p string, mode fs.FileMode) {
					skipped++
					fmt.Fprintf(stderr, "share: skipping %s: %s\n", p, fileType(mode))
				},
			},
			Parallel:     o.parallel,
			Limiter:      limiter,
			StallTimeout: stall,
			Retrying:     retryingPut,
			Resumed:      resumedPut,
			Started: func(m *transfer.Manifest, n int64) {
				started = true
				toSend.Store(n)
				if skipped > 0 {
					fmt.Fprintf(stderr, "share: %s: skipped %d %s: inside a directory share skips symbolic links and special files (name a link itself to share what it points to)\n",
						path, skipped, plural(skipped, "entry", "entries"))
				}
				if m.IsDir() && len(m.Files()) == 0 {
					fmt.Fprintf(stderr, "share: warning: %s holds no files; it is shared as an empty directory\n", path)
				}
				b = newBar(stderr, n, m.Name())
			},
			Progress: func(n int64) {
				sent.Add(n)
				b.add(n)
			},
		})
		if err != nil {
			b.abandon(stderr)
			progress := fmt.Sprintf("%s of %s", humanize.IBytes(uint64(sent.Load())), humanize.IBytes(uint64(toSend.Load())))
			if _, ok := interrupted(ctx); ok {
				if !started {
					return interruptedError{fmt.Sprintf("put %s: interrupted before any chunk was sent", path)}
				}
				return interruptedError{fmt.Sprintf("put %s: interrupted with %s confirmed by the server, which keeps what it received: run the same command again to send the rest", path, progress)}
			}
			err = fmt.Errorf("put %s: %w", path, localError(path, err))
			if started && sent.Load() > 0 {
				err = fmt.Errorf("%w\n  the server keeps the %s it received: run the same command again to send the rest", err, progress)
			}
			return hint(err, &o.client)
		}
		b.finish()
		fmt.Fprintln(stdout, info.ID)
	}
	return nil
}

// fileType names what a skipped directory entry is.
func fileType(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return "not a regular file or directory"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// localError drops the system call from an error about a local file, and
// the path when it is the one put names: "put f: stat f: no such file or
// directory" reads "put f: no such file or directory". errors.Is still
// matches the cause.
func localError(path string, err error) error {
	var pe *fs.PathError
	if !errors.As(err, &pe) || err != error(pe) {
		return err
	}
	if filepath.Clean(pe.Path) == filepath.Clean(path) {
		return pe.Err
	}
	return fmt.Errorf("%s: %w", pe.Path, pe.Err)
}

// retrying returns the callbacks that tell the user a transfer is waiting
// for its server and when it moves again (see transfer.Retry): once per run
// of failures.
func retrying(stderr io.Writer, op, server string, stall time.Duration) (retrying func(string, error, time.Duration), resumed func()) {
	return func(what string, err error, _ time.Duration) {
			fmt.Fprintf(stderr, "share: %s: %v\n  retrying until %s answers again; after %v without progress it gives up (--stall-timeout)\n",
				op, err, server, cmp.Or(stall, transfer.DefaultStallTimeout))
		}, func() {
			fmt.Fprintf(stderr, "share: %s: %s answers again; going on\n", op, server)
		}
}
