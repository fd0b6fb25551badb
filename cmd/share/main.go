// Command share moves files and directories between machines, through a
// central server (share serve) or, in the peer mode, a libp2p swarm. This
// package is the CLI only: flags, output, signals, logging and exit codes.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the command failed
	exitUsage = 2 // bad flags or arguments
	// A client command ended by a signal exits 128 + the signal's number,
	// as a shell reports a process killed by it: 130 for SIGINT (Ctrl-C),
	// 143 for SIGTERM. serve and peer, whose normal way to stop is a
	// signal, shut down gracefully and exit 0; a second signal during their
	// shutdown ends them at once with 128 + its number.
	exitSignal = 128
)

func main() {
	ctx, stop := notifySignals(os.Stderr)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// signalled is the cause of a context cancelled by a signal.
type signalled struct{ sig syscall.Signal }

func (s signalled) Error() string { return "interrupted (" + signalName(s.sig) + ")" }

func signalName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return sig.String()
}

// notifySignals returns a context that the first SIGINT or SIGTERM cancels
// with a signalled cause. A second one ends the process at once with its
// exit code: a user who presses Ctrl-C twice does not wait for a graceful
// shutdown. stop stops the handling.
func notifySignals(stderr io.Writer) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		first := true
		for {
			select {
			case s := <-ch:
				sig := s.(syscall.Signal)
				if first {
					first = false
					cancel(signalled{sig})
					continue
				}
				fmt.Fprintf(stderr, "share: %s again: stopping now\n", signalName(sig))
				os.Exit(exitSignal + int(sig))
			case <-done:
				return
			}
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel(nil)
	}
}

// interrupted returns the signal that cancelled ctx, if one did.
func interrupted(ctx context.Context) (syscall.Signal, bool) {
	var s signalled
	if ctx.Err() != nil && errors.As(context.Cause(ctx), &s) {
		return s.sig, true
	}
	return 0, false
}

// usageError marks errors in how the command was called.
type usageError struct{ error }

// run executes the CLI and returns its exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	sig, bySignal := interrupted(ctx)
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, new(usageError)) || isCobraUsage(err):
		fmt.Fprintf(stderr, "share: %v\nRun 'share --help' for usage.\n", err)
		return exitUsage
	case bySignal:
		// Commands that can say more (what was kept, whether to run again)
		// return an interruptedError that says it; for the others, whatever
		// failed, failed because of the signal.
		if !errors.As(err, new(interruptedError)) {
			err = errors.New("interrupted")
		}
		fmt.Fprintf(stderr, "share: %v\n", err)
		return exitSignal + int(sig)
	default:
		fmt.Fprintf(stderr, "share: %v\n", err)
		return exitError
	}
}

// interruptedError is what a command that was interrupted reports: what it
// did and what a rerun does.
type interruptedError struct{ msg string }

func (e interruptedError) Error() string { return e.msg }

// isCobraUsage recognizes cobra's own argument and flag errors.
func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand", "accepts ", "requires at least", "invalid argument", "flag needs an argument", "required flag"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "share",
		Short: "Move files and directories between machines, client-server or peer-to-peer",
		Long: `share moves files and directories between machines in chunks that are verified
against a content ID. Run 'share serve' on one machine, then 'share put FILE' and
'share get ID' anywhere. Client commands talk to --server (SHARE_SERVER,
default http://127.0.0.1:7070) with --token (SHARE_TOKEN; read from the local data
directory when the server runs on this machine).`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		newServeCmd(stdout, stderr),
		newPeerCmd(stdout, stderr),
		newKeygenCmd(stdout),
		newStatusCmd(stdout, stderr),
		newBenchCmd(stdout, stderr),
		newPutCmd(stdout, stderr),
		newGetCmd(stdout, stderr),
		newLsCmd(stdout, stderr),
		newRmCmd(stdout, stderr),
		newVerifyCmd(stdout, stderr),
		newHealthCmd(stdout, stderr),
		newVersionCmd(stdout),
		newFloodCmd(stdout),
	)
	return root
}

// newLogger returns the process logger: text or JSON on stderr, at level.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", level)}
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageError{fmt.Errorf("--log-format %q: want text or json", format)}
}

// envOr returns the environment variable key, or def if it is unset or empty.
func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
