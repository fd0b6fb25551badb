package transfer

import (
	"fmt"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"github.com/zeebo/blake3"
)

// codecJSON is the multicodec of the bytes an ID addresses: the manifest, a
// JSON document ("json", 0x0200 in the multicodec table).
const codecJSON = 0x0200

// ID identifies a share: the BLAKE3-256 digest of its manifest's bytes. It is a
// comparable value type, usable as a map key; the zero ID is invalid. Its text
// form is a CIDv1 (see the package doc).
type ID struct {
	sum [32]byte
}

// idOf returns the ID of a manifest's exact bytes.
func idOf(manifest []byte) ID { return ID{sum: blake3.Sum256(manifest)} }

// ParseID parses the text form of an ID: a CIDv1 in any multibase, with
// codec json and a 32-byte BLAKE3 multihash.
func ParseID(s string) (ID, error) {
	if len(s) == 0 || len(s) > 128 {
		return ID{}, fmt.Errorf("%w: %q", ErrBadID, truncate(s, 80))
	}
	c, err := cid.Decode(s)
	if err != nil {
		return ID{}, fmt.Errorf("%w: %q: %v", ErrBadID, truncate(s, 80), err)
	}
	id, err := IDFromCID(c)
	if err != nil {
		return ID{}, fmt.Errorf("%w (%q)", err, truncate(s, 80))
	}
	return id, nil
}

// IDFromCID converts a CID back into an ID.
func IDFromCID(c cid.Cid) (ID, error) {
	if !c.Defined() || c.Version() != 1 || c.Type() != codecJSON {
		return ID{}, fmt.Errorf("%w: not a CIDv1 with codec json", ErrBadID)
	}
	dec, err := mh.Decode(c.Hash())
	if err != nil {
		return ID{}, fmt.Errorf("%w: %v", ErrBadID, err)
	}
	if dec.Code != mh.BLAKE3 || dec.Length != 32 || len(dec.Digest) != 32 {
		return ID{}, fmt.Errorf("%w: multihash is not 32-byte blake3", ErrBadID)
	}
	var id ID
	copy(id.sum[:], dec.Digest)
	if id.IsZero() {
		return ID{}, fmt.Errorf("%w: zero digest", ErrBadID)
	}
	return id, nil
}

// CID returns the ID as a CIDv1, the key announced on the DHT.
func (id ID) CID() cid.Cid {
	h, err := mh.Encode(id.sum[:], mh.BLAKE3)
	if err != nil {
		panic(err) // cannot happen: BLAKE3 with a 32-byte digest is valid
	}
	return cid.NewCidV1(codecJSON, h)
}

// IsZero reports whether id is the zero (invalid) ID.
func (id ID) IsZero() bool { return id == ID{} }

// String returns the base32 CIDv1 form, or "" for the zero ID.
func (id ID) String() string {
	if id.IsZero() {
		return ""
	}
	return id.CID().String()
}

// MarshalText implements encoding.TextMarshaler.
func (id ID) MarshalText() ([]byte, error) {
	if id.IsZero() {
		return nil, fmt.Errorf("%w: zero ID", ErrBadID)
	}
	return []byte(id.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
