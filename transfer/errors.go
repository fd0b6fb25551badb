package transfer

import (
	"errors"
	"fmt"
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
	// ErrLinked: a file of a share has other hard links (a `share get`
	// output made from the store's copy, see LocalSource); the store never
	// writes into it, so that the user's file cannot change under them. To
	// repair such a share, remove it (the user's file stays as it is) and
	// fetch it again into new files.
	ErrLinked = errors.New("file has other hard links; not written")
	// ErrBadChunk is matched by every *ChunkError (errors.Is).
	ErrBadChunk = errors.New("chunk failed verification")
)

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
