package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sharefiles/share/server/ui"
	"github.com/sharefiles/share/transfer"
)

// access is what a route needs.
type access int

const (
	public access = iota // anyone
	read                 // the token, or PublicRead
	write                // the token
)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, need access, h http.HandlerFunc) {
		mux.Handle(pattern, s.authorize(need, h))
	}
	handle("GET /healthz", public, s.health)
	mux.Handle("GET /metrics", s.authorize(read, promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{})))
	handle("GET /{$}", public, s.page)
	mux.Handle("GET /ui/", ui.Assets())
	handle("POST /login", public, s.login)
	handle("POST /logout", public, s.logout)
	handle("GET /v1/session", public, s.sessionInfo)
	handle("GET /v1/status", read, s.status)
	handle("GET /v1/shares", read, s.list)
	handle("POST /v1/shares", write, s.create)
	handle("PUT /v1/shares/{name}", write, s.upload)
	handle("GET /v1/shares/{id}", read, s.content)
	handle("DELETE /v1/shares/{id}", write, s.remove)
	handle("GET /v1/shares/{id}/manifest", read, s.manifest)
	handle("GET /v1/shares/{id}/have", read, s.have)
	handle("GET /v1/shares/{id}/chunks/{n}", read, s.getChunk)
	handle("PUT /v1/shares/{id}/chunks/{n}", write, s.putChunk)
	handle("POST /v1/shares/{id}/fetch", write, s.fetch)
	handle("GET /v1/shares/{id}/local", write, s.local)
	s.uploadRoutes(handle)
	handle("POST /v1/verify", write, s.verify)
	handle("POST /v1/shares/{id}/verify", write, s.verify)
	return s.observe(s.checkHost(sanitize(mux)))
}

// sanitize refuses, with 400, API paths whose elements are not valid names
// once unescaped: "..", ".", empty elements ("//"), encoded slashes or
// backslashes, NUL and control characters. It runs before the mux, which
// would otherwise answer such paths with a redirect to a cleaned path.
func sanitize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.EscapedPath()
		if strings.HasPrefix(p, "/v1/") {
			for elem := range strings.SplitSeq(strings.TrimPrefix(p, "/"), "/") {
				name, err := url.PathUnescape(elem)
				if err != nil {
					err = fmt.Errorf("%w: path element %q: bad %%-escape", transfer.ErrBadName, truncate(elem, 64))
				} else if err = transfer.ValidName(name); err != nil {
					err = fmt.Errorf("path element %q: %w", truncate(elem, 64), err)
				}
				if err != nil {
					writeError(w, err)
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// checkHost enforces AllowedHosts (see Options) against DNS rebinding: a
// web page whose DNS name is made to point at this server still sends its
// own name as Host, and as Origin, so it is refused (403).
//
// A Host passes if its name is in AllowedHosts or it is an IP address: a
// browser sends an IP address as Host only when the user typed it, and a
// page cannot rebind an address. An Origin, if present, passes if it is
// this origin (host:port equal to Host), or names an allowed host or a
// loopback address; "null" does not.
func (s *Server) checkHost(next http.Handler) http.Handler {
	if len(s.opts.AllowedHosts) == 0 {
		return next
	}
	allowed := make(map[string]bool, len(s.opts.AllowedHosts))
	for _, h := range s.opts.AllowedHosts {
		allowed[strings.Trim(strings.ToLower(h), "[]")] = true
	}
	hostname := func(hostport string) string {
		if h, _, err := net.SplitHostPort(hostport); err == nil {
			hostport = h
		}
		return strings.Trim(strings.ToLower(hostport), "[]")
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := hostname(r.Host)
		if !allowed[host] && net.ParseIP(host) == nil {
			writeError(w, fmt.Errorf("%w: host %q is not one this server answers to (it allows %s and IP addresses; share serve --allowed-host adds names)",
				ErrForbidden, r.Host, strings.Join(s.opts.AllowedHosts, ", ")))
			return
		}
		if o := r.Header.Get("Origin"); o != "" {
			ok := false
			if u, err := url.Parse(o); err == nil && u.Host != "" {
				ip := net.ParseIP(hostname(u.Host))
				ok = strings.EqualFold(u.Host, r.Host) || allowed[hostname(u.Host)] || (ip != nil && ip.IsLoopback())
			}
			if !ok {
				writeError(w, fmt.Errorf("%w: origin %q", ErrForbidden, o))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// credential is what a request presents to prove it may act.
type credential int

const (
	noCredential credential = iota // none, or a wrong one
	// bearerCredential: the token in an Authorization: Bearer header. A
	// page on another site cannot make a browser send it: the header is
	// not one a cross-site request may carry without a CORS preflight,
	// which this server never grants.
	bearerCredential
	// ambientCredential: a credential a browser attaches by itself, to
	// any request to this origin, whoever's page makes it: Basic auth it
	// has cached (and a session cookie, if the server has sessions).
	ambientCredential
)

// credentialOf checks the request's credential, in constant time.
func (s *Server) credentialOf(r *http.Request) credential {
	auth := r.Header.Get("Authorization")
	if t, ok := strings.CutPrefix(auth, "Bearer "); ok {
		if s.tokenOK(strings.TrimSpace(t)) {
			return bearerCredential
		}
		return noCredential
	}
	if _, pw, ok := r.BasicAuth(); ok && s.tokenOK(pw) {
		return ambientCredential
	}
	if s.loginCookie(r) {
		return ambientCredential
	}
	return noCredential
}

func (s *Server) tokenOK(given string) bool {
	h := sha256.Sum256([]byte(given))
	return subtle.ConstantTimeCompare(h[:], s.tokenHash[:]) == 1
}

// authorize lets a request through if it has the access the route needs
// and, for a state-changing request, passes the CSRF rule (see checkCSRF).
func (s *Server) authorize(need access, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cred := s.credentialOf(r)
		if !(need == public || (need == read && s.opts.PublicRead) || cred != noCredential) {
			if fromScript(r) {
				w = noChallenge{w} // the page shows its login form, not the browser's prompt
			}
			writeError(w, ErrUnauthorized)
			return
		}
		if err := checkCSRF(r, cred); err != nil {
			writeError(w, err)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// crossOrigin is net/http's rule against cross-site request forgery, with
// no trusted origins and no bypass.
var crossOrigin = http.NewCrossOriginProtection()

// checkCSRF is the one rule against cross-site request forgery, for every
// route: net/http's CrossOriginProtection, applied to requests authorised by
// an ambient credential. A request with an unsafe method (anything but GET,
// HEAD, OPTIONS: RFC 9110 9.2.1) that a browser sends from a page of another
// origin is refused: Sec-Fetch-Site "cross-site" or "same-site", or, from a
// browser too old to send that header, an Origin whose host:port is not the
// request's Host. Sec-Fetch-Site "same-origin" or "none" (a user's own
// navigation) passes. A request with neither header is not a browser's (every
// browser since 2023 sends Sec-Fetch-Site, and older ones an Origin, on every
// unsafe request a page can make) and passes: curl -u :TOKEN -X DELETE works.
// A Bearer request, or one with no credential (the route decides if that is
// enough), is not checked: no page can make a browser add that header
// cross-site without a CORS preflight, which this server never grants.
func checkCSRF(r *http.Request, cred credential) error {
	if cred != ambientCredential {
		return nil
	}
	if err := crossOrigin.Check(r); err != nil {
		return fmt.Errorf("%w: cross-site %s refused (Sec-Fetch-Site %q, Origin %q): a browser may change shares only from this server's own page; scripts send Authorization: Bearer TOKEN",
			ErrForbidden, r.Method, r.Header.Get("Sec-Fetch-Site"), r.Header.Get("Origin"))
	}
	return nil
}

// observe logs one line per request and counts it, and gives every request
// idle deadlines: a body that moves no byte for TransferIdle is cut, without
// capping how long a large transfer may take.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.inflight.Add(1)
		defer s.inflight.Done()
		start := time.Now()
		rc := http.NewResponseController(w)
		rec := &recorder{ResponseWriter: w, rc: rc, idle: s.opts.TransferIdle}
		rec.extend()
		if r.Body != nil && r.Body != http.NoBody {
			// On a copy of the request: after the handler, net/http looks at
			// its own request's Body to see whether the body was read. One
			// not read under "Expect: 100-continue" (a refused upload) is
			// then answered at once with Connection: close, and neither
			// "100 Continue" is sent nor a byte of the body read; with the
			// Body replaced there, it would instead read up to 256 KiB of it
			// to keep the connection, waiting for a client that waits for
			// the 100 (curl: --expect100-timeout, 1 s by default).
			r = r.WithContext(r.Context())
			body := r.Body
			if r.ProtoMajor == 1 { // one request at a time on the connection
				if lw := newLowWater(r.Context(), r.ContentLength); lw != nil {
					body = &lowWaterBody{body, lw}
					defer lw.done() // net/http closes its own Body, not this one
				}
			}
			r.Body = &idleBody{ReadCloser: body, rc: rc, idle: s.opts.TransferIdle}
		}
		next.ServeHTTP(rec, r)

		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		d := time.Since(start)
		s.m.requests.WithLabelValues(route, fmt.Sprint(status)).Inc()
		s.m.duration.WithLabelValues(route).Observe(d.Seconds())
		level := slog.LevelInfo
		switch {
		case status >= 500:
			level = slog.LevelWarn
		case status < 400 && (strings.HasSuffix(route, "/chunks/{n}") || strings.HasSuffix(route, "/have")):
			level = slog.LevelDebug // one per chunk: thousands per GiB
		}
		s.log.Log(r.Context(), level, "request", "method", r.Method, "route", route, "path", r.URL.Path,
			"status", status, "bytes", rec.bytes, "duration", d.Round(time.Microsecond), "remote", r.RemoteAddr)
	})
}

// recorder captures the status and body size, and extends the write
// deadline before every write. It keeps ReadFrom, so sendfile still works,
// in pieces of sendPiece bytes between deadline extensions.
type recorder struct {
	http.ResponseWriter
	rc     *http.ResponseController
	idle   time.Duration
	status int
	bytes  int64
}

func (w *recorder) extend() { w.rc.SetWriteDeadline(time.Now().Add(w.idle)) }

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.extend()
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *recorder) ReadFrom(src io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	rf, ok := w.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(writerOnly{w}, src)
	}
	// Unwrap one LimitedReader, so the pieces below wrap the file itself:
	// sendfile only sees through one level.
	inner, left := src, int64(-1)
	if lr, ok := src.(*io.LimitedReader); ok {
		inner, left = lr.R, lr.N
		defer func() { lr.N = left }()
	}
	var total int64
	for left != 0 {
		piece := sendPiece
		if left > 0 {
			piece = min(piece, left)
		}
		w.extend()
		n, err := rf.ReadFrom(&io.LimitedReader{R: inner, N: piece})
		total += n
		w.bytes += n
		if left > 0 {
			left -= n
		}
		if err != nil || n < piece {
			return total, err
		}
	}
	return total, nil
}

func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush implements http.Flusher.
func (w *recorder) Flush() { w.rc.Flush() }

type writerOnly struct{ io.Writer }

// idleBody extends the read deadline before every read of a request body.
type idleBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	idle time.Duration
}

func (b *idleBody) Read(p []byte) (int, error) {
	b.rc.SetReadDeadline(time.Now().Add(b.idle))
	return b.ReadCloser.Read(p)
}
