package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// pprofFlagHelp is the --pprof flag's help text, shared by serve and peer.
const pprofFlagHelp = "serve Go profiles (net/http/pprof) on this loopback address, e.g. 127.0.0.1:6060 (off by default; never on the API)"

// checkPprofAddr refuses a --pprof address that is not on loopback: the
// profiles expose the command line, the heap and every goroutine's stack,
// and need no token.
func checkPprofAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--pprof %q: want HOST:PORT on loopback, e.g. 127.0.0.1:6060", addr)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("--pprof %q: profiles are served on loopback only (127.0.0.1, ::1 or localhost): they reveal memory and stacks without a token", addr)
}

// pprofMux serves the profiles of net/http/pprof under /debug/pprof/, on a
// mux of its own: nothing of it is reachable through the API's listener.
func pprofMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// startPprof listens on addr (checked with checkPprofAddr) and serves the
// profiles until ctx is done. It returns the URL of the index and a function
// that stops the listener and waits for its goroutine.
func startPprof(ctx context.Context, addr string, log *slog.Logger) (url string, stop func(), err error) {
	if err := checkPprofAddr(addr); err != nil {
		return "", nil, usageError{err}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("--pprof: %w", err)
	}
	hs := &http.Server{
		Handler:           pprofMux(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("pprof listener stopped", "err", err)
		}
	}()
	stopCtx := context.AfterFunc(ctx, func() { hs.Close() })
	stop = func() {
		stopCtx()
		hs.Close()
		<-done
	}
	url = "http://" + ln.Addr().String() + "/debug/pprof/"
	log.Info("serving profiles", "url", url)
	return url, stop, nil
}
