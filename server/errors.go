package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"syscall"

	"github.com/sharefiles/share/transfer"
)

// Errors of the HTTP layer itself.
var (
	// ErrUnauthorized: missing or wrong token. It is a transfer.ErrSourceRefused,
	// so a download does not retry it.
	ErrUnauthorized error = refusal("unauthorized (missing or wrong token)")
	// ErrForbidden: a request refused whoever asks (a foreign Host or Origin).
	ErrForbidden error = refusal("forbidden")
	// ErrBusy: the server is at a bound (concurrent uploads); retry later.
	// It is transfer.ErrBusy itself, so a client's download treats a 503 as
	// a busy source, not a failure.
	ErrBusy = transfer.ErrBusy
	// ErrBadRequest: a malformed request (transfer.ErrBadRequest).
	ErrBadRequest = transfer.ErrBadRequest
	// ErrNoSpace: the server's disk is full (transfer.ErrNoSpace).
	ErrNoSpace = transfer.ErrNoSpace
	// ErrNotSupported: the backend lacks the ability a route needs (a
	// server cannot fetch a share from elsewhere; a peer can).
	ErrNotSupported = errors.New("not supported")
	// ErrHeld: an upload session's run of chunks starts at a chunk the
	// session holds already: a body sent again (see uploadChunks). The
	// sender asks the session which chunks are missing and sends those.
	ErrHeld = errors.New("chunk already held")
)

// refusal is an error that is also a transfer.ErrSourceRefused.
type refusal string

func (r refusal) Error() string        { return string(r) }
func (r refusal) Is(target error) bool { return target == transfer.ErrSourceRefused }

// remoteError is an error the server reported: its message, matching the
// sentinel its code names.
type remoteError struct {
	msg string
	err error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.err }

// apiError is the JSON body of every error response.
type apiError struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// The wire codes, each tied to one sentinel and one status. This table is the
// single translation between errors and HTTP, in both directions.
var codes = []struct {
	code   string
	status int
	err    error
}{
	{"unauthorized", http.StatusUnauthorized, ErrUnauthorized},
	{"forbidden", http.StatusForbidden, ErrForbidden},
	{"not_found", http.StatusNotFound, transfer.ErrNotFound},
	{"chunk_not_held", http.StatusNotFound, transfer.ErrChunkNotHeld},
	{"chunk_range", http.StatusRequestedRangeNotSatisfiable, transfer.ErrChunkRange},
	{"incomplete", http.StatusConflict, transfer.ErrIncomplete},
	{"held", http.StatusConflict, ErrHeld},
	{"bad_manifest", http.StatusBadRequest, transfer.ErrBadManifest},
	{"bad_id", http.StatusBadRequest, transfer.ErrBadID},
	{"bad_name", http.StatusBadRequest, transfer.ErrBadName},
	{"bad_request", http.StatusBadRequest, ErrBadRequest},
	{"too_large", http.StatusRequestEntityTooLarge, transfer.ErrTooLarge},
	{"bad_chunk", http.StatusUnprocessableEntity, transfer.ErrBadChunk},
	{"removed", http.StatusGone, transfer.ErrRemoved},
	{"busy", http.StatusServiceUnavailable, ErrBusy},
	{"no_space", http.StatusInsufficientStorage, ErrNoSpace},
	{"not_supported", http.StatusNotImplemented, ErrNotSupported},
}

// classify maps an error to its wire code and status. Unknown errors are
// internal: their text stays in the log, never on the wire.
func classify(err error) (code string, status int, public bool) {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return "too_large", http.StatusRequestEntityTooLarge, true
	case errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT):
		return "no_space", http.StatusInsufficientStorage, false
	}
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code, c.status, true
		}
	}
	return "internal", http.StatusInternalServerError, false
}

// writeError answers with the JSON error for err.
func writeError(w http.ResponseWriter, err error) {
	code, status, public := classify(err)
	msg := err.Error()
	if !public {
		msg = http.StatusText(status)
	}
	h := w.Header()
	h.Del("Content-Disposition")
	h.Del("ETag")
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	switch status {
	case http.StatusUnauthorized:
		// One header per challenge (RFC 9110 11.6.1): browsers read only
		// the first challenge of a header, and prompt only for Basic, so
		// Basic comes first, with the charset of RFC 7617 2.1.
		challenge(h)
	case http.StatusServiceUnavailable:
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(apiError{Error: msg, Code: code})
}

// challenge sets the 401's challenges.
func challenge(h http.Header) {
	h.Del("WWW-Authenticate")
	h.Add("WWW-Authenticate", `Basic realm="share", charset="UTF-8"`)
	h.Add("WWW-Authenticate", `Bearer realm="share"`)
}

// maxErrorBody bounds how much of an error response the client reads.
const maxErrorBody = 64 << 10

// responseError turns a non-2xx response into an error that wraps the
// sentinel its code names (or, for an unknown code, a plain error, which a
// download treats as transient). It consumes and closes the body.
func responseError(resp *http.Response, op string) error {
	defer resp.Body.Close()
	var ae apiError
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if json.Unmarshal(b, &ae) != nil || ae.Error == "" {
		ae.Error = http.StatusText(resp.StatusCode)
	}
	for _, c := range codes {
		if c.code == ae.Code {
			return fmt.Errorf("%s: %w", op, &remoteError{msg: ae.Error, err: c.err})
		}
	}
	// No code we know (a HEAD, a proxy, another server): the status alone.
	if err := statusErrors[resp.StatusCode]; err != nil {
		return fmt.Errorf("%s: %w", op, &remoteError{msg: fmt.Sprintf("%s (HTTP %d)", ae.Error, resp.StatusCode), err: err})
	}
	return fmt.Errorf("%s: %s (HTTP %d)", op, ae.Error, resp.StatusCode)
}

// statusErrors are the sentinels of responses without a known code, by
// status (RFC 9110, section 15; 429 is RFC 6585, section 4). A status not
// listed gives a plain error, which is transient (transfer.Permanent).
var statusErrors = map[int]error{
	http.StatusBadRequest:            ErrBadRequest,
	http.StatusUnauthorized:          ErrUnauthorized,
	http.StatusForbidden:             ErrForbidden,
	http.StatusNotFound:              transfer.ErrNotFound,
	http.StatusGone:                  transfer.ErrRemoved,
	http.StatusRequestEntityTooLarge: transfer.ErrTooLarge,
	http.StatusTooManyRequests:       ErrBusy,
	http.StatusServiceUnavailable:    ErrBusy,
	http.StatusInsufficientStorage:   ErrNoSpace,
}
