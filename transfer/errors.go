package transfer

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"syscall"
)

// Sentinel errors. Functions wrap them with %w and the operation; the server
// and the peer protocol each translate them in one place (an HTTP status, a
// wire code) and back.
var (
	// ErrNotFound: no share with that ID.
	ErrNotFound = errors.New("share not found")
	// ErrChunkNotHeld: the share is known but this chunk is not held (yet).
	ErrChunkNotHeld = errors.New("chunk not held")
	// ErrChunkRange: the chunk index is outside the share.
	ErrChunkRange = errors.New("chunk index out of range")
	// ErrIncomplete: the operation needs a complete share.
	ErrIncomplete = errors.New("share is incomplete")
	// ErrBadManifest: a manifest that does not decode, validate or match its ID.
	ErrBadManifest = errors.New("invalid manifest")
	// ErrBadID: a string that is not a share ID.
	ErrBadID = errors.New("invalid share ID")
	// ErrBadName: a name or path that is empty, absolute, has . or .. elements,
	// control characters, backslashes or is too long.
	ErrBadName = errors.New("invalid name")
	// ErrTooLarge: input over a stated limit.
	ErrTooLarge = errors.New("too large")
	// ErrExists: the destination already exists.
	ErrExists = errors.New("already exists")
	// ErrRemoved: the share was removed while in use.
	ErrRemoved = errors.New("share was removed")
	// ErrNoSources: a download ran out of sources.
	ErrNoSources = errors.New("no usable source")
	// ErrStalled: a download made no progress for its stall timeout.
	ErrStalled = errors.New("download stalled")
	// ErrBadChunk is matched by every *ChunkError (errors.Is).
	ErrBadChunk = errors.New("chunk failed verification")
	// ErrBusy: the source is at a limit right now (upload slots, concurrent
	// uploads, memory); retry after a backoff, or ask another source. The
	// server's HTTP 503 and the chunk protocol's busy status both mean it.
	ErrBusy = errors.New("source busy")
	// ErrBadRequest: the source could not parse the request.
	ErrBadRequest = errors.New("bad request")
	// ErrNoSpace: the disk that was to hold the data is full.
	ErrNoSpace = errors.New("out of disk space")

	errClosed = errors.New("share closed")
)

// permanentErrors are the sentinels of errors that retrying cannot fix; see
// Permanent.
var permanentErrors = []error{
	ErrSourceRefused, // a wrong token or a refusal stays so
	ErrNotFound,      // the source does not hold the share
	ErrRemoved,       // the share was deleted while in use
	ErrChunkRange,    // the request is outside the share
	ErrBadID,         // the request itself is wrong: the same request fails again
	ErrBadName,
	ErrBadManifest,
	ErrBadRequest,
	ErrTooLarge,
	ErrBadChunk,  // for a download the source is dropped; for an upload the local file changed
	ErrExists,    // the destination is there; the user decides
	ErrNoSources, // every source failed permanently
	ErrNoSpace,   // a full disk needs an operator
	errClosed,
	syscall.ENOSPC,
	syscall.EDQUOT,
	syscall.EROFS,
}

// Permanent reports whether err is one that retrying the same request
// against the same source cannot fix; every retry and backoff loop of both
// modes asks it (a download's sources, uploads' chunks, the peer's DHT
// announcements and bootstrap dials). It is decided on error identities
// (errors.Is and errors.As), never on an error's text. Permanent are:
//
//   - the sentinels in permanentErrors: a refusal (wrong token, not
//     allowed), a share or chunk the source does not have for good (not
//     found, removed, out of range), a request the source cannot accept
//     (bad ID, name, manifest or request; too large; a chunk that fails
//     verification), a destination that exists, a download whose every
//     source failed for good, and a full disk or quota or a read-only file
//     system (ENOSPC, EDQUOT, EROFS: they need an operator);
//   - a host name that does not resolve (*net.DNSError with IsNotFound, as
//     curl gives up at once on "Could not resolve host");
//   - a TLS peer whose certificate does not verify, or that does not speak
//     TLS at all (*tls.CertificateVerificationError, x509 errors,
//     *tls.RecordHeaderError): a wrong --cacert or scheme.
//
// Everything else is transient, in particular ErrBusy (a source at a
// limit), ErrChunkNotHeld (it may get the chunk), ErrIncomplete, refused
// and reset connections (a server restarting), timeouts, a temporary DNS
// failure and any error this function does not know: an unknown error is
// retried, within the caller's stall timeout. A cancelled context is the
// caller's own to check: Permanent does not decide on it.
func Permanent(err error) bool {
	if err == nil {
		return false
	}
	for _, target := range permanentErrors {
		if errors.Is(err, target) {
			return true
		}
	}
	if dns, ok := errors.AsType[*net.DNSError](err); ok {
		return dns.IsNotFound
	}
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return true
	}
	if _, ok := errors.AsType[tls.RecordHeaderError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.HostnameError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.CertificateInvalidError](err); ok {
		return true
	}
	return false
}

// ChunkError reports a chunk whose bytes do not hash to the manifest's entry.
type ChunkError struct {
	ID     ID
	Index  int
	Source string // who sent the bytes; "" for local data
	Want   Hash
	Got    Hash
	Len    int // bytes received
}

func (e *ChunkError) Error() string {
	src := e.Source
	if src == "" {
		src = "local data"
	}
	return fmt.Sprintf("chunk %d of %s from %s failed verification: hash %s, want %s",
		e.Index, e.ID, src, e.Got.Short(), e.Want.Short())
}

// Is makes errors.Is(err, ErrBadChunk) true for every ChunkError.
func (e *ChunkError) Is(target error) bool { return target == ErrBadChunk }

// ErrInUse: the data directory is locked by another share process (see
// OpenStore); a second daemon needs a directory of its own.
var ErrInUse = errors.New("in use by another share process")
