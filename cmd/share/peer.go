package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/sharefiles/share/node"
	"github.com/sharefiles/share/server"
	"github.com/sharefiles/share/transfer"
)

// The peer's local API is the server's handler with the node as its
// backend: these stop the build if the node no longer provides what the
// handler uses it for (the optional abilities are found by type assertion,
// so without these a lost method would only silently disable a route).
var (
	_ server.Backend      = (*node.Node)(nil)
	_ server.Fetcher      = (*node.Node)(nil) // GET of a share it lacks fetches it from the swarm
	_ server.Statuser     = (*node.Node)(nil) // GET /v1/status
	_ server.Verifier     = (*node.Node)(nil) // POST /v1/verify: share verify
	_ transfer.HaveWaiter = (*node.Node)(nil) // the have route's long poll
	_ server.LocalBackend = (*node.Node)(nil) // GET /v1/shares/{id}/local: share get on this machine uses the peer's copy
)

type peerOptions struct {
	listen        []string
	bootstrap     []string
	bootstrapFile string
	addrsFile     string
	mdns          bool
	api           string
	data          string
	token         string
	publicRead    bool
	uploadLimit   transfer.Rate
	downloadLimit transfer.Rate
	grace         time.Duration
	fetchTimeout  time.Duration
	partialTTL    time.Duration
	scrub         scrubFlags
	logLevel      string
	logFormat     string
	pprof         string
	trace         string
	net           peerNetFlags // private swarm and NAT traversal; see peernet.go
}

func newPeerCmd(stdout, stderr io.Writer) *cobra.Command {
	var o peerOptions
	cmd := &cobra.Command{
		Use:   "peer",
		Short: "Run a peer: find shares through a DHT, fetch them from many peers, serve what it has",
		Long: `Run a share peer: a libp2p host (TCP and QUIC on 7071) with a Kademlia DHT of
share's own. It announces every share it holds, fetches shares from every peer that
has them, and serves the chunks it has to others, also while downloading.

It prints its peer ID and its full addresses: pass one to --bootstrap of the next
peer. The same HTTP API as 'share serve' listens on --api (127.0.0.1:7070), so
'share put/get/ls/rm/status' work against a peer as against a server; 'share get'
makes the peer fetch the share from the swarm and streams it to you.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("listen") {
				o.listen = nil // node's default: without QUIC in a private swarm
			}
			return runPeer(cmd.Context(), o, stdout, stderr)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.listen, "listen", node.DefaultListen, "libp2p address to listen on (repeatable)")
	f.StringArrayVar(&o.bootstrap, "bootstrap", splitList(os.Getenv("SHARE_BOOTSTRAP")), "full address (/ip4/.../tcp/7071/p2p/ID) of a peer to join through (repeatable; env SHARE_BOOTSTRAP, comma separated)")
	f.StringVar(&o.bootstrapFile, "bootstrap-file", os.Getenv("SHARE_BOOTSTRAP_FILE"), "a file of bootstrap addresses, one per line, as --addrs-file writes it; waits up to a minute for it (env SHARE_BOOTSTRAP_FILE)")
	f.StringVar(&o.addrsFile, "addrs-file", "", "once started, write this peer's addresses for other hosts (not loopback) to this file")
	f.BoolVar(&o.mdns, "mdns", false, "also discover peers on the LAN with multicast DNS")
	f.StringVar(&o.api, "api", envOr("SHARE_API", "127.0.0.1:7070"), "address of the local HTTP API (env SHARE_API)")
	f.StringVar(&o.data, "data", defaultDataDir(), "data directory (env SHARE_DATA)")
	f.StringVar(&o.token, "token", os.Getenv("SHARE_TOKEN"), "API access token (env SHARE_TOKEN; default: generated and kept in the data directory)")
	f.BoolVar(&o.publicRead, "public-read", false, "let anyone reaching the API list and download without the token")
	f.Var(&o.uploadLimit, "upload-limit", "cap on chunk bytes sent to peers, e.g. 8MiB/s")
	f.Var(&o.downloadLimit, "download-limit", "cap on chunk bytes received from peers")
	f.DurationVar(&o.partialTTL, "partial-ttl", transfer.DefaultUploadTTL, "delete an unfinished upload (the web page's resumable uploads) after this long without a chunk")
	f.DurationVar(&o.grace, "grace", 10*time.Second, "on SIGINT/SIGTERM, how long API requests in flight may take to finish")
	f.DurationVar(&o.fetchTimeout, "fetch-timeout", node.DefaultFetchTimeout, "how long 'share get' of a share this peer lacks looks for a provider before it fails")
	o.scrub.register(cmd)
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&o.logFormat, "log-format", "text", "text or json")
	f.StringVar(&o.pprof, "pprof", "", pprofFlagHelp)
	f.StringVar(&o.trace, "trace", "", "write every chunk request, answer and send of this peer to this file, one JSON object a line (for finding where a swarm's time goes; see node.Options.Trace)")
	o.net.register(f)
	return cmd
}

// bootstrapFileWait is how long a peer waits for its --bootstrap-file: in a
// cluster started all at once, the bootstrap peer writes it a moment later.
const bootstrapFileWait = time.Minute

// readAddrsFile reads multiaddrs, one per line, waiting up to wait for the
// file to exist and hold at least one.
// waiting is called once, when the file is not there (or empty) at first.
func readAddrsFile(ctx context.Context, path string, wait time.Duration, waiting func()) ([]string, error) {
	deadline := time.Now().Add(wait)
	for first := true; ; first = false {
		b, err := os.ReadFile(path)
		if err == nil {
			var addrs []string
			for _, line := range strings.Split(string(b), "\n") {
				if line = strings.TrimSpace(line); strings.HasPrefix(line, "/") {
					addrs = append(addrs, line)
				}
			}
			if len(addrs) > 0 {
				return addrs, nil
			}
		} else if !os.IsNotExist(err) {
			return nil, err
		}
		if time.Now().After(deadline) {
			if err != nil {
				return nil, fmt.Errorf("--bootstrap-file %s: no such file after waiting %v: check the path, start the bootstrap peer with --addrs-file %s, or pass --bootstrap MULTIADDR", path, wait, path)
			}
			return nil, fmt.Errorf("--bootstrap-file %s: no address in it after waiting %v (want multiaddrs, one per line, as --addrs-file writes them)", path, wait)
		}
		if first && waiting != nil {
			waiting()
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// writeAddrsFile writes the addresses other hosts can dial (loopback ones
// left out, unless there are no others), atomically.
func writeAddrsFile(path string, addrs []ma.Multiaddr) error {
	var out, loop []string
	for _, a := range addrs {
		if manet.IsIPLoopback(a) {
			loop = append(loop, a.String())
		} else {
			out = append(out, a.String())
		}
	}
	if len(out) == 0 {
		out = loop
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return transfer.WriteFileAtomic(path, []byte(strings.Join(out, "\n")+"\n"), 0o644)
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func runPeer(ctx context.Context, o peerOptions, stdout, stderr io.Writer) error {
	log, err := newLogger(stderr, o.logLevel, o.logFormat)
	if err != nil {
		return err
	}
	if o.partialTTL <= 0 {
		return usageError{fmt.Errorf("--partial-ttl %v: want a positive duration, e.g. 24h", o.partialTTL)}
	}
	if o.bootstrapFile != "" {
		addrs, err := readAddrsFile(ctx, o.bootstrapFile, bootstrapFileWait, func() {
			fmt.Fprintf(stderr, "waiting up to %v for --bootstrap-file %s to hold addresses (the bootstrap peer writes it with --addrs-file)\n", bootstrapFileWait, o.bootstrapFile)
		})
		if err != nil {
			return err
		}
		o.bootstrap = append(o.bootstrap, addrs...)
	}
	if _, err := node.ParseBootstrap(o.bootstrap); err != nil {
		return usageError{err}
	}
	var nopts node.Options // swarm key, allow-list, relays first: they may refuse to start
	if err := o.net.apply(&nopts); err != nil {
		return err
	}
	api, err := parseListen("--api", o.api, "127.0.0.1")
	if err != nil {
		return usageError{err}
	}
	for _, s := range o.listen {
		if _, err := ma.NewMultiaddr(s); err != nil {
			return peerListenUsage(s, err)
		}
	}
	var pprofURL string
	if o.pprof != "" {
		url, stop, err := startPprof(ctx, o.pprof, log)
		if err != nil {
			return err
		}
		defer stop()
		pprofURL = url
	}
	st, token, err := openData(o.data, o.token, log)
	if err != nil {
		return err
	}
	defer st.Close()
	// The API's address first: if it is taken, nothing else starts.
	ln, err := net.Listen("tcp", api)
	if err != nil {
		return listenError("--api", api, err)
	}
	defer ln.Close()
	if err := checkPeerListen(o.listen); err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	nopts.Store = st
	nopts.DataDir = o.data
	nopts.Listen = o.listen
	nopts.Bootstrap = o.bootstrap
	nopts.MDNS = o.mdns
	nopts.UploadLimit = transfer.NewLimiter(o.uploadLimit)
	nopts.DownloadLimit = transfer.NewLimiter(o.downloadLimit)
	nopts.FetchTimeout = o.fetchTimeout
	nopts.UserAgent = "share/" + versionString()
	nopts.Logger = log
	nopts.Registry = reg
	if o.trace != "" {
		tf, err := os.OpenFile(o.trace, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("--trace: %w", err)
		}
		defer tf.Close()
		// Buffered: a swarm download writes a record per request, answer
		// and chunk; Close (deferred after the node's) flushes it.
		bw := bufio.NewWriterSize(tf, 64<<10)
		defer bw.Flush()
		nopts.Trace = slog.New(slog.NewJSONHandler(bw, nil)) // the handler serialises its writes
	}
	n, err := node.New(ctx, nopts)
	if err != nil {
		return err
	}
	defer n.Close()
	uploads, err := transfer.OpenUploads(st, transfer.UploadsOptions{
		Logger:    log,
		TTL:       o.partialTTL,
		Committed: func(sh *transfer.Share) { n.Announce(sh.ID()) },
	})
	if err != nil {
		return err
	}
	defer uploads.Close()
	srvOpts := server.Options{
		Backend:       n,
		Uploads:       uploads,
		Token:         token,
		PublicRead:    o.publicRead,
		ShutdownGrace: o.grace,
		Version:       versionString(),
		Logger:        log,
		Registry:      reg,
	}
	apiAddr := ln.Addr().(*net.TCPAddr)
	if apiAddr.IP.IsLoopback() {
		// A local API is reachable by every local process and, through DNS
		// rebinding, by web pages: accept only local names.
		srvOpts.AllowedHosts = []string{"127.0.0.1", "localhost", "::1", apiAddr.IP.String()}
	}
	srv, err := server.New(srvOpts)
	if err != nil {
		return usageError{err}
	}
	if o.addrsFile != "" { // before the lines that say the peer is ready
		if err := writeAddrsFile(o.addrsFile, n.Addrs()); err != nil {
			return err
		}
	}
	apiURL := "http://" + displayAddr(apiAddr)
	unregister, warning, err := registerDaemon(o.data, apiAddr, apiURL)
	if err != nil {
		return err
	}
	defer unregister()
	if warning != nil {
		log.Warn(warning.Error())
	}
	fmt.Fprintf(stdout, "share peer %s\n", n.ID())
	for _, a := range n.Addrs() {
		fmt.Fprintln(stdout, a)
	}
	fmt.Fprintf(stdout, "api:   %s\n", apiURL)
	if pprofURL != "" {
		fmt.Fprintf(stdout, "pprof: %s\n", pprofURL)
	}
	printData(stdout, o.data, token, o.token != "")
	defer o.scrub.start(ctx, st, log)()
	return srv.Serve(ctx, ln)
}
