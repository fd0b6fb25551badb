package transfer

import (
	"fmt"
	"strings"
	"unicode/utf8"

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

// idPrefix and idLen describe the text form every ID has: the multibase
// prefix b (base32), then the CID's version, codec and multihash header,
// which are the same for every share, then the digest.
var (
	idLen    = len(ID{sum: [32]byte{1}}.String())
	idPrefix = ID{sum: [32]byte{1}}.String()[:9] // "bagaaihra"
)

// ParseID parses the text form of an ID: a CIDv1 in any multibase, with
// codec json and a 32-byte BLAKE3 multihash. Its errors wrap ErrBadID and
// say, in words a user can act on, why s is not a share ID (cut short,
// mistyped, another kind of CID), without the CID library's wording.
func ParseID(s string) (ID, error) {
	shown := strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, truncate(s, 80))
	what := fmt.Sprintf("a share ID is %q and then %d letters a-z and digits 2-7, as 'share put' and 'share ls' print it", idPrefix, idLen-len(idPrefix))
	bad := func(why string) error {
		return fmt.Errorf("%w %q: %s; %s", ErrBadID, shown, why, what)
	}
	if len(s) == 0 {
		return ID{}, fmt.Errorf("%w: empty; %s", ErrBadID, what)
	}
	if len(s) > 128 {
		return ID{}, bad("too long")
	}
	c, err := cid.Decode(s)
	if err != nil {
		lower := strings.ToLower(s)
		switch {
		case strings.HasPrefix(idPrefix, lower) || (strings.HasPrefix(lower, idPrefix) && len(s) < idLen):
			return ID{}, bad(fmt.Sprintf("cut short, %d of %d characters (copy it whole)", len(s), idLen))
		case strings.HasPrefix(lower, idPrefix) && len(s) > idLen:
			return ID{}, bad(fmt.Sprintf("%d characters, %d too many", len(s), len(s)-idLen))
		case strings.HasPrefix(lower, idPrefix):
			if k := strings.IndexFunc(lower, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= '2' && r <= '7') }); k >= 0 {
				r, _ := utf8.DecodeRuneInString(s[k:])
				return ID{}, bad(fmt.Sprintf("%q at position %d cannot be in a share ID (mistyped?)", r, k+1))
			}
			return ID{}, bad("mistyped")
		}
		return ID{}, bad("not a share ID")
	}
	if _, err := IDFromCID(c); err != nil {
		return ID{}, bad("a content ID of another kind (of IPFS?), not of a share")
	}
	return IDFromCID(c)
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
