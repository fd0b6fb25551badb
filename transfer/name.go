package transfer

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on names and paths, in bytes.
const (
	MaxNameLen = 255  // one path element, as on most file systems
	MaxPathLen = 4096 // a whole relative path
)

// ValidName checks one path element: a share's name or one element of a path
// inside a directory share. It refuses the empty string, "." and "..", '/',
// '\\', NUL and other control characters, invalid UTF-8 and names over
// MaxNameLen bytes. Names that pass are safe to use as a single file name.
func ValidName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrBadName)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: %q...: longer than %d bytes", ErrBadName, name[:32], MaxNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("%w: %q", ErrBadName, name)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: %q: not UTF-8", ErrBadName, name)
	}
	for _, r := range name {
		switch {
		case r == '/' || r == '\\':
			return fmt.Errorf("%w: %q: contains %q", ErrBadName, name, r)
		case unicode.IsControl(r):
			return fmt.Errorf("%w: %q: contains control character %U", ErrBadName, name, r)
		}
	}
	return nil
}

// ValidPath checks a relative slash-separated path inside a directory share:
// no leading or trailing slash, no empty, "." or ".." elements, every element
// a ValidName, at most MaxPathLen bytes.
func ValidPath(p string) error {
	if len(p) > MaxPathLen {
		return fmt.Errorf("%w: path longer than %d bytes", ErrBadName, MaxPathLen)
	}
	if p == "" {
		return fmt.Errorf("%w: empty path", ErrBadName)
	}
	for elem := range strings.SplitSeq(p, "/") {
		if err := ValidName(elem); err != nil {
			return fmt.Errorf("path %q: %w", p, err)
		}
	}
	return nil
}
