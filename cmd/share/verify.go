package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/sharefiles/share/server"
	"github.com/sharefiles/share/transfer"
)

type verifyOptions struct {
	client clientFlags
	json   bool
	ids    []string
	remote bool // --server or SHARE_SERVER was given: always ask that API
}

func newVerifyCmd(stdout, stderr io.Writer) *cobra.Command {
	var o verifyOptions
	cmd := &cobra.Command{
		Use:   "verify [ID...]",
		Short: "Scrub stored shares: read every chunk from disk and check its hash",
		Long: `Read every held chunk of the given shares (all shares if none) from disk and
check it against its hash, as the periodic scrub of 'share serve' and 'share peer'
(--scrub-interval) does. A chunk that fails is marked missing: the share becomes
partial and shows as damaged in 'share ls' and 'share status'. A peer fetches such
chunks again from its swarm; a server gets them back when the file is put again
('share put FILE').

With --server (or SHARE_SERVER) it asks that daemon. Otherwise it opens the data
directory (--data, SHARE_DATA or the default one) itself, or, if a daemon runs on
it, asks that daemon. It exits 1 if it found damage.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.ids = args
			o.remote = cmd.Flags().Changed("server") || os.Getenv("SHARE_SERVER") != ""
			return runVerify(cmd.Context(), o, stdout, stderr)
		},
	}
	o.client.register(cmd)
	cmd.Flags().BoolVar(&o.json, "json", false, "print one JSON result per share")
	return cmd
}

func runVerify(ctx context.Context, o verifyOptions, stdout, stderr io.Writer) error {
	ids := make([]transfer.ID, len(o.ids))
	for k, s := range o.ids {
		id, err := transfer.ParseID(s)
		if err != nil {
			return usageError{err}
		}
		ids[k] = id
	}
	var results []transfer.VerifyResult
	var err error
	where := o.client.server
	if !o.remote {
		data := cmp.Or(o.client.data, os.Getenv("SHARE_DATA"), defaultDataDir())
		if _, err := os.Stat(filepath.Join(data, "shares")); err != nil {
			return fmt.Errorf("verify: no share data directory at %s (%v): pass --data DIR", data, err)
		}
		// No daemon holds the data directory: verify it here.
		st, oerr := transfer.OpenStore(data, transfer.StoreOptions{Logger: quietLogger(stderr)})
		switch {
		case oerr == nil:
			where = data
			results, err = st.Verify(ctx, ids, nil)
			st.Close()
		case errors.Is(oerr, transfer.ErrInUse):
			o.remote = true // a daemon runs on it: ask it
		default:
			return oerr
		}
	}
	if o.remote {
		c, cerr := o.client.client()
		if cerr != nil {
			return cerr
		}
		where = o.client.url
		results, err = c.Verify(ctx, ids...)
		if errors.Is(err, server.ErrNotSupported) {
			err = fmt.Errorf("%w: the daemon at %s cannot verify its shares (an older version?)", err, o.client.server)
		}
	}
	if err != nil {
		if errors.Is(err, transfer.ErrNotFound) {
			return fmt.Errorf("verify: %w on %s", err, where)
		}
		return hint(fmt.Errorf("verify: %w", err), &o.client)
	}
	damaged := 0
	var repair []string // the put that repairs each damaged share of a server
	for _, r := range results {
		damaged += len(r.Damaged)
		if len(r.Damaged) > 0 {
			repair = append(repair, repairCommand(r))
		}
		if o.json {
			json.NewEncoder(stdout).Encode(r)
			continue
		}
		switch {
		case r.Error != "":
			fmt.Fprintf(stdout, "%s  %s: stopped after %d chunks: %s\n", r.ID, r.Name, r.Checked, r.Error)
		case len(r.Damaged) > 0:
			fmt.Fprintf(stdout, "%s  %s: %d of %d chunks damaged, marked missing: %s\n", r.ID, r.Name, len(r.Damaged), r.Checked, chunkList(r.Damaged))
		default:
			fmt.Fprintf(stdout, "%s  %s: %d chunks ok\n", r.ID, r.Name, r.Checked)
		}
	}
	if damaged > 0 {
		return fmt.Errorf("verify: %d damaged chunks found in %s and marked missing\n"+
			"  a peer fetches them again from its swarm; to repair a server's share, put the same content again:\n    %s",
			damaged, where, strings.Join(repair, "\n    "))
	}
	for _, r := range results {
		if r.Error != "" {
			return fmt.Errorf("verify: %s could not be checked to its end: %s", r.ID, r.Error)
		}
	}
	return nil
}

// repairCommand is the put that sends a damaged share's missing chunks
// again: the same content with the same chunk size gives the same ID, so
// a share put with a chunk size other than the default for its size needs
// --chunk-size to find it.
func repairCommand(r transfer.VerifyResult) string {
	cmd := "share put "
	if r.ChunkSize != 0 && r.ChunkSize != transfer.ChunkSizeFor(r.Size) {
		cmd += "--chunk-size " + sizeFlag(r.ChunkSize) + " "
	}
	return cmd + shellQuote(r.Name) + "   # " + r.ID.String()
}

// sizeFlag writes n bytes as --chunk-size reads it: 4MiB, 256KiB or 1000.
func sizeFlag(n int64) string {
	switch {
	case n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprint(n)
}

// chunkList shows chunk indexes, the first few of many.
func chunkList(l []int) string {
	const show = 10
	var b strings.Builder
	for k, i := range l {
		if k == show {
			fmt.Fprintf(&b, " and %d more", len(l)-show)
			break
		}
		if k > 0 {
			b.WriteString(" ")
		}
		fmt.Fprint(&b, i)
	}
	return b.String()
}

// scrubFlags are the periodic scrub's flags of the daemons.
type scrubFlags struct {
	interval time.Duration
	rate     transfer.Rate
}

func (f *scrubFlags) register(cmd *cobra.Command) {
	f.rate = transfer.DefaultScrubRate
	cmd.Flags().DurationVar(&f.interval, "scrub-interval", transfer.DefaultScrubInterval,
		"how often to read every stored chunk and check its hash (0: never; 'share verify' does it on demand)")
	cmd.Flags().Var(&f.rate, "scrub-rate", "cap on the scrub's disk reads, so transfers keep the disk and CPU")
}

// start runs the periodic scrub of st in the background; the returned
// function stops it and waits for it.
func (f *scrubFlags) start(ctx context.Context, st *transfer.Store, log *slog.Logger) (stop func()) {
	if f.interval <= 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := st.Scrub(ctx, f.interval, transfer.NewLimiter(f.rate)); err != nil && ctx.Err() == nil {
			log.Error("scrub stopped", "err", err)
		}
	})
	return func() { cancel(); wg.Wait() }
}

// shellQuote quotes s for a POSIX shell when it holds anything but
// letters, digits and -_./+,:@=%.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./+,:@=%", r)))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
