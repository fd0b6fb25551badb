package main

import (
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/sharefiles/share/transfer"
	"github.com/spf13/cobra"
)

// parseChunkSize parses --chunk-size: "auto" (0: chosen from each share's
// size, see transfer.ChunkSizeFor) or a size within the chunk limits.
func parseChunkSize(s string) (int64, error) {
	if s == "auto" {
		return 0, nil
	}
	cs, err := transfer.ParseSize(s)
	if err != nil || cs < transfer.MinChunkSize || cs > transfer.MaxChunkSize {
		return 0, fmt.Errorf("--chunk-size %q: want auto or %d to %d bytes", s, transfer.MinChunkSize, transfer.MaxChunkSize)
	}
	return cs, nil
}

// parseDuration parses a Go duration; "0" means none.
func parseDuration(s string) (time.Duration, error) {
	if s == "0" {
		return 0, nil
	}
	return time.ParseDuration(s)
}

// quietLogger logs warnings and errors of library code to stderr, so a
// client command shows what went wrong (a dropped source) and nothing else.
func quietLogger(stderr io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// args checks a command's arguments: at least min, at most max (-1: no
// bound), and says what to give when they are wrong, unlike cobra's
// "accepts 1 arg(s), received 0".
func args(min, max int, usage, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		switch {
		case len(a) < min:
			return usageError{fmt.Errorf("%s: missing %s; usage: share %s", cmd.Name(), what, usage)}
		case max >= 0 && len(a) > max:
			return usageError{fmt.Errorf("%s: %d arguments, want %s (to name several, run it once for each); usage: share %s", cmd.Name(), len(a), what, usage)}
		}
		return nil
	}
}

// noArgs refuses arguments, naming the first one.
func noArgs(cmd *cobra.Command, a []string) error {
	if len(a) > 0 {
		return usageError{fmt.Errorf("%s takes no arguments, got %q; see 'share %s --help'", cmd.Name(), a[0], cmd.Name())}
	}
	return nil
}
