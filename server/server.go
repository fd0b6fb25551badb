package server

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sharefiles/share/transfer"
)

// Backend is what the API serves. *transfer.Store is one; a peer provides
// another that also fetches from its swarm.
type Backend interface {
	List() []*transfer.Share
	Get(id transfer.ID) (*transfer.Share, error)
	Create(m *transfer.Manifest) (*transfer.Share, bool, error)
	Import(ctx context.Context, name string, r io.Reader, opts transfer.ImportOptions) (*transfer.Share, error)
	Remove(id transfer.ID) error
}

var _ Backend = (*transfer.Store)(nil)

// Fetcher is an optional Backend ability: getting a share it does not hold
// from elsewhere (a peer fetches it from its swarm). Only POST
// /v1/shares/{id}/fetch calls it, never a read. Fetch returns the share once
// its manifest is known and its download under way (or the share held
// already, complete or not); the download goes on after Fetch returns.
// An error that wraps transfer.ErrNotFound means no source was found.
type Fetcher interface {
	Fetch(ctx context.Context, id transfer.ID) (*transfer.Share, error)
}

// LocalBackend is an optional Backend ability: telling a client on this
// machine where the backend keeps a share's files, so that the client makes
// its output from them (hard link, reflink or in-kernel copy, with its own
// permissions) instead of receiving every byte again. A peer has it; a
// server does not, so that its clients always measure the transfer.
type LocalBackend interface {
	LocalCopy(id transfer.ID) (transfer.LocalCopy, error)
}

// Verifier is an optional Backend ability: a scrub, which re-reads and
// hashes every held chunk of the shares ids (all if none) and marks those
// that fail missing (transfer.Store.Verify). POST /v1/verify and POST
// /v1/shares/{id}/verify use it.
type Verifier interface {
	Verify(ctx context.Context, ids []transfer.ID, lim *transfer.Limiter) ([]transfer.VerifyResult, error)
}

var _ Verifier = (*transfer.Store)(nil)

// Statuser is an optional Backend ability: GET /v1/status answers its
// Status as JSON.
type Statuser interface {
	Status(ctx context.Context) any
}

// Limits and timeouts; Options fields of the same name override them.
const (
	DefaultMaxUploadSize       = 1 << 40          // 1 TiB per raw upload
	DefaultMaxUploads          = 32               // concurrent upload requests (raw files and chunks)
	DefaultSendSlots           = 8                // chunk responses sent at once (Options.SendSlots)
	SlotWait                   = 30 * time.Second // longest wait for a send slot (Options.SendSlots)
	DefaultShutdownGrace       = 30 * time.Second
	DefaultIdleTimeout         = 120 * time.Second // keep-alive connections
	DefaultTransferIdle        = 60 * time.Second  // a body that moves no byte for this long is cut
	readHeaderTimeout          = 10 * time.Second
	maxHeaderBytes             = 64 << 10
	closeWait                  = 5 * time.Second // after a forced close, for handlers to clean up
	sendPiece            int64 = 4 << 20         // sendfile pieces, between write deadline extensions
)

// Options configures a Server. Backend and Token are required; the zero value
// of every other field works.
type Options struct {
	Backend Backend
	// Token is the bearer token clients must present. Basic auth with the
	// token as password is accepted too, so browsers can prompt for it.
	Token string
	// PublicRead lets anyone list and download; writes still need the token.
	PublicRead bool
	// UploadLimit caps the share bytes the server sends, DownloadLimit those
	// it receives, across all requests. Nil: no cap.
	UploadLimit, DownloadLimit *transfer.Limiter
	MaxUploadSize              int64 // bytes per raw upload; 0: DefaultMaxUploadSize
	MaxUploads                 int   // concurrent uploads; 0: DefaultMaxUploads
	// SendSlots is how many chunk responses (GET /v1/shares/{id}/chunks/{n})
	// the server sends at once: its upload slots, as a BitTorrent client
	// unchokes a few peers rather than all. Further chunk requests wait for
	// a slot, first come first served, at most SlotWait (then they are sent
	// anyway), and a response gives its slot back after SlotWait even if its
	// client reads slowly. 0: DefaultSendSlots; negative: no limit.
	//
	// Why: N clients each keeping chunk requests in flight make N×depth TCP
	// flows on the server's uplink. On a slow uplink each flow's share is
	// less than a packet per round trip, the bottleneck's queue overflows,
	// and flows at a window of one or two packets recover from a loss only
	// by retransmission timeout: measured on the dsl profile, 64 clients
	// took 1.13x the bound. A few flows at a time keep the link as busy and
	// lose far less. The wait is reported to the client in a Server-Timing
	// header (metric "slot", dur in milliseconds: W3C Server Timing), so
	// that time in line does not pass for a longer round trip.
	SendSlots     int
	ChunkSize     int64 // chunk size of raw uploads; 0: transfer.ChunkSizeFor each upload's size
	ShutdownGrace time.Duration
	IdleTimeout   time.Duration
	TransferIdle  time.Duration
	// TLSCertFile and TLSKeyFile, if set, make Serve speak HTTPS.
	TLSCertFile, TLSKeyFile string
	// Uploads, if set, serves upload sessions (the /v1/uploads routes), which
	// the web page uses for resumable uploads. The caller opens and closes it.
	Uploads *transfer.Uploads
	// AllowedHosts, if set, turns on the Host and Origin check against DNS
	// rebinding: the host names (without port) a request's Host may name,
	// besides any IP address; others get 403. An Origin, if present, must
	// be this origin, an allowed name or a loopback address (checkHost).
	AllowedHosts []string
	Version      string
	Logger       *slog.Logger         // nil: slog.Default()
	Registry     *prometheus.Registry // nil: a new one, with Go and process collectors
}

// Server serves the API. Create it with New; it is safe for concurrent use.
type Server struct {
	opts      Options
	log       *slog.Logger
	tokenHash [32]byte
	uploads   chan struct{} // semaphore of MaxUploads
	slots     chan struct{} // semaphore of SendSlots; nil: no limit
	slotWait  time.Duration // SlotWait (tests shorten it)
	slotHold  time.Duration // SlotWait: a slot held this long is given back
	handler   http.Handler
	reg       *prometheus.Registry
	m         *metrics
	logins    loginSessions
	inflight  sync.WaitGroup // requests being handled
}

// New checks opts and returns a Server.
func New(opts Options) (*Server, error) {
	if opts.Backend == nil {
		return nil, errors.New("server: no backend")
	}
	if opts.Token == "" {
		return nil, errors.New("server: no token")
	}
	opts.MaxUploadSize = cmp.Or(opts.MaxUploadSize, DefaultMaxUploadSize)
	opts.MaxUploads = cmp.Or(opts.MaxUploads, DefaultMaxUploads)
	opts.ShutdownGrace = cmp.Or(opts.ShutdownGrace, DefaultShutdownGrace)
	opts.IdleTimeout = cmp.Or(opts.IdleTimeout, DefaultIdleTimeout)
	opts.TransferIdle = cmp.Or(opts.TransferIdle, DefaultTransferIdle)
	opts.SendSlots = cmp.Or(opts.SendSlots, DefaultSendSlots)
	if (opts.TLSCertFile == "") != (opts.TLSKeyFile == "") {
		return nil, errors.New("server: TLS needs both a certificate and a key")
	}
	s := &Server{
		opts:      opts,
		log:       opts.Logger,
		tokenHash: sha256.Sum256([]byte(opts.Token)),
		uploads:   make(chan struct{}, opts.MaxUploads),
		slotWait:  SlotWait,
		slotHold:  SlotWait,
		reg:       opts.Registry,
	}
	if opts.SendSlots > 0 {
		s.slots = make(chan struct{}, opts.SendSlots)
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
		s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	m, err := newMetrics(s.reg, opts.Backend)
	if err != nil {
		return nil, err
	}
	s.m = m
	s.handler = s.routes()
	return s, nil
}

// chunkSize is the chunk size of uploads that do not choose one.
// chunkSize is the chunk size of uploads that do not ask for one; 0: each
// share's default for its size (transfer.ChunkSizeFor).
func (s *Server) chunkSize() int64 { return s.opts.ChunkSize }

// Handler returns the API's handler, for tests and for embedding.
func (s *Server) Handler() http.Handler { return s.handler }

// Registry returns the registry the metrics are in.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Serve answers requests on ln until ctx is done, then shuts down gracefully:
// it stops accepting, lets requests in flight finish within ShutdownGrace,
// then cuts the rest off (an upload cut off leaves nothing behind) and waits
// briefly for their handlers to clean up. It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       s.opts.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		ConnContext:       withConn,
	}
	if s.opts.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(s.opts.TLSCertFile, s.opts.TLSKeyFile)
		if err != nil {
			ln.Close()
			return fmt.Errorf("server: TLS: %w", err)
		}
		hs.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, hs.TLSConfig)
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.log.Info("shutting down", "grace", s.opts.ShutdownGrace)
	sctx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownGrace)
	defer cancel()
	err := hs.Shutdown(sctx)
	if err != nil {
		s.log.Warn("grace period over; closing connections", "err", err)
		hs.Close()
		done := make(chan struct{})
		go func() { s.inflight.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(closeWait):
		}
	}
	<-errc // http.ErrServerClosed
	return nil
}

// metrics are the Prometheus series of one Server.
type metrics struct {
	requests  *prometheus.CounterVec   // by route and code
	duration  *prometheus.HistogramVec // by route
	sent      prometheus.Counter       // share bytes served
	received  prometheus.Counter       // share bytes received
	chunksOut prometheus.Counter
	chunksIn  prometheus.Counter
	badChunks prometheus.Counter
	active    *prometheus.GaugeVec // transfers in progress, by direction
}

func newMetrics(reg prometheus.Registerer, b Backend) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "share_http_requests_total", Help: "HTTP requests, by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "share_http_request_duration_seconds", Help: "HTTP request duration, by route.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"route"}),
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "share_bytes_served_total", Help: "Share bytes sent to clients (chunks, files, tar streams).",
		}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "share_bytes_received_total", Help: "Share bytes received from clients (uploads and chunks).",
		}),
		chunksOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "share_chunks_served_total", Help: "Chunks sent through the chunk route.",
		}),
		chunksIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "share_chunks_received_total", Help: "Chunks received, verified and stored.",
		}),
		badChunks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "share_bad_chunks_received_total", Help: "Uploaded chunks refused because they failed verification.",
		}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "share_active_transfers", Help: "Requests moving share bytes right now, by direction (send, receive), and chunk requests waiting for a send slot (wait).",
		}, []string{"direction"}),
	}
	shares := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "share_shares", Help: "Shares held, complete or partial.",
	}, func() float64 { return float64(len(b.List())) })
	collectors := []prometheus.Collector{m.requests, m.duration, m.sent, m.received, m.chunksOut, m.chunksIn, m.badChunks, m.active, shares}
	if d, ok := b.(interface{ DamagedChunks() int64 }); ok {
		collectors = append(collectors, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "share_damaged_chunks_total", Help: "Stored chunks found damaged on disk (they failed verification when read to be served, or in a scrub) and marked missing.",
		}, func() float64 { return float64(d.DamagedChunks()) }))
	}
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
