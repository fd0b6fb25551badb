// Package ui owns share's web pages: one page, embedded in the binary (no
// build step, no CDN: it works offline), that lists shares, uploads files
// and folders resumably, and shows a peer's status. It is plain HTML, CSS
// and JavaScript that talk to the JSON API the server serves beside it
// (GET /v1/session first, then /v1/shares, /v1/uploads, /v1/status), so the
// package has no handler of its own beyond the static files.
//
// Every response carries a Content-Security-Policy that allows only this
// origin's scripts, styles and requests (no inline script, no framing), so a
// share's name can never run as code, and no other site can frame the page
// to trick a click on Delete.
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
)

//go:embed static
var static embed.FS

// csp is the Content-Security-Policy of every page and asset.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// asset is one embedded file, with its strong ETag.
type asset struct {
	body  []byte
	etag  string
	ctype string
}

// assets are built on first use, not at init: every share process (a `share
// get` too) would otherwise pay for hashing them and for loading the
// system's MIME tables (~5 ms of CPU) at start, and a bench starts hundreds.
var assets = sync.OnceValue(func() map[string]asset {
	m := map[string]asset{}
	fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ct := mime.TypeByExtension(path.Ext(p))
		if ct == "" {
			ct = "application/octet-stream"
		}
		m[strings.TrimPrefix(p, "static/")] = asset{body: b, etag: `"` + hex.EncodeToString(sum[:12]) + `"`, ctype: ct}
		return nil
	})
	return m
})

func serve(w http.ResponseWriter, r *http.Request, name string, status int) {
	a, ok := assets()[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache") // revalidate: the ETag makes that a 304
	if status != http.StatusOK {       // not cacheable, no conditional request
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Length", strconv.Itoa(len(a.body)))
		w.WriteHeader(status)
		if r.Method != http.MethodHead {
			w.Write(a.body)
		}
		return
	}
	h.Set("ETag", a.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

// Page serves the page (GET /) with status (200, or 401 with the caller's
// challenge). It holds no data: the page asks the API, and shows the login
// form when the API says it needs one.
func Page(w http.ResponseWriter, r *http.Request, status int) { serve(w, r, "index.html", status) }

// Assets serves the page's scripts and styles under /ui/.
func Assets() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serve(w, r, strings.TrimPrefix(r.URL.Path, "/ui/"), http.StatusOK)
	})
}
