package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sharefiles/share/server"
	"github.com/sharefiles/share/transfer"
)

type serveOptions struct {
	listen        string
	data          string
	token         string
	publicRead    bool
	tlsCert       string
	tlsKey        string
	uploadLimit   transfer.Rate
	downloadLimit transfer.Rate
	maxUpload     string
	sendSlots     int
	maxUploads    int
	chunkSize     string
	grace         time.Duration
	partialTTL    time.Duration
	scrub         scrubFlags
	logLevel      string
	logFormat     string
	pprof         string
	allowedHosts  []string
}

func newServeCmd(stdout, stderr io.Writer) *cobra.Command {
	var o serveOptions
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a share server",
		Long: `Run a share server: an HTTP API that share's clients, curl and browsers use.
With no flags it listens on :7070, keeps data in the XDG data directory, and
generates an access token on first start, which it keeps there and prints.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runServe(cmd.Context(), o, stdout, stderr)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", envOr("SHARE_LISTEN", ":7070"), "address to listen on (env SHARE_LISTEN)")
	f.StringVar(&o.data, "data", defaultDataDir(), "data directory (env SHARE_DATA)")
	f.StringVar(&o.token, "token", os.Getenv("SHARE_TOKEN"), "access token (env SHARE_TOKEN; default: generated on first start and kept in the data directory)")
	f.BoolVar(&o.publicRead, "public-read", false, "let anyone list and download without the token")
	f.StringArrayVar(&o.allowedHosts, "allowed-host", splitList(os.Getenv("SHARE_ALLOWED_HOSTS")), "a host name clients use to reach the server (repeatable; env SHARE_ALLOWED_HOSTS, comma separated): requests naming another in Host or Origin get 403, against DNS rebinding; always on when listening on loopback")
	f.StringVar(&o.tlsCert, "tls-cert", "", "TLS certificate file (PEM); serve HTTPS")
	f.StringVar(&o.tlsKey, "tls-key", "", "TLS private key file (PEM)")
	f.Var(&o.uploadLimit, "upload-limit", "cap on share bytes sent, e.g. 20MiB/s or 100Mbit/s")
	f.Var(&o.downloadLimit, "download-limit", "cap on share bytes received")
	f.StringVar(&o.maxUpload, "max-upload", "1TiB", "largest share a client may upload")
	f.IntVar(&o.maxUploads, "max-uploads", server.DefaultMaxUploads, "uploads in progress at once; more get 503")
	f.IntVar(&o.sendSlots, "send-slots", server.DefaultSendSlots, "chunk responses sent at once (upload slots); further chunk requests wait their turn, at most 30s (-1: no limit)")
	f.StringVar(&o.chunkSize, "chunk-size", "auto", "chunk size of files uploaded with PUT /v1/shares/NAME (auto: from each file's size)")
	f.DurationVar(&o.partialTTL, "partial-ttl", transfer.DefaultUploadTTL, "delete an unfinished upload (a chunked upload of 'share put', or the web page's resumable upload) after this long without a chunk")
	f.DurationVar(&o.grace, "grace", server.DefaultShutdownGrace, "on SIGINT/SIGTERM, how long requests in flight may take to finish")
	o.scrub.register(cmd)
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error (debug logs every chunk request)")
	f.StringVar(&o.logFormat, "log-format", "text", "text or json")
	f.StringVar(&o.pprof, "pprof", "", pprofFlagHelp)
	return cmd
}

func runServe(ctx context.Context, o serveOptions, stdout, stderr io.Writer) error {
	log, err := newLogger(stderr, o.logLevel, o.logFormat)
	if err != nil {
		return err
	}
	maxUpload, err := transfer.ParseSize(o.maxUpload)
	if err != nil {
		return usageError{fmt.Errorf("--max-upload: %w", err)}
	}
	if o.partialTTL <= 0 {
		return usageError{fmt.Errorf("--partial-ttl %v: want a positive duration, e.g. 24h", o.partialTTL)}
	}
	chunkSize, err := parseChunkSize(o.chunkSize)
	if err != nil {
		return usageError{err}
	}
	for _, h := range o.allowedHosts {
		if h == "" || strings.ContainsAny(h, "/:[] ") && net.ParseIP(strings.Trim(h, "[]")) == nil {
			return usageError{fmt.Errorf("--allowed-host %q: give a host name, without scheme or port (e.g. files.example.org)", h)}
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
	listen, err := parseListen("--listen", o.listen, "")
	if err != nil {
		return usageError{err}
	}
	if o.tlsCert != "" && o.tlsKey != "" { // before it says it listens
		if _, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey); err != nil {
			return fmt.Errorf("--tls-cert %s --tls-key %s: %w", o.tlsCert, o.tlsKey, err)
		}
	}
	st, token, err := openData(o.data, o.token, log)
	if err != nil {
		return err
	}
	defer st.Close()
	uploads, err := transfer.OpenUploads(st, transfer.UploadsOptions{Logger: log, TTL: o.partialTTL})
	if err != nil {
		return err
	}
	defer uploads.Close()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return listenError("--listen", listen, err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	srvOpts := server.Options{
		Backend:       st,
		Uploads:       uploads,
		Token:         token,
		PublicRead:    o.publicRead,
		UploadLimit:   transfer.NewLimiter(o.uploadLimit),
		DownloadLimit: transfer.NewLimiter(o.downloadLimit),
		MaxUploadSize: maxUpload,
		MaxUploads:    o.maxUploads,
		SendSlots:     o.sendSlots,
		ChunkSize:     chunkSize,
		ShutdownGrace: o.grace,
		TLSCertFile:   o.tlsCert,
		TLSKeyFile:    o.tlsKey,
		Version:       versionString(),
		Logger:        log,
	}
	if addr.IP.IsLoopback() || len(o.allowedHosts) > 0 {
		// Against DNS rebinding: a web page can make a browser send
		// requests here, but only with its own name as Host and Origin.
		srvOpts.AllowedHosts = append(localHosts(addr.IP), o.allowedHosts...)
	}
	srv, err := server.New(srvOpts)
	if err != nil {
		ln.Close()
		return usageError{err}
	}
	scheme := "http"
	if o.tlsCert != "" {
		scheme = "https"
	}
	url := scheme + "://" + displayAddr(addr)
	unregister, warning, err := registerDaemon(o.data, addr, url)
	if err != nil {
		ln.Close()
		return err
	}
	defer unregister()
	if warning != nil {
		log.Warn(warning.Error())
	}
	fmt.Fprintf(stdout, "share server listening on %s\n", url)
	printAddrs(stdout, scheme, o.listen, addr, srvOpts.AllowedHosts)
	if pprofURL != "" {
		fmt.Fprintf(stdout, "pprof: %s\n", pprofURL)
	}
	printData(stdout, o.data, token, o.token != "")
	fmt.Fprintf(stdout, "try:   share put FILE   or   curl -T FILE -H 'Authorization: Bearer TOKEN' %s/v1/shares/NAME\n", url)
	log.Info("serving", "addr", ln.Addr().String(), "data", o.data, "shares", len(st.List()),
		"public_read", o.publicRead, "upload_limit", o.uploadLimit, "download_limit", o.downloadLimit)
	defer o.scrub.start(ctx, st, log)()
	defer expireUploads(ctx, st, o.partialTTL)()
	return srv.Serve(ctx, ln)
}

// localHosts are the Host names a server on ip answers to when it checks
// them: this machine's loopback names, and ip itself.
func localHosts(ip net.IP) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if name, err := os.Hostname(); err == nil && name != "" {
		hosts = append(hosts, strings.ToLower(name)) // Debian maps it to 127.0.1.1
	}
	if !slices.Contains(hosts, ip.String()) {
		hosts = append(hosts, ip.String())
	}
	return hosts
}

// printAddrs says where a server listening on addr can be reached: on all
// interfaces, each address of this machine (as dufs does; link-local ones
// need a zone and are left out); and which Host names it accepts, if it
// checks them.
func printAddrs(w io.Writer, scheme, listen string, addr *net.TCPAddr, allowed []string) {
	if addr.IP.IsUnspecified() {
		fmt.Fprintf(w, "on all interfaces (--listen %s), at this machine's addresses:\n", listen)
		ifaddrs, _ := net.InterfaceAddrs()
		for _, a := range ifaddrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() || (addr.IP.To4() != nil && ipn.IP.To4() == nil) {
				continue
			}
			fmt.Fprintf(w, "  %s://%s\n", scheme, net.JoinHostPort(ipn.IP.String(), fmt.Sprint(addr.Port)))
		}
	}
	if len(allowed) > 0 {
		fmt.Fprintf(w, "hosts: %s and IP addresses (--allowed-host adds names)\n", strings.Join(allowed, ", "))
	}
}

// expireUploads removes abandoned chunked uploads (transfer.Store.
// ExpirePartial: partial shares whose manifest was posted and whose chunks
// stopped coming) in the background, checking every tenth of ttl (at most
// hourly); the returned function stops it and waits for it. The web page's
// upload sessions expire on their own (transfer.Uploads).
func expireUploads(ctx context.Context, st *transfer.Store, ttl time.Duration) (stop func()) {
	if ttl <= 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(min(max(ttl/10, time.Second), time.Hour))
		defer t.Stop()
		for {
			st.ExpirePartial(ttl)
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() { cancel(); <-done }
}

// displayAddr is a URL host for a listener: loopback when it listens on all
// interfaces, since that is what works from this machine.
func displayAddr(a *net.TCPAddr) string {
	if a.IP == nil || a.IP.IsUnspecified() {
		return fmt.Sprintf("127.0.0.1:%d", a.Port)
	}
	return a.String()
}

// openData prepares a daemon's data directory: it creates it, finds the
// API token (see loadToken) and opens the store, which locks the directory.
func openData(dir, givenToken string, log *slog.Logger) (*transfer.Store, string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", err
	}
	token, err := loadToken(dir, givenToken)
	if err != nil {
		return nil, "", err
	}
	st, err := transfer.OpenStore(dir, transfer.StoreOptions{Logger: log})
	if errors.Is(err, transfer.ErrInUse) {
		api := ""
		if u, err := readAPIFile(dir); err == nil {
			api = " (its API: " + u + ")"
		}
		return nil, "", fmt.Errorf("%w%s\n  stop that one, or give this one a data directory of its own: --data DIR", err, api)
	}
	if err != nil {
		return nil, "", err
	}
	return st, token, nil
}

// printData prints a daemon's data directory and its token, unless the
// token came from the command line or the environment.
func printData(stdout io.Writer, dir, token string, given bool) {
	fmt.Fprintf(stdout, "data:  %s\n", dir)
	if given {
		fmt.Fprintf(stdout, "token: (from --token or SHARE_TOKEN)\n")
	} else {
		fmt.Fprintf(stdout, "token: %s\n", token)
	}
}

// loadToken returns the token to require: the given one, else the one kept
// in the data directory, else a new one, which it keeps there (0600).
func loadToken(dataDir, given string) (string, error) {
	if given != "" {
		return given, nil
	}
	path := filepath.Join(dataDir, tokenFile)
	if b, err := os.ReadFile(path); err == nil {
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, nil
		}
	}
	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	token := base64.RawURLEncoding.EncodeToString(raw[:])
	if err := transfer.WriteFileAtomic(path, []byte(token+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("keep token: %w", err)
	}
	return token, nil
}
