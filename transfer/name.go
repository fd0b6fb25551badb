package transfer

import (
	"encoding/hex"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/zeebo/blake3"
)

// Limits on names and paths, in bytes.
const (
	MaxNameLen = 255  // one path element, as on most file systems
	MaxPathLen = 4096 // a whole relative path
)

// ValidName checks one path element: a share's name or one element of a path
// inside a directory share. It is the rule of the package doc's "Names"
// section: it refuses the empty string, "." and "..", '/', '\\', NUL and
// other control characters, invalid UTF-8, names over MaxNameLen bytes,
// bidirectional controls and invisible format characters. The error names
// the code point. Names that pass are safe to use as a single file name.
func ValidName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrBadName)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: %q...: longer than %d bytes", ErrBadName, cutName(name, 32), MaxNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("%w: %q", ErrBadName, name)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: %q: not UTF-8", ErrBadName, name)
	}
	for i := 0; i < len(name); {
		r, size := utf8.DecodeRuneInString(name[i:])
		if r == emojiTagBase {
			i += size + emojiTags(name[i+size:])
			continue
		}
		if why := refused(r); why != "" {
			return fmt.Errorf("%w: %q: contains %U, %s", ErrBadName, name, r, why)
		}
		i += size
	}
	return nil
}

// refused says why r may not appear in a name, or "" if it may.
func refused(r rune) string {
	switch {
	case r == '/' || r == '\\':
		return "a path separator"
	case unicode.IsControl(r):
		return "a control character"
	case unicode.Is(unicode.Bidi_Control, r):
		return "a bidirectional control, which makes a listing show other text than the name (Trojan Source, CVE-2021-42574)"
	case r == zwnj || r == zwj || unicode.Is(unicode.Variation_Selector, r):
		return "" // invisible, but Persian, Indic scripts, CJK and emoji need them
	case unicode.In(r, unicode.Cf, unicode.Other_Default_Ignorable_Code_Point):
		return "an invisible format character, which hides text in a listing"
	case unicode.In(r, unicode.Zl, unicode.Zp):
		return "a line or paragraph separator"
	}
	return ""
}

const (
	zwnj         = '\u200C' // ZERO WIDTH NON-JOINER
	zwj          = '\u200D' // ZERO WIDTH JOINER
	emojiTagBase = '\U0001F3F4'
)

// emojiTags returns the length of the emoji tag sequence's tags that start
// s (UTS #51: tag characters U+E0020-U+E007E ended by CANCEL TAG U+E007F,
// as in the flags of Scotland or Wales after U+1F3F4), or 0 if s does not
// start with a whole one: tags anywhere else are refused as invisible.
func emojiTags(s string) int {
	n := 0
	for {
		r, size := utf8.DecodeRuneInString(s[n:])
		switch {
		case r >= 0xE0020 && r <= 0xE007E:
			n += size
		case r == 0xE007F && n > 0:
			return n + size
		default:
			return 0
		}
	}
}

// Confusable separators: characters that look like '/', '\\' or '.' (from
// the confusables of Unicode TR #39), so that a name holding them can look
// like a path ("．．／etc" as "../etc") in a listing. Names may hold them;
// DisplayName escapes them.
var confusables = map[rune]bool{
	'\u2044':     true, // FRACTION SLASH
	'\u2215':     true, // DIVISION SLASH
	'\u2571':     true, // BOX DRAWINGS LIGHT DIAGONAL UPPER RIGHT TO LOWER LEFT
	'\u27CB':     true, // MATHEMATICAL RISING DIAGONAL
	'\u29F8':     true, // BIG SOLIDUS
	'\u3033':     true, // VERTICAL KANA REPEAT MARK UPPER HALF
	'\u31D3':     true, // CJK STROKE SP
	'\uFF0F':     true, // FULLWIDTH SOLIDUS
	'\U0001D23A': true, // GREEK INSTRUMENTAL NOTATION SYMBOL-47
	'\u2216':     true, // SET MINUS
	'\u2572':     true, // BOX DRAWINGS LIGHT DIAGONAL UPPER LEFT TO LOWER RIGHT
	'\u27CD':     true, // MATHEMATICAL FALLING DIAGONAL
	'\u29F5':     true, // REVERSE SOLIDUS OPERATOR
	'\u29F9':     true, // BIG REVERSE SOLIDUS
	'\uFE68':     true, // SMALL REVERSE SOLIDUS
	'\uFF3C':     true, // FULLWIDTH REVERSE SOLIDUS
	'\u2024':     true, // ONE DOT LEADER
	'\u2025':     true, // TWO DOT LEADER
	'\uFE52':     true, // SMALL FULL STOP
	'\uFF0E':     true, // FULLWIDTH FULL STOP
}

// DisplayName returns a name as a person should read it in a list (share
// ls, the HTML index): each confusable separator is written as a Go-style
// escape, \uFF0F (\U0001D23A beyond the BMP). It takes any string, so that a
// client can show what a server or peer sent: what ValidName refuses is
// escaped too (a control, a bidirectional control, '\\' as \u005C), and
// each byte of invalid UTF-8 as \xFF. A backslash in the result always
// starts an escape, so distinct names stay distinct. Machine-readable output
// (JSON, the tar) keeps the real name.
func DisplayName(name string) string {
	var b strings.Builder
	for i := 0; i < len(name); {
		r, size := utf8.DecodeRuneInString(name[i:])
		if r == emojiTagBase {
			if n := emojiTags(name[i+size:]); n > 0 {
				b.WriteString(name[i : i+size+n])
				i += size + n
				continue
			}
		}
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02X`, name[i])
		case confusables[r] || refused(r) != "":
			if r > 0xFFFF {
				fmt.Fprintf(&b, `\U%08X`, r)
			} else {
				fmt.Fprintf(&b, `\u%04X`, r)
			}
		default:
			b.WriteString(name[i : i+size])
		}
		i += size
	}
	return b.String()
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

// cutName returns the longest prefix of name of at most n bytes that ends at
// a rune boundary.
func cutName(name string, n int) string {
	if len(name) <= n {
		return name
	}
	for n > 0 && !utf8.RuneStart(name[n]) {
		n--
	}
	return name[:n]
}

// FitName returns name+suffix, with name cut at a rune boundary if needed so
// the result is at most MaxNameLen bytes: a name derived from a valid name
// (a directory share's "NAME.tar") fits wherever the name fits.
func FitName(name, suffix string) string {
	return cutName(name, MaxNameLen-len(suffix)) + suffix
}

// maxWorkName bounds, in bytes, the names of the working files share makes
// beside a user's files (a download's partial directory): well below
// MaxNameLen, so names derived from them (CreateShare's temporary one) fit.
const maxWorkName = 100

// workName derives the name of a working file from a user's name:
// prefix+name+suffix if that fits in maxWorkName bytes; else the name is cut
// at a rune boundary and followed by "~" and 16 hex digits of a hash of the
// whole name, so the result still begins like the name (a user listing the
// directory knows it), stays unique and is the same on every run (a rerun
// finds it). A name that fits keeps the form share has always used.
func workName(prefix, name, suffix string) string {
	if len(prefix)+len(name)+len(suffix) <= maxWorkName {
		return prefix + name + suffix
	}
	sum := blake3.Sum256([]byte(name))
	tag := "~" + hex.EncodeToString(sum[:8])
	return prefix + cutName(name, maxWorkName-len(prefix)-len(tag)-len(suffix)) + tag + suffix
}
