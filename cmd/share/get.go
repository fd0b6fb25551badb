package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
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
		Args: args(1, 1, "get ID [-o PATH]", "the share ID (as 'share put' or 'share ls' printed it)"),
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
	f.StringVar(&o.stallTimeout, "stall-timeout", transfer.DefaultStallTimeout.String(), "give up when no request succeeds and no data arrives for this long (a server restarting is waited for)")
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
	if err := checkOutput(o.out); err != nil {
		return err
	}
	c, err := o.client.client()
	if err != nil {
		return err
	}
	var b *bar
	var started atomic.Bool // the partial download is open
	var held, total int64   // bytes held, of the share's
	// A peer asked for a share it lacks looks for it in its swarm first:
	// say so rather than wait in silence.
	notice := time.AfterFunc(waitNotice, func() {
		if !started.Load() {
			fmt.Fprintf(stderr, "share: waiting for %s to start sending (a busy server, or a peer that lacks the share and looks for it in its swarm first, for up to its --fetch-timeout)\n", o.client.url)
		}
	})
	defer notice.Stop()
	retry := transfer.NewRetry(stall)
	retry.Retrying, retry.Resumed = retrying(stderr, "get "+id.String(), o.client.url, stall)
	out, stats, err := c.Get(ctx, id, transfer.GetOptions{
		Out:   o.out,
		Force: o.force,
		Retry: retry,
		Started: func(m *transfer.Manifest, h int64) {
			started.Store(true)
			held, total = h, m.Size()
			b = newBar(stderr, m.Size(), m.Name())
			b.set(h)
		},
		Download: transfer.DownloadOptions{
			MaxInFlight:  o.parallel,
			PerSource:    o.parallel,
			Limiter:      transfer.NewLimiter(o.downloadLimit),
			StallTimeout: stall,
			Progress: func(p transfer.Progress) {
				held = p.Bytes
				b.set(p.Bytes)
			},
			Logger: quietLogger(stderr),
		},
	})
	if err != nil {
		b.abandon(stderr)
		kept := fmt.Sprintf("%s of %s", humanize.IBytes(uint64(held)), humanize.IBytes(uint64(total)))
		if _, ok := interrupted(ctx); ok {
			if !started.Load() || held == 0 {
				return interruptedError{fmt.Sprintf("get %s: interrupted before any chunk was fetched", id)}
			}
			return interruptedError{fmt.Sprintf("get %s: interrupted; the %s fetched are kept: run the same command again to resume", id, kept)}
		}
		if errors.Is(err, transfer.ErrNotFound) && !started.Load() {
			return notFound(id, err, &o.client)
		}
		if !errors.Is(err, transfer.ErrExists) && !errors.Is(err, server.ErrUnauthorized) && !isConnRefused(err) {
			if why := peerDownloadError(ctx, c, id); why != "" { // a peer with no chunks to give says why
				err = fmt.Errorf("%w\n  the peer's download from the swarm: %s", err, strings.ReplaceAll(why, "\n", "\n  "))
			}
		}
		if started.Load() && held > 0 && !errors.Is(err, transfer.ErrExists) {
			err = fmt.Errorf("%w\n  the %s fetched are kept: run the same command again to resume", err, kept)
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

// waitNotice is how long get waits for a share's manifest before it says
// what it is waiting for.
const waitNotice = 2 * time.Second

// checkOutput checks get's -o before anything is fetched: the directory it
// names, or the one it would be written in, must exist.
func checkOutput(out string) error {
	if out == "" {
		return nil
	}
	dir := filepath.Dir(out)
	if strings.HasSuffix(out, "/") {
		dir = out // "-o DIR/": into DIR
	}
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("-o %s: the directory %s does not exist; create it first (mkdir -p %s) or name an existing one", out, dir, dir)
	case errors.Is(err, syscall.ENOTDIR) || err == nil && !fi.IsDir():
		return fmt.Errorf("-o %s: %s is not a directory", out, strings.TrimSuffix(dir, "/"))
	case err != nil:
		return fmt.Errorf("-o %s: %w", out, err)
	}
	return nil
}
