package server

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/sharefiles/share/transfer"
)

// ClientOptions configures a Client. The zero value works against a server
// without auth... which does not exist: set Token.
type ClientOptions struct {
	Token string
	// TLSConfig, if set, is used for https URLs (e.g. a private CA).
	TLSConfig *tls.Config
	// HTTPClient, if set, replaces the tuned default (and TLSConfig).
	HTTPClient *http.Client
	UserAgent  string
}

// Client talks to a share server (or a peer's local API). It is a
// transfer.Source, and uploads and downloads whole shares. It is safe for
// concurrent use.
type Client struct {
	base    *url.URL
	token   string
	hc      *http.Client
	ua      string
	reached atomic.Bool // the server answered a request
}

var (
	_ transfer.Source     = (*Client)(nil)
	_ transfer.HaveWaiter = (*Client)(nil)
)

// NewClient returns a client of the server at base, e.g. http://127.0.0.1:7070.
func NewClient(base string, opts ClientOptions) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(base, "/"))
	if err != nil {
		return nil, fmt.Errorf("server URL %q: %w", base, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("server URL %q: want http://HOST:PORT or https://HOST:PORT", base)
	}
	hc := opts.HTTPClient
	if hc == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64 // one per chunk in flight
		t.DisableCompression = true
		t.ResponseHeaderTimeout = 60 * time.Second
		t.TLSClientConfig = opts.TLSConfig
		hc = &http.Client{Transport: t}
	}
	ua := opts.UserAgent
	if ua == "" {
		ua = "share"
	}
	return &Client{base: u, token: opts.Token, hc: hc, ua: ua}, nil
}

// String names the server, for messages.
func (c *Client) String() string { return c.base.String() }

// URL returns the absolute URL of an API path.
func (c *Client) URL(path string) string { return c.base.String() + path }

func sharePath(id transfer.ID, rest ...string) string {
	p := "/v1/shares/" + id.String()
	for _, r := range rest {
		p += "/" + r
	}
	return p
}

// do sends a request and returns the response if its status is 2xx; else
// the error the response carries. The caller closes the body.
func (c *Client) do(ctx context.Context, method, path string, body io.Reader, size int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = size
		if size == 0 {
			req.Body = http.NoBody
		}
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("User-Agent", c.ua)
	var conn net.Conn
	if method == http.MethodGet {
		req = req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			GotConn: func(ci httptrace.GotConnInfo) { conn = ci.Conn },
		}))
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		err = unwrapURLError(err)
		var dns *net.DNSError
		switch {
		case errors.Is(err, http.ErrSchemeMismatch):
			err = schemeMismatch{err}
		case errors.As(err, &dns) && dns.IsNotFound && c.reached.Load():
			// A name that resolved before and does not now is a server
			// that is away, not a typo: a stopped container's name leaves
			// Docker's DNS until it starts again. Transient, unlike an
			// unknown name (transfer.Permanent).
			return nil, fmt.Errorf("%s %s: %v (it answered before: it is away)", method, c.base.Host, err)
		}
		return nil, fmt.Errorf("%s %s: %w", method, c.base.Host, err)
	}
	c.reached.Store(true)
	if resp.StatusCode/100 != 2 {
		return nil, responseError(resp, method+" "+path)
	}
	// A download's body, over HTTP/1.x (one response at a time on the
	// connection), is read with the receive low-water mark of lowat.go:
	// over a slow line the bytes arrive a packet or two at a time.
	if resp.ProtoMajor == 1 && conn != nil {
		if lw := connLowWater(conn, resp.ContentLength); lw != nil {
			resp.Body = &lowWaterBody{resp.Body, lw}
		}
	}
	return resp, nil
}

// schemeMismatch is an https URL for a server that speaks plain HTTP: a
// refusal (transfer.ErrSourceRefused), since asking again cannot help.
type schemeMismatch struct{ error }

func (e schemeMismatch) Unwrap() error        { return e.error }
func (e schemeMismatch) Is(target error) bool { return target == transfer.ErrSourceRefused }

// unwrapURLError drops url.Error's repetition of the whole URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func (c *Client) getJSON(ctx context.Context, path string, v any) error {
	resp, err := c.do(ctx, http.MethodGet, path, nil, 0)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, transfer.MaxManifestSize)).Decode(v); err != nil {
		return fmt.Errorf("GET %s: the answer (%s) is not share's API: is %s a share server? (%v)", path, resp.Header.Get("Content-Type"), c.base, err)
	}
	return nil
}

// Reason returns the message a server sent with the error response that err
// wraps (its JSON "error"), or "" if err carries none.
func Reason(err error) string {
	var re *remoteError
	if errors.As(err, &re) {
		return re.msg
	}
	return ""
}

// Health checks that the server answers /healthz.
func (c *Client) Health(ctx context.Context) error {
	var h map[string]string
	if err := c.getJSON(ctx, "/healthz", &h); err != nil {
		return err
	}
	if h["status"] != "ok" {
		return fmt.Errorf("health: status %q", h["status"])
	}
	return nil
}

// Status decodes GET /v1/status into v: a ServerStatus from a server, a
// node.Status from a peer (see its "mode").
func (c *Client) Status(ctx context.Context, v any) error {
	return c.getJSON(ctx, "/v1/status", v)
}

// List returns the server's shares.
func (c *Client) List(ctx context.Context) ([]ShareInfo, error) {
	var lr ListResponse
	if err := c.getJSON(ctx, "/v1/shares", &lr); err != nil {
		return nil, err
	}
	return lr.Shares, nil
}

// Remove deletes a share.
func (c *Client) Remove(ctx context.Context, id transfer.ID) error {
	resp, err := c.do(ctx, http.MethodDelete, sharePath(id), nil, 0)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Manifest implements transfer.Source.
func (c *Client) Manifest(ctx context.Context, id transfer.ID) ([]byte, error) {
	resp, err := c.do(ctx, http.MethodGet, sharePath(id, "manifest"), nil, 0)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, transfer.MaxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if len(b) > transfer.MaxManifestSize {
		return nil, fmt.Errorf("manifest: %w", transfer.ErrTooLarge)
	}
	return b, nil
}

// Have implements transfer.Source.
func (c *Client) Have(ctx context.Context, id transfer.ID, n int) (transfer.Bitfield, error) {
	return c.have(ctx, id, n, sharePath(id, "have"))
}

// WaitHave implements transfer.HaveWaiter with the have route's long poll.
func (c *Client) WaitHave(ctx context.Context, id transfer.ID, n int, known uint32) (transfer.Bitfield, error) {
	return c.have(ctx, id, n, fmt.Sprintf("%s?known=%d&wait=%s", sharePath(id, "have"), known, transfer.HaveWaitTime))
}

func (c *Client) have(ctx context.Context, id transfer.ID, n int, path string) (transfer.Bitfield, error) {
	resp, err := c.do(ctx, http.MethodGet, path, nil, 0)
	if err != nil {
		return transfer.Bitfield{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, int64(n+7)/8+1))
	if err != nil {
		return transfer.Bitfield{}, fmt.Errorf("have: %w", err)
	}
	return transfer.ParseBitfield(n, b)
}

// OpenChunk implements transfer.Source.
func (c *Client) OpenChunk(ctx context.Context, id transfer.ID, i int) (io.ReadCloser, error) {
	resp, err := c.do(ctx, http.MethodGet, sharePath(id, "chunks", strconv.Itoa(i)), nil, 0)
	if err != nil {
		return nil, err
	}
	if d := slotWait(resp.Header.Values("Server-Timing")); d > 0 {
		return queuedBody{resp.Body, d}, nil
	}
	return resp.Body, nil
}

// queuedBody is a chunk response that waited d for a send slot
// (transfer.Queued).
type queuedBody struct {
	io.ReadCloser
	d time.Duration
}

func (q queuedBody) Queued() time.Duration { return q.d }

// slotWait returns the "slot" metric's duration from Server-Timing header
// values (W3C Server Timing: comma-separated metrics, each a name and
// ;-separated parameters; dur is in milliseconds), 0 if absent or malformed.
func slotWait(values []string) time.Duration {
	for _, v := range values {
		for metric := range strings.SplitSeq(v, ",") {
			name, params, _ := strings.Cut(metric, ";")
			if strings.TrimSpace(name) != "slot" {
				continue
			}
			for p := range strings.SplitSeq(params, ";") {
				k, val, _ := strings.Cut(p, "=")
				if strings.TrimSpace(k) != "dur" {
					continue
				}
				ms, err := strconv.ParseFloat(strings.Trim(strings.TrimSpace(val), `"`), 64)
				if err != nil || !(ms > 0 && ms <= float64(time.Hour/time.Millisecond)) {
					return 0
				}
				return time.Duration(ms * float64(time.Millisecond))
			}
		}
	}
	return 0
}

// CreateShare sends a manifest; the server makes the share, partial until
// its chunks are uploaded, or reports the one it has.
func (c *Client) CreateShare(ctx context.Context, m *transfer.Manifest) (ShareInfo, error) {
	resp, err := c.do(ctx, http.MethodPost, "/v1/shares", bytes.NewReader(m.Bytes()), int64(len(m.Bytes())))
	if err != nil {
		return ShareInfo{}, err
	}
	defer resp.Body.Close()
	var info ShareInfo
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return ShareInfo{}, fmt.Errorf("create share: bad response: %w", err)
	}
	if info.ID != m.ID() {
		return ShareInfo{}, fmt.Errorf("create share: server answered for %s, not %s", info.ID, m.ID())
	}
	return info, nil
}

// PutChunk uploads chunk i of share id, read from r (exactly n bytes).
func (c *Client) PutChunk(ctx context.Context, id transfer.ID, i int, r io.Reader, n int64) error {
	resp, err := c.do(ctx, http.MethodPut, sharePath(id, "chunks", strconv.Itoa(i)), r, n)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Upload sends a file as a raw body (as curl -T does) and returns the share.
func (c *Client) Upload(ctx context.Context, name string, r io.Reader, size int64) (ShareInfo, error) {
	resp, err := c.do(ctx, http.MethodPut, "/v1/shares/"+url.PathEscape(name), r, size)
	if err != nil {
		return ShareInfo{}, err
	}
	defer resp.Body.Close()
	var info ShareInfo
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return ShareInfo{}, fmt.Errorf("upload: bad response: %w", err)
	}
	return info, nil
}

// PutOptions configures Put. The zero value works.
type PutOptions struct {
	Build    transfer.BuildOptions
	Parallel int               // chunk uploads in flight; 0: DefaultParallel
	Limiter  *transfer.Limiter // upload cap; nil: none
	// Started, if set, is called once the server said which chunks it
	// lacks, with the bytes to send.
	Started func(m *transfer.Manifest, toSend int64)
	// Progress, if set, is called after each chunk with its size; from
	// several goroutines at once.
	Progress     func(n int64)
	StallTimeout time.Duration // no request succeeding for this long ends the upload; 0: transfer.DefaultStallTimeout
	// Retrying, if set, is told when a request failed and will be retried
	// (see transfer.Retry.Retrying).
	Retrying func(what string, err error, wait time.Duration)
	Resumed  func() // see transfer.Retry.Resumed
}

// DefaultParallel is how many chunk requests a client keeps in flight.
const DefaultParallel = 8

// Put uploads the file or directory at path: it hashes it into a manifest,
// sends the manifest, then the chunks the server lacks, in parallel. An
// interrupted Put resumes where it stopped when run again, and a share the
// server already has costs one request. Every request is retried under the
// one policy of a transfer (transfer.Retry): a server that restarts at any
// point, the first request included, is waited for until the upload has
// made no progress for StallTimeout.
func (c *Client) Put(ctx context.Context, path string, opts PutOptions) (ShareInfo, error) {
	m, err := transfer.BuildManifest(ctx, path, opts.Build)
	if err != nil {
		return ShareInfo{}, err
	}
	retry := transfer.NewRetry(opts.StallTimeout)
	retry.Retrying, retry.Resumed = opts.Retrying, opts.Resumed
	var info ShareInfo
	create := func(ctx context.Context) (err error) {
		info, err = c.CreateShare(ctx, m)
		return err
	}
	if err := retry.Do(ctx, "POST manifest", create); err != nil {
		return ShareInfo{}, err
	}
	if info.Complete {
		if opts.Started != nil {
			opts.Started(m, 0)
		}
		return info, nil
	}
	var have transfer.Bitfield
	if err := retry.Do(ctx, "GET have", func(ctx context.Context) (err error) {
		have, err = c.Have(ctx, m.ID(), m.NumChunks())
		return err
	}); err != nil {
		return ShareInfo{}, err
	}
	var toSend int64
	for i := range m.NumChunks() {
		if !have.Has(i) {
			toSend += int64(m.ChunkLen(i))
		}
	}
	if opts.Started != nil {
		opts.Started(m, toSend)
	}
	local, err := transfer.OpenLocal(path, m)
	if err != nil {
		return ShareInfo{}, err
	}
	defer local.Close()

	parallel := cmp.Or(opts.Parallel, DefaultParallel)
	bufs := make(chan []byte, parallel)
	for range parallel {
		bufs <- make([]byte, m.ChunkSize())
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for i := range m.NumChunks() {
		if have.Has(i) {
			continue
		}
		g.Go(func() error {
			buf := <-bufs
			defer func() { bufs <- buf }()
			p := buf[:m.ChunkLen(i)]
			if err := local.ReadChunk(i, p); err != nil {
				return err
			}
			err := retry.Do(gctx, fmt.Sprintf("PUT chunk %d", i), func(ctx context.Context) error {
				return c.PutChunk(ctx, m.ID(), i, opts.Limiter.Reader(ctx, bytes.NewReader(p)), int64(len(p)))
			})
			if errors.Is(err, transfer.ErrBadChunk) {
				return fmt.Errorf("chunk %d: the server refused it: %w (did a file change after it was hashed?)", i, err)
			}
			if err != nil {
				return err
			}
			if opts.Progress != nil {
				opts.Progress(int64(len(p)))
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return ShareInfo{}, err
	}
	if err := retry.Do(ctx, "POST manifest", create); err != nil {
		return ShareInfo{}, err
	}
	if !info.Complete {
		return info, fmt.Errorf("upload %s: server holds %d of %d chunks after upload", m.ID(), info.Have, info.Chunks)
	}
	return info, nil
}

// Fetch asks a peer to get share id from its swarm (POST
// /v1/shares/{id}/fetch) and returns the share's info once its download is
// under way. A server answers ErrNotSupported; a peer that finds no
// provider, an error wrapping transfer.ErrNotFound.
func (c *Client) Fetch(ctx context.Context, id transfer.ID) (ShareInfo, error) {
	resp, err := c.do(ctx, http.MethodPost, sharePath(id, "fetch"), nil, 0)
	if err != nil {
		return ShareInfo{}, err
	}
	defer resp.Body.Close()
	var info ShareInfo
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxErrorBody)).Decode(&info); err != nil {
		return ShareInfo{}, fmt.Errorf("fetch: bad response: %w", err)
	}
	return info, nil
}

// holds reports whether the server holds share id (complete or not), with a
// HEAD of its manifest.
func (c *Client) holds(ctx context.Context, id transfer.ID) (bool, error) {
	resp, err := c.do(ctx, http.MethodHead, sharePath(id, "manifest"), nil, 0)
	switch {
	case err == nil:
		resp.Body.Close()
		return true, nil
	case errors.Is(err, transfer.ErrNotFound):
		return false, nil
	}
	return false, err
}

// LocalCopy implements transfer.LocalSource: where a peer on this machine
// keeps share id (GET /v1/shares/{id}/local).
func (c *Client) LocalCopy(ctx context.Context, id transfer.ID) (transfer.LocalCopy, error) {
	var lc transfer.LocalCopy
	err := c.getJSON(ctx, sharePath(id, "local"), &lc)
	return lc, err
}

var _ transfer.LocalSource = (*Client)(nil)

// Local reports whether the client talks to a daemon on this machine's
// loopback, which may keep shares on this machine's disks.
func (c *Client) Local() bool {
	ip := net.ParseIP(c.base.Hostname())
	return c.base.Hostname() == "localhost" || (ip != nil && ip.IsLoopback())
}

// Verify asks the server to scrub the shares ids (all if none): to read
// every held chunk from disk and hash it, marking those that fail missing.
// It returns one result per share.
func (c *Client) Verify(ctx context.Context, ids ...transfer.ID) ([]transfer.VerifyResult, error) {
	paths := []string{"/v1/verify"}
	if len(ids) > 0 {
		paths = paths[:0]
		for _, id := range ids {
			paths = append(paths, sharePath(id, "verify"))
		}
	}
	var results []transfer.VerifyResult
	for _, p := range paths {
		resp, err := c.do(ctx, http.MethodPost, p, nil, 0)
		if err != nil {
			return results, err
		}
		dec := json.NewDecoder(io.LimitReader(resp.Body, 1<<30))
		for {
			var res transfer.VerifyResult
			if err := dec.Decode(&res); err == io.EOF {
				break
			} else if err != nil {
				resp.Body.Close()
				return results, fmt.Errorf("verify: bad response: %w", err)
			}
			if res.ID.IsZero() {
				resp.Body.Close()
				return results, fmt.Errorf("verify: %s", res.Error)
			}
			results = append(results, res)
		}
		resp.Body.Close()
	}
	return results, nil
}

// Get downloads share id into opts.Out (see transfer.Get), resuming an
// interrupted download of the same output. If the server does not hold the
// share and is a peer, it asks the peer to fetch it first (Fetch), then
// takes the chunks as the peer stores them; from a peer on this machine, it
// makes the output from the peer's own copy (transfer.LocalSource) unless
// opts.Local is already set.
func (c *Client) Get(ctx context.Context, id transfer.ID, opts transfer.GetOptions) (string, transfer.Stats, error) {
	if opts.Local == nil && c.Local() {
		opts.Local = c
	}
	if opts.Retry == nil {
		opts.Retry = transfer.NewRetry(opts.Download.StallTimeout)
	}
	var held bool
	if err := opts.Retry.Do(ctx, "HEAD manifest", func(ctx context.Context) (err error) {
		held, err = c.holds(ctx, id)
		return err
	}); err != nil {
		return "", transfer.Stats{}, err
	}
	if !held {
		if err := opts.Retry.Do(ctx, "POST fetch", func(ctx context.Context) error {
			_, err := c.Fetch(ctx, id)
			if errors.Is(err, ErrNotSupported) { // a server, which cannot fetch
				err = fmt.Errorf("%w: %s is not on %s", transfer.ErrNotFound, id, c)
			}
			return err
		}); err != nil {
			return "", transfer.Stats{}, err
		}
	}
	return transfer.Get(ctx, id, opts, c)
}
