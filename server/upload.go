package server

import (
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/sharefiles/share/transfer"
)

// Upload sessions (transfer.Uploads) over HTTP: resumable uploads for clients
// that do not hash, such as the web page. The client declares the share,
// PUTs the bytes of chunks (one or a run of consecutive chunks per request,
// several requests in flight), asks the session which chunks it holds after a
// cut or a reload, and commits:
//
//	POST   /v1/uploads                      declare (transfer.DecodeUploadSpec's JSON); 201 new, 200 resumed (same key)
//	GET    /v1/uploads                      open sessions: {"uploads": [UploadInfo...]}
//	GET    /v1/uploads/{uid}                one session (UploadInfo: bitfield of chunks held)
//	PUT    /v1/uploads/{uid}/chunks/{n}     the bytes of chunks n, n+1, ... (Content-Length: whole chunks; 409 "held" if it holds chunk n)
//	POST   /v1/uploads/{uid}/commit         build the share; 201 with its ShareInfo
//	DELETE /v1/uploads/{uid}                cancel; 204
//
// Every route needs the token (or a login session), like every write.

// UploadList is the body of GET /v1/uploads.
type UploadList struct {
	Uploads []transfer.UploadInfo `json:"uploads"`
}

// UploadChunksResult is the body of PUT /v1/uploads/{uid}/chunks/{n}.
type UploadChunksResult struct {
	Stored int `json:"stored"` // chunks stored by this request
	Have   int `json:"have"`   // chunks the session holds now
}

func (s *Server) uploadFromPath(r *http.Request) (*transfer.Upload, error) {
	return s.opts.Uploads.Get(r.PathValue("uid"))
}

func (s *Server) uploadCreate(w http.ResponseWriter, r *http.Request) {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, transfer.MaxManifestSize))
	if err != nil {
		writeError(w, err)
		return
	}
	spec, err := transfer.DecodeUploadSpec(raw)
	if err != nil {
		writeError(w, err)
		return
	}
	if spec.ChunkSize == 0 {
		spec.ChunkSize = s.chunkSize()
	}
	layout, err := spec.Layout()
	if err != nil {
		writeError(w, err)
		return
	}
	if layout.Size() > s.opts.MaxUploadSize {
		writeError(w, fmt.Errorf("%w: share of %d bytes, limit %d", transfer.ErrTooLarge, layout.Size(), s.opts.MaxUploadSize))
		return
	}
	up, resumed, err := s.opts.Uploads.Create(spec)
	if err != nil {
		writeError(w, err)
		return
	}
	status := http.StatusCreated
	if resumed {
		status = http.StatusOK
	}
	w.Header().Set("Location", "/v1/uploads/"+up.ID())
	writeJSON(w, status, up.Info())
}

func (s *Server) uploadList(w http.ResponseWriter, r *http.Request) {
	resp := UploadList{Uploads: []transfer.UploadInfo{}}
	for _, up := range s.opts.Uploads.List() {
		resp.Uploads = append(resp.Uploads, up.Info())
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) uploadGet(w http.ResponseWriter, r *http.Request) {
	up, err := s.uploadFromPath(r)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, up.Info())
}

// uploadChunks stores the chunks in the body. The body must be whole chunks,
// starting at chunk n; a Content-Length that is not is refused before any
// byte is read. Chunks that arrived whole are kept even if the body is cut
// after them.
func (s *Server) uploadChunks(w http.ResponseWriter, r *http.Request) {
	up, err := s.uploadFromPath(r)
	if err != nil {
		writeError(w, err)
		return
	}
	l := up.Layout()
	first, err := ParseChunkIndex(r.PathValue("n"), l.NumChunks())
	if err != nil {
		writeError(w, err)
		return
	}
	if cl := r.ContentLength; cl >= 0 {
		off, _ := l.ChunkRange(first)
		end := off + cl
		if cl == 0 || end > l.Size() || (end != l.Size() && end%l.ChunkSize() != 0) {
			writeError(w, fmt.Errorf("%w: Content-Length %d from chunk %d is not a run of whole chunks (chunk size %d, share size %d)",
				ErrBadRequest, cl, first, l.ChunkSize(), l.Size()))
			return
		}
	}
	// A run that starts at a chunk the session holds is a body sent again:
	// a browser resends a request from its first byte when the kept-alive
	// connection it went on breaks (Chromium's
	// HttpNetworkTransaction::ShouldResendRequest), so the chunks of the run
	// that arrived before the break would come again. It is answered at
	// once, its body unread (net/http then closes the connection), and the
	// sender asks which chunks are missing.
	if up.Holds(first) {
		writeError(w, fmt.Errorf("%w: chunk %d of upload %s; GET /v1/uploads/%[3]s says which chunks are missing", ErrHeld, first, up.ID()))
		return
	}
	if !s.acquireUpload(w) {
		return
	}
	defer s.releaseUpload()
	s.m.active.WithLabelValues("receive").Inc()
	defer s.m.active.WithLabelValues("receive").Dec()

	body := &countingReader{r: s.opts.DownloadLimit.Reader(r.Context(), r.Body)}
	stored, err := up.Write(r.Context(), first, body)
	s.m.received.Add(float64(body.n))
	s.m.chunksIn.Add(float64(stored))
	if err != nil {
		s.log.Info("upload chunks failed", "upload", up.ID(), "chunk", first, "stored", stored, "err", err)
		switch {
		case errors.Is(err, io.ErrUnexpectedEOF):
			err = fmt.Errorf("%w: %v (%d whole chunks kept)", ErrBadRequest, err, stored)
		case errors.Is(err, transfer.ErrBadChunk):
			s.m.badChunks.Inc()
		}
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, UploadChunksResult{Stored: stored, Have: up.Info().Have})
}

func (s *Server) uploadCommit(w http.ResponseWriter, r *http.Request) {
	up, err := s.uploadFromPath(r)
	if err != nil {
		writeError(w, err)
		return
	}
	sh, err := up.Commit()
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Location", "/v1/shares/"+sh.ID().String())
	writeJSON(w, http.StatusCreated, Info(sh))
}

func (s *Server) uploadCancel(w http.ResponseWriter, r *http.Request) {
	if err := s.opts.Uploads.Remove(r.PathValue("uid")); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// uploadRoutes registers the upload session routes, if the server has
// sessions.
func (s *Server) uploadRoutes(handle func(string, access, http.HandlerFunc)) {
	if s.opts.Uploads == nil {
		return
	}
	handle("POST /v1/uploads", write, s.uploadCreate)
	handle("GET /v1/uploads", write, s.uploadList)
	handle("GET /v1/uploads/{uid}", write, s.uploadGet)
	handle("PUT /v1/uploads/{uid}/chunks/{n}", write, s.uploadChunks)
	handle("POST /v1/uploads/{uid}/commit", write, s.uploadCommit)
	handle("DELETE /v1/uploads/{uid}", write, s.uploadCancel)
}
