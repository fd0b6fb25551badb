package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sharefiles/share/transfer"
)

// ShareInfo describes a share in API responses.
type ShareInfo struct {
	ID   transfer.ID `json:"id"`
	Name string      `json:"name"`
	// DisplayName is Name as a person should read it (transfer.DisplayName:
	// look-alikes of '.', '/' and '\' escaped); the web page shows it.
	DisplayName string `json:"display_name"`
	Type        string `json:"type"` // "file" or "dir"
	Size        int64  `json:"size"` // bytes
	Files       int    `json:"files"`
	ChunkSize   int64  `json:"chunk_size"`
	Chunks      int    `json:"chunks"`
	Have        int    `json:"have"` // chunks held
	Complete    bool   `json:"complete"`
	// Damaged counts chunks found damaged on disk (they failed verification
	// when read) and not held again yet: they were dropped, and the share
	// is partial until they are put or fetched again.
	Damaged int       `json:"damaged,omitempty"`
	Created time.Time `json:"created"`
}

// Info describes sh.
func Info(sh *transfer.Share) ShareInfo {
	m := sh.Manifest()
	typ := "file"
	if m.IsDir() {
		typ = "dir"
	}
	return ShareInfo{
		ID: m.ID(), Name: m.Name(), DisplayName: transfer.DisplayName(m.Name()), Type: typ, Size: m.Size(), Files: len(m.Files()),
		ChunkSize: m.ChunkSize(), Chunks: m.NumChunks(), Have: sh.HaveCount(),
		Complete: sh.Complete(), Damaged: sh.Damaged(), Created: sh.Created(),
	}
}

// ListResponse is the body of GET /v1/shares.
type ListResponse struct {
	Shares []ShareInfo `json:"shares"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "version": s.opts.Version})
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	resp := ListResponse{Shares: []ShareInfo{}}
	for _, sh := range s.opts.Backend.List() {
		resp.Shares = append(resp.Shares, Info(sh))
	}
	writeJSON(w, http.StatusOK, resp)
}

// acquireUpload takes an upload slot, or answers 503.
func (s *Server) acquireUpload(w http.ResponseWriter) bool {
	select {
	case s.uploads <- struct{}{}:
		return true
	default:
		writeError(w, fmt.Errorf("%w: %d uploads in progress", ErrBusy, cap(s.uploads)))
		return false
	}
}

func (s *Server) releaseUpload() { <-s.uploads }

// shareFromPath resolves the {id} path element.
func (s *Server) shareFromPath(r *http.Request) (*transfer.Share, error) {
	id, err := transfer.ParseID(r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	return s.opts.Backend.Get(id)
}

// upload stores the raw request body as a single-file share.
func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := transfer.ValidName(name); err != nil {
		writeError(w, err)
		return
	}
	opts := transfer.ImportOptions{ChunkSize: s.opts.ChunkSize, MaxSize: s.opts.MaxUploadSize, SizeHint: r.ContentLength}
	if cs := r.URL.Query().Get("chunk_size"); cs != "" {
		n, err := transfer.ParseSize(cs)
		if err != nil || n < transfer.MinChunkSize || n > transfer.MaxChunkSize {
			writeError(w, fmt.Errorf("%w: chunk_size %q: want %d to %d bytes", ErrBadRequest, cs, transfer.MinChunkSize, transfer.MaxChunkSize))
			return
		}
		opts.ChunkSize = n
	}
	if r.ContentLength > s.opts.MaxUploadSize {
		writeError(w, fmt.Errorf("%w: %d bytes, limit %d", transfer.ErrTooLarge, r.ContentLength, s.opts.MaxUploadSize))
		return
	}
	if !s.acquireUpload(w) {
		return
	}
	defer s.releaseUpload()
	s.m.active.WithLabelValues("receive").Inc()
	defer s.m.active.WithLabelValues("receive").Dec()

	body := &countingReader{r: s.opts.DownloadLimit.Reader(r.Context(), http.MaxBytesReader(w, r.Body, s.opts.MaxUploadSize))}
	sh, err := s.opts.Backend.Import(r.Context(), name, body, opts)
	s.m.received.Add(float64(body.n))
	if err != nil {
		s.log.Info("upload failed", "name", name, "received", body.n, "err", err)
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("%w: upload cut short after %d bytes", ErrBadRequest, body.n)
		}
		writeError(w, err)
		return
	}
	if r.ContentLength >= 0 && body.n != r.ContentLength {
		// Cannot happen with net/http (it enforces Content-Length), but a
		// share that is not what the client sent must not be kept.
		writeError(w, fmt.Errorf("%w: got %d bytes, Content-Length %d", ErrBadRequest, body.n, r.ContentLength))
		return
	}
	s.log.Info("share added", "id", sh.ID(), "name", name, "size", body.n)
	w.Header().Set("Location", "/v1/shares/"+sh.ID().String())
	writeJSON(w, http.StatusCreated, Info(sh))
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// create makes a (partial) share from the manifest in the body. The client
// then uploads the chunks the share lacks.
func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > transfer.MaxManifestSize {
		writeError(w, fmt.Errorf("%w: manifest of %d bytes, limit %d", transfer.ErrTooLarge, r.ContentLength, transfer.MaxManifestSize))
		return
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, transfer.MaxManifestSize))
	if err != nil {
		writeError(w, err)
		return
	}
	m, err := transfer.DecodeManifest(raw)
	if err != nil {
		writeError(w, err)
		return
	}
	if m.Size() > s.opts.MaxUploadSize {
		writeError(w, fmt.Errorf("%w: share of %d bytes, limit %d", transfer.ErrTooLarge, m.Size(), s.opts.MaxUploadSize))
		return
	}
	sh, created, err := s.opts.Backend.Create(m)
	if err != nil {
		writeError(w, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		s.log.Info("share created", "id", m.ID(), "name", m.Name(), "size", m.Size(), "chunks", m.NumChunks())
	}
	w.Header().Set("Location", "/v1/shares/"+m.ID().String())
	writeJSON(w, status, Info(sh))
}

// content serves a complete share: a file, or a directory as a tar stream
// (transfer.TarReader), with Range and conditional requests (serveBody).
func (s *Server) content(w http.ResponseWriter, r *http.Request) {
	sh, err := s.shareFromPath(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if !sh.Complete() {
		writeError(w, fmt.Errorf("%w: %d of %d chunks held", transfer.ErrIncomplete, sh.HaveCount(), sh.Manifest().NumChunks()))
		return
	}
	m := sh.Manifest()
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	if m.IsDir() {
		tr, err := sh.OpenTar()
		if err != nil {
			writeError(w, err)
			return
		}
		defer tr.Close()
		h.Set("Content-Type", "application/x-tar")
		h.Set("Content-Disposition", contentDisposition(transfer.FitName(m.Name(), ".tar")))
		h.Set("ETag", tarETag(sh))
		// The bytes depend on when the share entered this store: revalidate.
		h.Set("Cache-Control", "private, no-cache")
		s.serveBody(w, r, sh.Created(), tr, true)
		return
	}
	f, err := sh.OpenFile()
	if err != nil {
		writeError(w, err)
		return
	}
	defer f.Close()
	ctype := mime.TypeByExtension(path.Ext(m.Name()))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	h.Set("Content-Type", ctype)
	h.Set("Content-Disposition", contentDisposition(m.Name()))
	h.Set("ETag", `"`+m.ID().String()+`"`)
	h.Set("Cache-Control", "private, max-age=31536000, immutable") // content-addressed
	s.serveBody(w, r, sh.Created(), f, true)
}

// tarETag is the strong entity tag of a directory share's tar stream, whose
// bytes depend on the manifest and on the share's creation time in this
// store (the entries' mtime), and on nothing else (transfer's
// TestTarBytesAreStable pins them).
func tarETag(sh *transfer.Share) string {
	return fmt.Sprintf(`"%s-tar-%d"`, sh.ID(), sh.Created().Unix())
}

// maxRanges bounds the ranges one request may ask for; a Range with more is
// ignored (the whole body, 200), as RFC 9110 14.3 allows, so that no request
// makes a multipart response of many tiny parts.
const maxRanges = 16

// serveBody answers a GET or HEAD of one representation of size bytes,
// whose headers (ETag, Content-Type, ...) the caller has set, with
// net/http's ServeContent. ServeContent evaluates the preconditions in the
// order of RFC 9110 13.2.2 (If-Match, If-Unmodified-Since, If-None-Match,
// If-Modified-Since, then If-Range), If-Match and If-Range with the strong
// comparison and If-None-Match with the weak one (RFC 9110 8.8.3.2), answers
// 304 with the ETag and no body, 412, Range with 206 (several ranges as
// multipart/byteranges), and 416 with "Content-Range: bytes */SIZE".
// fixRange first corrects what it gets wrong. modTime is Last-Modified.
// limited: the body is share bytes, counted and under UploadLimit; it
// returns how many of them it sent.
func (s *Server) serveBody(w http.ResponseWriter, r *http.Request, modTime time.Time, body io.ReadSeeker, limited bool) int64 {
	size, err := body.Seek(0, io.SeekEnd)
	if err == nil {
		_, err = body.Seek(0, io.SeekStart)
	}
	if err != nil {
		writeError(w, err)
		return 0
	}
	fixRange(r, size)
	ew := &jsonErrors{ResponseWriter: w}
	defer ew.finish()
	w = ew
	if !limited {
		http.ServeContent(w, r, "", modTime, body)
		return 0
	}
	s.m.active.WithLabelValues("send").Inc()
	defer s.m.active.WithLabelValues("send").Dec()
	cw := &countingWriter{w: s.opts.UploadLimit.Writer(r.Context(), w)}
	http.ServeContent(responseWriter{ResponseWriter: w, Writer: cw}, r, "", modTime, body)
	s.m.sent.Add(float64(cw.n))
	return cw.n
}

// jsonErrors turns the plain-text errors of ServeContent (416 "invalid
// range: failed to overlap", a failed read) into the API's JSON errors: it
// holds back a status of 400 or more and the text written after it, and
// finish sends them as {"error": TEXT, "code": ...}. A 412, which
// ServeContent sends without a body, stays without one. Everything else
// passes through, ReadFrom included (sendfile).
type jsonErrors struct {
	http.ResponseWriter
	status int             // the error status held back; 0: none
	text   strings.Builder // what ServeContent wrote after it, up to 1 KiB
}

func (e *jsonErrors) WriteHeader(status int) {
	if status < 400 {
		e.ResponseWriter.WriteHeader(status)
		return
	}
	e.status = status
}

func (e *jsonErrors) Write(p []byte) (int, error) {
	if e.status == 0 {
		return e.ResponseWriter.Write(p)
	}
	if e.text.Len() < 1<<10 {
		e.text.Write(p[:min(len(p), 1<<10-e.text.Len())])
	}
	return len(p), nil
}

func (e *jsonErrors) ReadFrom(src io.Reader) (int64, error) {
	if e.status != 0 {
		return io.Copy(io.Discard, src)
	}
	if rf, ok := e.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(writerOnly{e.ResponseWriter}, src)
}

// finish sends the error held back, if any.
func (e *jsonErrors) finish() {
	if e.status == 0 {
		return
	}
	h := e.Header()
	msg := strings.TrimSpace(e.text.String())
	if msg == "" {
		e.ResponseWriter.WriteHeader(e.status)
		return
	}
	code := "internal"
	switch e.status {
	case http.StatusRequestedRangeNotSatisfiable:
		code = "range_not_satisfiable"
	case http.StatusForbidden:
		code = "forbidden"
	}
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	e.ResponseWriter.WriteHeader(e.status)
	json.NewEncoder(e.ResponseWriter).Encode(apiError{Error: msg, Code: code})
}

// fixRange handles, before ServeContent, the Range edges it gets wrong or
// that RFC 9110 lets a server decline. The Range header is removed, so the
// whole body is sent (200), when:
//   - the method is not GET (HEAD: range handling is defined for GET only,
//     RFC 9110 14.2);
//   - its unit is not "bytes" (an unknown unit MUST be ignored, 14.2;
//     ServeContent answers 416). "Bytes" is bytes: units are
//     case-insensitive (14.1), ServeContent knows only "bytes=";
//   - the body is empty: no range of it can be expressed in a
//     Content-Range (ServeContent answers "bytes 0--1/0" to a suffix range);
//   - there is more than one Range field, or more than maxRanges ranges.
func fixRange(r *http.Request, size int64) {
	vals := r.Header.Values("Range")
	if len(vals) == 0 {
		return
	}
	unit, set, ok := strings.Cut(vals[0], "=")
	if r.Method != http.MethodGet || len(vals) > 1 || !ok || !strings.EqualFold(strings.TrimSpace(unit), "bytes") ||
		size == 0 || strings.Count(set, ",") >= maxRanges {
		r.Header.Del("Range")
		return
	}
	r.Header.Set("Range", "bytes="+set)
}

// contentDisposition is an attachment header for a file name (RFC 6266 4.3):
// a quoted ASCII filename every client reads and, for a name that is not
// plain ASCII, filename* (RFC 8187: UTF-8, percent-encoded), which browsers
// prefer. The fallback replaces what is not printable ASCII, and '"', '\\'
// and '%' (RFC 6266 appendix D), with '_'.
func contentDisposition(name string) string {
	var fallback strings.Builder
	for _, c := range name {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '%' {
			c = '_'
		}
		fallback.WriteRune(c)
	}
	v := `attachment; filename="` + fallback.String() + `"`
	if fallback.String() != name {
		v += "; filename*=UTF-8''" + rfc8187(name)
	}
	return v
}

// rfc8187 percent-encodes s as an RFC 8187 value-chars: every byte but an
// attr-char.
func rfc8187(s string) string {
	const attrChars = "!#$&+-.^_`|~"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(attrChars, c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// countingWriter counts bytes written, keeping ReadFrom for sendfile.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) ReadFrom(src io.Reader) (int64, error) {
	var n int64
	var err error
	if rf, ok := c.w.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(writerOnly{c.w}, src)
	}
	c.n += n
	return n, err
}

// responseWriter sends the body through Writer while headers go to the
// ResponseWriter; it keeps ReadFrom so ServeContent can sendfile.
type responseWriter struct {
	http.ResponseWriter
	io.Writer
}

func (w responseWriter) Write(p []byte) (int, error) { return w.Writer.Write(p) }

// remainder is a reader that writes out everything it has left itself:
// transfer's chunk and tar readers, whose WriteTo sends file contents with
// io.CopyN, that is with sendfile.
type remainder interface {
	io.WriterTo
	Remaining() int64
}

// ReadFrom copies src. ServeContent sends a body, or a range of it, as
// io.CopyN(w, content, n): a share's file goes out in checked pieces
// (sendChecked); when n covers what a remainder has left, its own WriteTo
// sends it.
func (w responseWriter) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := w.Writer.(io.ReaderFrom)
	if !ok {
		return io.Copy(writerOnly{w.Writer}, src)
	}
	if lr, ok := src.(*io.LimitedReader); ok {
		// A share's file checks its chunks before they leave; Next hands
		// out the checked bytes as the bare file, so they still go with
		// sendfile, whole or in a range.
		if f, ok := lr.R.(*transfer.FileReader); ok {
			return sendChecked(rf, f, lr)
		}
		if rem, ok := lr.R.(remainder); ok && rem.Remaining() <= lr.N {
			n, err := rem.WriteTo(w.Writer)
			lr.N -= n
			return n, err
		}
	}
	return rf.ReadFrom(src)
}

// sendChecked sends lr (a limit on f) to rf piece by piece, each piece
// checked by f.Next.
func sendChecked(rf io.ReaderFrom, f *transfer.FileReader, lr *io.LimitedReader) (int64, error) {
	var total int64
	for lr.N > 0 {
		r, err := f.Next(min(lr.N, checkedPiece))
		if err != nil {
			return total, err
		}
		n, err := rf.ReadFrom(r)
		total += n
		lr.N -= n
		if err != nil {
			return total, err
		}
		if n == 0 {
			break // the file is shorter than the share says
		}
	}
	return total, nil
}

// checkedPiece is how much of a file is checked, then sent, at a time.
const checkedPiece = 8 << 20

func (s *Server) remove(w http.ResponseWriter, r *http.Request) {
	id, err := transfer.ParseID(r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	if err := s.opts.Backend.Remove(id); err != nil {
		writeError(w, err)
		return
	}
	s.log.Info("share removed", "id", id)
	w.WriteHeader(http.StatusNoContent)
}

// ServerStatus is GET /v1/status of a server.
type ServerStatus struct {
	Mode    string      `json:"mode"` // "server"
	Version string      `json:"version"`
	Shares  []ShareInfo `json:"shares"`
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	if st, ok := s.opts.Backend.(Statuser); ok {
		writeJSON(w, http.StatusOK, st.Status(r.Context()))
		return
	}
	resp := ServerStatus{Mode: "server", Version: s.opts.Version, Shares: []ShareInfo{}}
	for _, sh := range s.opts.Backend.List() {
		resp.Shares = append(resp.Shares, Info(sh))
	}
	writeJSON(w, http.StatusOK, resp)
}

// manifest serves a share's manifest. It never starts a fetch: a read has
// no effects (see fetch).
func (s *Server) manifest(w http.ResponseWriter, r *http.Request) {
	sh, err := s.shareFromPath(r)
	if err != nil {
		writeError(w, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("ETag", `"`+sh.ID().String()+`"`) // the ID is the hash of these bytes
	h.Set("Cache-Control", "private, max-age=31536000, immutable")
	s.serveBody(w, r, sh.Created(), bytes.NewReader(sh.Manifest().Bytes()), false)
}

// fetch makes a backend that can (a Fetcher: a peer) get a share it lacks
// from elsewhere: 200 with the share's info if it is complete already, 202
// once a download is under way (the manifest is known; chunks arrive; GET
// the have route to follow it). A backend that cannot answers 501.
func (s *Server) fetch(w http.ResponseWriter, r *http.Request) {
	id, err := transfer.ParseID(r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	f, ok := s.opts.Backend.(Fetcher)
	if !ok {
		writeError(w, fmt.Errorf("%w: this server holds only the shares uploaded to it and cannot fetch %s from elsewhere (a 'share peer' can)", ErrNotSupported, id))
		return
	}
	sh, err := f.Fetch(r.Context(), id)
	if err != nil {
		s.log.Info("fetch failed", "id", id, "err", err)
		writeError(w, err)
		return
	}
	status := http.StatusAccepted
	if sh.Complete() {
		status = http.StatusOK
	}
	w.Header().Set("Location", "/v1/shares/"+id.String())
	writeJSON(w, status, Info(sh))
}

// have answers which chunks are held. With ?known=DIGEST&wait=D it is a long
// poll: it answers once the held set's digest (transfer.Bitfield.Digest)
// differs from DIGEST, or after D (at most transfer.MaxHaveWait), if the
// backend can wait.
func (s *Server) have(w http.ResponseWriter, r *http.Request) {
	sh, err := s.shareFromPath(r)
	if err != nil {
		writeError(w, err)
		return
	}
	bf := sh.Have()
	q := r.URL.Query()
	if hw, ok := s.opts.Backend.(transfer.HaveWaiter); ok && q.Has("known") {
		known, err1 := strconv.ParseUint(q.Get("known"), 10, 32)
		wait, err2 := time.ParseDuration(q.Get("wait"))
		if err1 != nil || err2 != nil || wait < 0 {
			writeError(w, fmt.Errorf("%w: have: known=%q wait=%q", ErrBadRequest, q.Get("known"), q.Get("wait")))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), min(wait, transfer.MaxHaveWait))
		bf, err = hw.WaitHave(ctx, sh.ID(), sh.Manifest().NumChunks(), uint32(known))
		cancel()
		if err != nil {
			writeError(w, err)
			return
		}
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(bf.Bytes())))
	w.Header().Set("Cache-Control", "no-store")
	w.Write(bf.Bytes())
}

// local answers where the backend keeps a share on this machine
// (transfer.LocalCopy), to a client on this machine only: a path is of no
// use elsewhere. It needs the token even with PublicRead. Nothing is read or
// written for the client: it opens the files itself, with its own
// permissions.
func (s *Server) local(w http.ResponseWriter, r *http.Request) {
	if !loopback(r.RemoteAddr) {
		writeError(w, fmt.Errorf("%w: the local route answers clients on this machine only", ErrForbidden))
		return
	}
	id, err := transfer.ParseID(r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	lb, ok := s.opts.Backend.(LocalBackend)
	if !ok {
		writeError(w, fmt.Errorf("%w: a server's clients download its shares over HTTP (a 'share peer' tells where its copy is)", ErrNotSupported))
		return
	}
	lc, err := lb.LocalCopy(id)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, lc)
}

// loopback reports whether a request's remote address is on loopback.
func loopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// chunkFromPath resolves the {id} and {n} path elements.
func (s *Server) chunkFromPath(r *http.Request) (*transfer.Share, int, error) {
	sh, err := s.shareFromPath(r)
	if err != nil {
		return nil, 0, err
	}
	i, err := ParseChunkIndex(r.PathValue("n"), sh.Manifest().NumChunks())
	return sh, i, err
}

// ParseChunkIndex parses a chunk index from a request: a decimal number
// without sign or leading zeros, below n.
func ParseChunkIndex(s string, n int) (int, error) {
	if s == "" || len(s) > 10 || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("%w: chunk index %q", ErrBadRequest, truncate(s, 16))
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: chunk index %q", ErrBadRequest, truncate(s, 16))
		}
	}
	i, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%w: chunk index %q", ErrBadRequest, s)
	}
	if i >= n {
		return 0, fmt.Errorf("%w: %d of %d", transfer.ErrChunkRange, i, n)
	}
	return i, nil
}

func (s *Server) getChunk(w http.ResponseWriter, r *http.Request) {
	sh, i, err := s.chunkFromPath(r)
	if err != nil {
		writeError(w, err)
		return
	}
	m := sh.Manifest()
	rc, err := sh.OpenChunk(i)
	if err != nil {
		writeError(w, err)
		return
	}
	defer rc.Close()
	rs, ok := rc.(io.ReadSeeker)
	if !ok {
		writeError(w, fmt.Errorf("chunk %d of %s: reader cannot seek", i, m.ID()))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("ETag", `"`+m.ChunkHash(i).String()+`"`)
	h.Set("Cache-Control", "private, max-age=31536000, immutable")
	release, waited, err := s.sendSlot(r.Context())
	if err != nil {
		return // the client went away while it waited
	}
	defer release()
	if waited > 0 {
		h.Set("Server-Timing", fmt.Sprintf("slot;dur=%.1f", float64(waited)/float64(time.Millisecond)))
	}
	if s.serveBody(w, r, sh.Created(), rs, true) == int64(m.ChunkLen(i)) {
		s.m.chunksOut.Inc()
	}
}

// sendSlot waits for one of the server's send slots (Options.SendSlots),
// first come first served, for at most slotWait, and returns how long it
// waited and the function that gives the slot back (callable more than
// once). A slot held for slotHold (SlotWait) is given back by itself, so that clients
// reading slowly cannot keep others waiting for long. After slotWait
// without one, the response goes out without a slot. The error is ctx's,
// when it ends during the wait.
func (s *Server) sendSlot(ctx context.Context) (release func(), waited time.Duration, err error) {
	if s.slots == nil {
		return func() {}, 0, nil
	}
	select {
	case s.slots <- struct{}{}:
		return s.holdSlot(), 0, nil
	default:
	}
	start := time.Now()
	t := time.NewTimer(s.slotWait)
	defer t.Stop()
	s.m.active.WithLabelValues("wait").Inc()
	defer s.m.active.WithLabelValues("wait").Dec()
	select {
	case s.slots <- struct{}{}:
		return s.holdSlot(), time.Since(start), nil
	case <-t.C:
		s.log.Debug("no send slot free; sending anyway", "waited", s.slotWait)
		return func() {}, time.Since(start), nil
	case <-ctx.Done():
		return nil, time.Since(start), ctx.Err()
	}
}

// holdSlot returns the release of a slot just taken, which also runs by
// itself after slotHold.
func (s *Server) holdSlot() func() {
	var once sync.Once
	give := func() { once.Do(func() { <-s.slots }) }
	t := time.AfterFunc(s.slotHold, give)
	return func() {
		t.Stop()
		give()
	}
}

// chunkBufs recycles chunk upload buffers.
var chunkBufs sync.Pool

func (s *Server) putChunk(w http.ResponseWriter, r *http.Request) {
	sh, i, err := s.chunkFromPath(r)
	if err != nil {
		writeError(w, err)
		return
	}
	m := sh.Manifest()
	n := m.ChunkLen(i)
	if r.ContentLength >= 0 && r.ContentLength != int64(n) {
		writeError(w, fmt.Errorf("%w: chunk %d has %d bytes, Content-Length is %d", transfer.ErrBadChunk, i, n, r.ContentLength))
		return
	}
	if sh.HasChunk(i) { // nothing to do; do not read the body
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if !s.acquireUpload(w) {
		return
	}
	defer s.releaseUpload()
	s.m.active.WithLabelValues("receive").Inc()
	defer s.m.active.WithLabelValues("receive").Dec()

	bp, _ := chunkBufs.Get().(*[]byte)
	if bp == nil || cap(*bp) < n+1 {
		b := transfer.AlignedBuffer(int(m.ChunkSize()) + 1)
		bp = &b
	}
	defer chunkBufs.Put(bp)
	buf := (*bp)[:n+1]
	got, err := io.ReadFull(s.opts.DownloadLimit.Reader(r.Context(), r.Body), buf)
	s.m.received.Add(float64(got))
	switch {
	case err == nil:
		writeError(w, fmt.Errorf("%w: chunk %d: more than its %d bytes", transfer.ErrBadChunk, i, n))
		return
	case got < n:
		writeError(w, fmt.Errorf("%w: chunk %d cut short at %d of %d bytes", ErrBadRequest, i, got, n))
		return
	}
	if err := sh.PutChunk(i, buf[:n]); err != nil {
		if errors.Is(err, transfer.ErrBadChunk) {
			s.m.badChunks.Inc()
			s.log.Warn("refused corrupt chunk", "id", m.ID(), "chunk", i, "remote", r.RemoteAddr)
		}
		writeError(w, err)
		return
	}
	s.m.chunksIn.Inc()
	w.WriteHeader(http.StatusNoContent)
}

// verify scrubs the share {id}, or every share (POST /v1/verify), with the
// backend's Verifier: each chunk is read from disk and hashed; those that
// fail are marked missing. The answer is one JSON transfer.VerifyResult per
// line (NDJSON) as each share is done; headers go out at once, so a long
// scrub does not look like a server that does not answer.
func (s *Server) verify(w http.ResponseWriter, r *http.Request) {
	v, ok := s.opts.Backend.(Verifier)
	if !ok {
		writeError(w, fmt.Errorf("%w: this backend cannot verify its shares", ErrNotSupported))
		return
	}
	var ids []transfer.ID
	if r.PathValue("id") != "" {
		sh, err := s.shareFromPath(r)
		if err != nil {
			writeError(w, err)
			return
		}
		ids = []transfer.ID{sh.ID()}
	}
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Time{}) // a scrub of many GiB writes nothing for a while
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc.Flush()
	results, err := v.Verify(r.Context(), ids, nil)
	enc := json.NewEncoder(w)
	for _, res := range results {
		if len(res.Damaged) > 0 {
			s.log.Warn("verify: damaged chunks marked missing", "id", res.ID, "damaged", len(res.Damaged))
		}
		enc.Encode(res)
	}
	if err != nil {
		enc.Encode(transfer.VerifyResult{Error: err.Error()})
	}
}
