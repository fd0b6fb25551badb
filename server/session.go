package server

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"mime"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sharefiles/share/server/ui"
)

// Browser login. A browser can send the token as Basic auth (the 401's
// challenge makes it prompt), or trade it once for a session cookie through
// the login form: POST /login with the form field token sets an HttpOnly,
// SameSite=Strict cookie (Secure over TLS) naming a server-side session;
// POST /logout ends it. Sessions live in memory: a restart (which is also
// the only way to change the token) ends them all. The cookie is an ambient
// credential, like cached Basic auth: a state-changing request it authorises
// must pass checkCSRF.
//
// Cookies are not isolated by port (RFC 6265, section 8.5), so the cookie's
// name carries the port: two daemons on one machine keep separate logins.
const (
	// SessionTTL is how long a login lasts.
	SessionTTL = 7 * 24 * time.Hour
	// maxSessions bounds the logins kept; beyond it the oldest is dropped.
	maxSessions = 1024
	// loginFailDelay slows down guessing the token through the form.
	loginFailDelay = 500 * time.Millisecond
	cookiePrefix   = "share_session"
)

// loginSessions are the server-side login sessions, keyed by the SHA-256 of
// the cookie's value (so the map holds no usable secret), each with its
// expiry.
type loginSessions struct {
	mu sync.Mutex
	m  map[[32]byte]time.Time
}

func (ls *loginSessions) add(now time.Time) string {
	var raw [32]byte
	rand.Read(raw[:])
	id := base64.RawURLEncoding.EncodeToString(raw[:])
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.m == nil {
		ls.m = map[[32]byte]time.Time{}
	}
	for k, exp := range ls.m {
		if now.After(exp) {
			delete(ls.m, k)
		}
	}
	if len(ls.m) >= maxSessions {
		var oldest [32]byte
		var first time.Time
		for k, exp := range ls.m {
			if first.IsZero() || exp.Before(first) {
				oldest, first = k, exp
			}
		}
		delete(ls.m, oldest)
	}
	ls.m[sha256.Sum256([]byte(id))] = now.Add(SessionTTL)
	return id
}

func (ls *loginSessions) valid(id string, now time.Time) bool {
	k := sha256.Sum256([]byte(id))
	ls.mu.Lock()
	defer ls.mu.Unlock()
	exp, ok := ls.m[k]
	if ok && now.After(exp) {
		delete(ls.m, k)
		return false
	}
	return ok
}

func (ls *loginSessions) remove(id string) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	delete(ls.m, sha256.Sum256([]byte(id)))
}

// cookieName is the login cookie's name for the port r was sent to.
func cookieName(r *http.Request) string {
	if _, port, err := net.SplitHostPort(r.Host); err == nil && port != "" {
		return cookiePrefix + "_" + port
	}
	return cookiePrefix
}

// loginCookie reports whether r carries the cookie of a live login session.
func (s *Server) loginCookie(r *http.Request) bool {
	c, err := r.Cookie(cookieName(r))
	return err == nil && c.Value != "" && s.logins.valid(c.Value, time.Now())
}

// fromScript reports whether r was made by a script of a page (fetch), not
// by navigation or by a non-browser client: a 401 to it must not carry a
// Basic challenge, or the browser would pop up its own prompt over the
// page's login form.
func fromScript(r *http.Request) bool {
	m := r.Header.Get("Sec-Fetch-Mode")
	return m != "" && m != "navigate"
}

// noChallenge drops WWW-Authenticate from a response.
type noChallenge struct{ http.ResponseWriter }

func (w noChallenge) WriteHeader(code int) {
	w.Header().Del("WWW-Authenticate")
	w.ResponseWriter.WriteHeader(code)
}

// page serves the web page. Without a credential (and without PublicRead)
// it is a 401 whose challenge makes a browser prompt for Basic auth, and
// whose body is the page itself, which shows its login form when the prompt
// is cancelled (or when the browser does not prompt).
func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	if s.opts.PublicRead || s.credentialOf(r) != noCredential {
		ui.Page(w, r, http.StatusOK)
		return
	}
	challenge(w.Header())
	ui.Page(w, r, http.StatusUnauthorized)
}

// SessionInfo is the body of GET /v1/session: what the page needs to know
// before it shows anything.
type SessionInfo struct {
	Authenticated bool   `json:"authenticated"`
	Method        string `json:"method,omitempty"` // "cookie", "basic" or "bearer"
	PublicRead    bool   `json:"public_read"`
	Mode          string `json:"mode"`       // "server" or "peer"
	Uploads       bool   `json:"uploads"`    // upload sessions are available
	ChunkSize     int64  `json:"chunk_size"` // of uploads; 0: each share's default for its size
	MaxUpload     int64  `json:"max_upload"`
	Version       string `json:"version"`
}

func (s *Server) sessionInfo(w http.ResponseWriter, r *http.Request) {
	cred := s.credentialOf(r)
	method := ""
	switch {
	case cred == bearerCredential:
		method = "bearer"
	case cred == ambientCredential && r.Header.Get("Authorization") != "":
		method = "basic"
	case cred == ambientCredential:
		method = "cookie"
	}
	mode := "server"
	if _, ok := s.opts.Backend.(Statuser); ok {
		mode = "peer"
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, SessionInfo{
		Authenticated: cred != noCredential, Method: method, PublicRead: s.opts.PublicRead, Mode: mode,
		Uploads: s.opts.Uploads != nil, ChunkSize: s.chunkSize(), MaxUpload: s.opts.MaxUploadSize, Version: s.opts.Version,
	})
}

// wantsJSON reports whether r is the page's fetch (Accept: application/json)
// rather than a plain form submission, which gets a redirect.
func wantsJSON(r *http.Request) bool {
	for _, a := range strings.Split(r.Header.Get("Accept"), ",") {
		if mt, _, err := mime.ParseMediaType(strings.TrimSpace(a)); err == nil && mt == "application/json" {
			return true
		}
	}
	return false
}

// login trades the token (form field "token") for a login cookie.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if err := checkCSRF(r, ambientCredential); err != nil { // a forged login or logout is refused too
		writeError(w, err)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	token := r.PostFormValue("token")
	if token == "" || !s.tokenOK(strings.TrimSpace(token)) {
		time.Sleep(loginFailDelay)
		s.log.Info("login refused", "remote", r.RemoteAddr)
		writeError(noChallenge{w}, fmt.Errorf("%w: wrong token", ErrUnauthorized))
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: cookieName(r), Value: s.logins.add(time.Now()), Path: "/", MaxAge: int(SessionTTL / time.Second),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	s.log.Info("login", "remote", r.RemoteAddr)
	if wantsJSON(r) {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// logout ends the login session of the cookie, if any, and clears it.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if err := checkCSRF(r, ambientCredential); err != nil { // a forged login or logout is refused too
		writeError(w, err)
		return
	}
	if c, err := r.Cookie(cookieName(r)); err == nil {
		s.logins.remove(c.Value)
	}
	http.SetCookie(w, &http.Cookie{
		Name: cookieName(r), Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	if wantsJSON(r) {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}
