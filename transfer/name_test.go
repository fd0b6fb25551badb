package transfer

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"file.txt", true},
		{"with space", true},
		{"ünïcödé", true},
		{"%2e%2e", true}, // literal percent signs: transfer never URL-decodes
		{"..foo", true},
		{"", false},
		{".", false},
		{"..", false},
		{"a/b", false},
		{"/etc", false},
		{`a\b`, false},
		{`..\..\x`, false},
		{"a\x00b", false},
		{"a\nb", false},
		{"a\x7fb", false},
		{"a\u0085b", false}, // C1 control
		{"\xff\xfe", false},
		{strings.Repeat("a", MaxNameLen), true},
		{strings.Repeat("a", MaxNameLen+1), false},
		// Bidirectional controls (Trojan Source, CVE-2021-42574).
		{"invoice\u202Efdp.exe", false}, // RIGHT-TO-LEFT OVERRIDE: shows "invoiceexe.pdf"
		{"a\u202Ab", false},             // LEFT-TO-RIGHT EMBEDDING
		{"a\u202Bb", false},             // RIGHT-TO-LEFT EMBEDDING
		{"a\u202Cb", false},             // POP DIRECTIONAL FORMATTING
		{"a\u202Db", false},             // LEFT-TO-RIGHT OVERRIDE
		{"a\u2066b", false},             // LEFT-TO-RIGHT ISOLATE
		{"a\u2067b", false},             // RIGHT-TO-LEFT ISOLATE
		{"a\u2068b", false},             // FIRST STRONG ISOLATE
		{"a\u2069b", false},             // POP DIRECTIONAL ISOLATE
		{"a\u200Eb", false},             // LEFT-TO-RIGHT MARK
		{"a\u200Fb", false},             // RIGHT-TO-LEFT MARK
		{"a\u061Cb", false},             // ARABIC LETTER MARK
		// Other invisible format characters.
		{"pay\u200Bpal", false},                   // ZERO WIDTH SPACE
		{"pay\u00ADpal", false},                   // SOFT HYPHEN
		{"a\u2060b", false},                       // WORD JOINER
		{"a\u2062b", false},                       // INVISIBLE TIMES
		{"\uFEFFname", false},                     // BYTE ORDER MARK
		{"a\u180Eb", false},                       // MONGOLIAN VOWEL SEPARATOR
		{"a\u3164b", false},                       // HANGUL FILLER
		{"a\u115Fb", false},                       // HANGUL CHOSEONG FILLER
		{"a\u034Fb", false},                       // COMBINING GRAPHEME JOINER
		{"a\uFFF9b", false},                       // INTERLINEAR ANNOTATION ANCHOR
		{"a\U000E0041b", false},                   // TAG LATIN CAPITAL LETTER A: hidden text
		{"\U0001F3F4\U000E0067\U000E0062", false}, // tags without CANCEL TAG
		{"\U000E0067\U000E0062\U000E007F", false}, // tags without a base
		{"a\u2028b", false},                       // LINE SEPARATOR
		{"a\u2029b", false},                       // PARAGRAPH SEPARATOR
		// What scripts and emoji need stays.
		{"\u0645\u06CC\u200C\u062E\u0648\u0627\u0647\u0645", true},                            // Persian, with ZERO WIDTH NON-JOINER
		{"\U0001F468\u200D\U0001F469\u200D\U0001F467", true},                                  // a family: ZERO WIDTH JOINER
		{"\u2764\uFE0F.txt", true},                                                            // VARIATION SELECTOR-16
		{"\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F flag", true}, // Scotland: a tag sequence
		{"\u05E9\u05DC\u05D5\u05DD.txt", true},                                                // Hebrew letters are right-to-left, not controls
		{"a\u3000b", true},                                                                    // IDEOGRAPHIC SPACE
		// Confusable separators are valid names; DisplayName escapes them.
		{"\uFF0E\uFF0E\uFF0Fetc", true},
		{"a\u2215b", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidName(tt.name)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrBadName) {
				t.Fatalf("error %v does not wrap ErrBadName", err)
			}
		})
	}
}

// TestValidNameErrorNamesTheCodePoint: the refusal names the code point, and
// prints the name escaped so the control cannot reorder the message.
func TestValidNameErrorNamesTheCodePoint(t *testing.T) {
	err := ValidName("invoice\u202Efdp.exe")
	if err == nil || !strings.Contains(err.Error(), "U+202E") || strings.ContainsRune(err.Error(), '\u202E') ||
		!strings.Contains(err.Error(), "bidirectional") {
		t.Fatalf("error: %v", err)
	}
}

func TestDisplayName(t *testing.T) {
	tests := []struct{ name, want string }{
		{"plain.txt", "plain.txt"},
		{"漢字 and ünïcödé", "漢字 and ünïcödé"},
		{"\uFF0E\uFF0E\uFF0Fetc\uFF0Fpasswd", `\uFF0E\uFF0E\uFF0Fetc\uFF0Fpasswd`},
		{"a\u2215b\u2044c", `a\u2215b\u2044c`},
		{"\u2025\uFF3Cx", `\u2025\uFF3Cx`},
		{"x\U0001D23Ay", `x\U0001D23Ay`},
		{"Wait\u2026.mp3", "Wait\u2026.mp3"}, // an ellipsis is not a separator
		{"ノート", "ノート"},                       // nor is Katakana NO
		// What a hostile or older server may send is escaped too.
		{"invoice\u202Efdp.exe", `invoice\u202Efdp.exe`},
		{"a\x1b[2Jb", `a\u001B[2Jb`},
		{`a\u0041`, `a\u005Cu0041`},
		{"a/b\xffc", `a\u002Fb\xFFc`},
		{"\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F", "\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F"},
		{"\U000E0041", `\U000E0041`},
	}
	for _, tt := range tests {
		if got := DisplayName(tt.name); got != tt.want {
			t.Errorf("DisplayName(%q) = %q, want %q", tt.name, got, tt.want)
		}
		if unescapeDisplay(DisplayName(tt.name)) != tt.name {
			t.Errorf("DisplayName(%q) does not round-trip", tt.name)
		}
	}
}

// unescapeDisplay inverts DisplayName.
func unescapeDisplay(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		n := 0
		switch {
		case strings.HasPrefix(s[i:], `\u`) && i+6 <= len(s):
			n = 4
		case strings.HasPrefix(s[i:], `\U`) && i+10 <= len(s):
			n = 8
		case strings.HasPrefix(s[i:], `\x`) && i+4 <= len(s):
			v, err := strconv.ParseUint(s[i+2:i+4], 16, 8)
			if err != nil {
				return "bad escape"
			}
			b.WriteByte(byte(v))
			i += 3
			continue
		default:
			b.WriteByte(s[i])
			continue
		}
		v, err := strconv.ParseUint(s[i+2:i+2+n], 16, 32)
		if err != nil {
			return "bad escape"
		}
		b.WriteRune(rune(v))
		i += 1 + n
	}
	return b.String()
}

// FuzzValidName: the validator parses untrusted names (from URLs, peers'
// manifests, directory listings). Whatever it accepts keeps the rule, shows
// no confusable separator through DisplayName, and derived names fit.
func FuzzValidName(f *testing.F) {
	f.Fuzz(func(t *testing.T, name string) {
		fit := FitName(name, ".tar")
		if utf8.ValidString(name) && (len(fit) > MaxNameLen || !utf8.ValidString(fit) || !strings.HasSuffix(fit, ".tar")) {
			t.Fatalf("FitName(%q) = %q", name, fit)
		}
		if w := workName(".", name, ".share-partial"); utf8.ValidString(name) && (len(w) > maxWorkName || !utf8.ValidString(w)) {
			t.Fatalf("workName(%q) = %q (%d bytes)", name, w, len(w))
		}
		if ValidName(name) != nil {
			return
		}
		if name == "" || name == "." || name == ".." || len(name) > MaxNameLen || !utf8.ValidString(name) {
			t.Fatalf("accepted %q", name)
		}
		runes := []rune(name)
		for k, r := range runes {
			switch {
			case r == '/' || r == '\\' || unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || unicode.In(r, unicode.Zl, unicode.Zp):
				t.Fatalf("accepted %q holding %U", name, r)
			case r >= 0xE0020 && r <= 0xE007F:
				// Only inside a tag sequence after U+1F3F4.
				j := k
				for j > 0 && runes[j-1] >= 0xE0020 && runes[j-1] <= 0xE007E {
					j--
				}
				if j == 0 || runes[j-1] != emojiTagBase {
					t.Fatalf("accepted %q holding a stray tag %U", name, r)
				}
			case unicode.In(r, unicode.Cf, unicode.Other_Default_Ignorable_Code_Point) && r != zwnj && r != zwj:
				t.Fatalf("accepted %q holding invisible %U", name, r)
			}
		}
	})
}

// FuzzDisplayName: whatever a server sends, what a person reads is valid
// UTF-8 without a control, an invisible or bidirectional character or a
// confusable separator, and says exactly which bytes the name holds.
func FuzzDisplayName(f *testing.F) {
	f.Fuzz(func(t *testing.T, name string) {
		d := DisplayName(name)
		if !utf8.ValidString(d) || unescapeDisplay(d) != name {
			t.Fatalf("DisplayName(%q) = %q", name, d)
		}
		if strings.ContainsFunc(d, func(r rune) bool {
			return confusables[r] || (refused(r) != "" && r != '\\' && !(r >= 0xE0020 && r <= 0xE007F))
		}) {
			t.Fatalf("DisplayName(%q) = %q holds a character it should escape", name, d)
		}
		if ValidName(name) == nil && !strings.ContainsFunc(name, func(r rune) bool { return confusables[r] }) && d != name {
			t.Fatalf("DisplayName changed the plain valid name %q to %q", name, d)
		}
	})
}

func TestValidPath(t *testing.T) {
	tests := []struct {
		path string
		ok   bool
	}{
		{"a", true},
		{"a/b/c.txt", true},
		{"", false},
		{"/a", false},
		{"a/", false},
		{"a//b", false},
		{"a/./b", false},
		{"a/../b", false},
		{"../a", false},
		{"..", false},
		{`a\..\b`, false},
		{"C:/x", true}, // a valid name on Unix; ':' is harmless here
		{"a/b\x00", false},
		{strings.Repeat("a/", MaxPathLen/2) + "a", false},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			if err := ValidPath(tt.path); (err == nil) != tt.ok {
				t.Fatalf("ValidPath(%q) = %v, want ok=%v", tt.path, err, tt.ok)
			}
		})
	}
}

// A symlink planted inside a share's data directory must not let writes or
// reads escape it: every access goes through os.Root.
func TestTreeRefusesSymlinkEscape(t *testing.T) {
	outside := t.TempDir()
	target := filepath.Join(outside, "victim")
	if err := os.WriteFile(target, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := mustManifest(t, "d", true, MinChunkSize, map[string]string{"x/f": strings.Repeat("A", 100)})
	dir := filepath.Join(t.TempDir(), "share")
	sh, err := CreateShare(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	// Replace the directory x with a symlink to outside.
	x := filepath.Join(sh.DataPath(), "x")
	if err := os.RemoveAll(x); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, x); err != nil {
		t.Fatal(err)
	}
	os.Rename(target, filepath.Join(outside, "f"))
	sh.tree.closeFiles()
	data := []byte(strings.Repeat("A", 100))
	if err := sh.PutChunk(0, data); err == nil {
		t.Fatal("PutChunk wrote through a symlink that leaves the share")
	}
	got, _ := os.ReadFile(filepath.Join(outside, "f"))
	if string(got) != "precious" {
		t.Fatalf("file outside the share changed: %q", got)
	}
}
