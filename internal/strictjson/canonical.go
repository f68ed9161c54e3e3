package strictjson

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"unicode/utf8"
)

// maxCanonicalDepth bounds the nesting Canonical follows, so that a value
// containing itself is an error rather than a stack overflow.
const maxCanonicalDepth = 10000

// maxSafeInteger is 2^53, beyond which not every integer is a float64.
const maxSafeInteger = 1 << 53

// Canonical encodes v (values of the types Decode returns; also accept int, int64, uint64 within ±2^53,
// json.Number-free) as RFC 8785 JCS bytes. Error for unsupported types, NaN/Inf, invalid UTF-8 strings.
//
// The encoding has no whitespace; object members are sorted by the UTF-16
// code units of their names; strings escape only '"', '\\' and the control
// characters below U+0020 (as \b \t \n \f \r, or \u00xx with lowercase hex)
// and carry everything else as literal UTF-8; numbers are written as
// ECMAScript writes them: 1e+21, 1e-7, 0.000001, 123456789012345680000.
// Integers of type int, int64 and uint64 are written as the float64 of the same
// value, so they must lie within ±2^53.
func Canonical(v any) ([]byte, error) {
	return AppendCanonical(nil, v)
}

// AppendCanonical is Canonical appending to dst (for allocation-free hot paths).
// On error it returns dst unchanged.
func AppendCanonical(dst []byte, v any) ([]byte, error) {
	out, err := appendValue(dst, v, 0)
	if err != nil {
		return dst, err
	}
	return out, nil
}

func appendValue(dst []byte, v any, depth int) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(dst, "null"...), nil
	case bool:
		if v {
			return append(dst, "true"...), nil
		}
		return append(dst, "false"...), nil
	case string:
		return appendString(dst, v)
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return dst, fmt.Errorf("strictjson: cannot encode %v", v)
		}
		return appendNumber(dst, v), nil
	case int:
		return appendInt(dst, int64(v))
	case int64:
		return appendInt(dst, v)
	case uint64:
		if v > maxSafeInteger {
			return dst, fmt.Errorf("strictjson: integer %d is outside ±2^53", v)
		}
		return appendNumber(dst, float64(v)), nil
	case []any:
		return appendArray(dst, v, depth+1)
	case map[string]any:
		return appendObject(dst, v, depth+1)
	default:
		return dst, fmt.Errorf("strictjson: cannot encode a value of type %T", v)
	}
}

func appendInt(dst []byte, v int64) ([]byte, error) {
	if v > maxSafeInteger || v < -maxSafeInteger {
		return dst, fmt.Errorf("strictjson: integer %d is outside ±2^53", v)
	}
	return appendNumber(dst, float64(v)), nil
}

var errTooDeep = errors.New("strictjson: value nested too deeply (or containing itself)")

func appendArray(dst []byte, a []any, depth int) ([]byte, error) {
	if depth > maxCanonicalDepth {
		return dst, errTooDeep
	}
	dst = append(dst, '[')
	for i, e := range a {
		if i > 0 {
			dst = append(dst, ',')
		}
		var err error
		if dst, err = appendValue(dst, e, depth); err != nil {
			return dst, err
		}
	}
	return append(dst, ']'), nil
}

func appendObject(dst []byte, m map[string]any, depth int) ([]byte, error) {
	if depth > maxCanonicalDepth {
		return dst, errTooDeep
	}
	var small [16]string
	keys := small[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareUTF16)
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		var err error
		if dst, err = appendString(dst, k); err != nil {
			return dst, err
		}
		dst = append(dst, ':')
		if dst, err = appendValue(dst, m[k], depth); err != nil {
			return dst, err
		}
	}
	return append(dst, '}'), nil
}

// compareUTF16 orders two UTF-8 strings by their UTF-16 code units, as
// RFC 8785 sorts object members. That is code point order, and so byte
// order, except that a character above U+FFFF (a surrogate pair,
// 0xD800–0xDBFF first) sorts before U+E000–U+FFFF.
func compareUTF16(a, b string) int {
	n := min(len(a), len(b))
	i := 0
	for i < n && a[i] == b[i] {
		i++
	}
	if i == n {
		return len(a) - len(b)
	}
	for i > 0 && !utf8.RuneStart(a[i]) { // back to the start of the differing character
		i--
	}
	ra, _ := utf8.DecodeRuneInString(a[i:])
	rb, _ := utf8.DecodeRuneInString(b[i:])
	if ua, ub := firstUnit(ra), firstUnit(rb); ua != ub {
		return int(ua) - int(ub)
	}
	return int(ra) - int(rb) // same high surrogate: the low surrogates follow code point order
}

// firstUnit returns the first UTF-16 code unit of r.
func firstUnit(r rune) rune {
	if r >= 0x10000 {
		return 0xD800 + (r-0x10000)>>10
	}
	return r
}

// appendString appends s as a JSON string, escaped as RFC 8785 requires.
func appendString(dst []byte, s string) ([]byte, error) {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				return dst, fmt.Errorf("strictjson: invalid UTF-8 in string at byte %d", i)
			}
			i += size
			continue
		}
		if c >= 0x20 && c != '"' && c != '\\' {
			i++
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
		}
		i++
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"'), nil
}
