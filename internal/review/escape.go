package review

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Escape returns s with every character a terminal or a browser could
// use to hide, move or reorder text replaced by a visible escape, and
// backslash doubled so that the result reads back to exactly s (Unescape):
// two different strings never escape to the same text.
//
//	\\          a backslash
//	\n \t \r    newline, tab, carriage return
//	\xNN        any other C0 control or DEL (\x1b is ESC), and each byte
//	            of s that is not part of valid UTF-8 (\xff)
//	\u{XXXX}    every other character that is not plainly visible: C1
//	            controls, format characters (Unicode Cf: bidi controls
//	            U+202A–E and U+2066–9, marks U+200E/F and U+061C,
//	            zero-width characters, Tag characters U+E0000–E007F),
//	            variation selectors, default-ignorable and noncharacter
//	            code points, line and paragraph separators, spaces other
//	            than U+0020, private-use and unassigned code points
//
// Everything else (letters, marks, digits, punctuation, symbols, U+0020)
// is kept as is. Escape is by class, from the Unicode tables of the Go
// release that built rulelock; a code point assigned by a later Unicode
// version is unassigned here, and so escaped.
func Escape(s string) string {
	if isPlain(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n <= 1 {
			fmt.Fprintf(&b, `\x%02x`, s[i])
			i++
			continue
		}
		writeRune(&b, r)
		i += n
	}
	return b.String()
}

func isPlain(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '\\' {
			return false
		}
	}
	return true
}

func writeRune(b *strings.Builder, r rune) {
	switch {
	case r == '\\':
		b.WriteString(`\\`)
	case r == '\n':
		b.WriteString(`\n`)
	case r == '\t':
		b.WriteString(`\t`)
	case r == '\r':
		b.WriteString(`\r`)
	case r < 0x20 || r == 0x7f:
		fmt.Fprintf(b, `\x%02x`, r)
	case Hidden(r):
		fmt.Fprintf(b, `\u{%X}`, r)
	default:
		b.WriteRune(r)
	}
}

// Hidden reports whether r is a character Escape shows as \u{XXXX} or
// \xNN: one that is not plainly visible as itself. U+0020 is visible; the
// ASCII controls, tab and newline included, are hidden.
func Hidden(r rune) bool {
	switch {
	case r == ' ':
		return false
	case r < 0x20 || r == 0x7f:
		return true
	case r < 0x7f:
		return false
	}
	return unicode.In(r,
		unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs, // controls, format, private use, surrogates
		unicode.Zs, unicode.Zl, unicode.Zp, // spaces other than U+0020, separators
		unicode.Variation_Selector,
		unicode.Other_Default_Ignorable_Code_Point, // U+115F, U+3164 (Hangul fillers), U+FFA0, ...
		unicode.Noncharacter_Code_Point,
		unicode.Bidi_Control, unicode.Join_Control,
	) || !assigned(r)
}

// assigned reports whether r has a general category other than Cn.
// (Go's unicode.C table covers unassigned code points too, so the C
// categories are named one by one.)
func assigned(r rune) bool {
	return unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z, unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs)
}

// Unescape reverses Escape. It fails on text Escape does not produce.
func Unescape(e string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(e); {
		c := e[i]
		if c != '\\' {
			r, n := utf8.DecodeRuneInString(e[i:])
			if (r == utf8.RuneError && n <= 1) || Hidden(r) {
				return "", fmt.Errorf("offset %d: unescaped %U", i, r)
			}
			b.WriteString(e[i : i+n])
			i += n
			continue
		}
		if i+1 >= len(e) {
			return "", fmt.Errorf("offset %d: lone backslash", i)
		}
		switch e[i+1] {
		case '\\':
			b.WriteByte('\\')
			i += 2
		case 'n':
			b.WriteByte('\n')
			i += 2
		case 't':
			b.WriteByte('\t')
			i += 2
		case 'r':
			b.WriteByte('\r')
			i += 2
		case 'x':
			var v byte
			if i+4 > len(e) {
				return "", fmt.Errorf("offset %d: short \\x escape", i)
			}
			if _, err := fmt.Sscanf(e[i+2:i+4], "%02x", &v); err != nil || fmt.Sprintf("%02x", v) != e[i+2:i+4] {
				return "", fmt.Errorf("offset %d: bad \\x escape", i)
			}
			b.WriteByte(v)
			i += 4
		case 'u':
			end := strings.IndexByte(e[i:], '}')
			if end < 0 || !strings.HasPrefix(e[i:], `\u{`) {
				return "", fmt.Errorf("offset %d: bad \\u escape", i)
			}
			var r rune
			hex := e[i+3 : i+end]
			if _, err := fmt.Sscanf(hex, "%X", &r); err != nil || fmt.Sprintf("%X", r) != hex || !utf8.ValidRune(r) {
				return "", fmt.Errorf("offset %d: bad \\u escape", i)
			}
			b.WriteRune(r)
			i += end + 1
		default:
			return "", fmt.Errorf("offset %d: unknown escape", i)
		}
	}
	return b.String(), nil
}

func utf8Valid(b []byte) bool { return utf8.Valid(b) }
