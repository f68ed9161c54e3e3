package strictjson

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// Decode parses data strictly into: map[string]any, []any, string, float64, bool, nil.
//
// data must hold exactly one JSON value, optionally surrounded by JSON
// whitespace. Anything that RFC 8259 does not allow, or that two parsers could
// read differently (see the package documentation), is an [*Error]; nothing is
// ever repaired. Numbers become float64, with -0 read as 0.
//
// The result does not share memory with data, which the caller may reuse.
// Decode is safe for concurrent use.
func Decode(data []byte, lim Limits) (any, error) {
	if max := lim.maxBytes(); len(data) > max {
		return nil, newError(data, max, CodeTooLarge, fmt.Sprintf("input is %d bytes, more than the limit of %d", len(data), max))
	}
	if len(data) >= 3 && data[0] == 0xEF && data[1] == 0xBB && data[2] == 0xBF {
		return nil, newError(data, 0, CodeBOM, "byte-order mark before JSON value")
	}
	d := decoders.Get().(*decoder)
	defer d.release()
	d.data, d.pos, d.depth, d.maxDepth = data, 0, 0, lim.maxDepth()
	// One copy of the input backs every string without escapes, which is
	// then a substring of it rather than an allocation of its own.
	d.text = string(data)
	d.skipSpace()
	v, err := d.value()
	if err != nil {
		return nil, err
	}
	d.skipSpace()
	if d.pos < len(d.data) {
		return nil, d.errorf(d.pos, CodeTrailingData, "data after JSON value: %s", quoteByte(d.data[d.pos]))
	}
	return v, nil
}

// decoders recycles decoders, and with them the stacks' storage, so that
// decoding a typical request allocates only the values it returns.
var decoders = sync.Pool{New: func() any {
	return &decoder{keys: make([]string, 0, 16), vals: make([]any, 0, 32), buf: make([]byte, 0, 128)}
}}

// maxPooled is the stack capacity beyond which a decoder is not recycled,
// so that one huge document does not pin its memory.
const maxPooled = 1 << 12

// release returns d to the pool, dropping its references to the input and
// to decoded values.
func (d *decoder) release() {
	if cap(d.keys) > maxPooled || cap(d.vals) > maxPooled || cap(d.buf) > maxPooled {
		return
	}
	clear(d.keys[:cap(d.keys)])
	clear(d.vals[:cap(d.vals)])
	d.data, d.text, d.keys, d.vals, d.buf = nil, "", d.keys[:0], d.vals[:0], d.buf[:0]
	decoders.Put(d)
}

// decoder is a recursive-descent parser over one input. Objects and arrays
// collect their members on shared stacks (keys, vals) and copy them into a
// map or slice of exactly the right size when they close, so the only
// allocations are the returned values themselves.
type decoder struct {
	data     []byte
	text     string // string(data)
	pos      int
	depth    int
	maxDepth int
	keys     []string // keys of the objects being parsed, innermost last
	vals     []any    // members of the objects and arrays being parsed
	buf      []byte   // scratch for unescaping strings
}

func (d *decoder) errorf(off int, code, format string, args ...any) *Error {
	return newError(d.data, off, code, fmt.Sprintf(format, args...))
}

// unexpected reports the byte at d.pos (or the end of input) as a syntax error.
func (d *decoder) unexpected(context string) *Error {
	if d.pos >= len(d.data) {
		return d.errorf(d.pos, CodeSyntax, "unexpected end of input %s", context)
	}
	return d.errorf(d.pos, CodeSyntax, "invalid character %s %s", quoteByte(d.data[d.pos]), context)
}

func quoteByte(c byte) string {
	if c >= 0x20 && c < 0x7F {
		return strconv.QuoteRune(rune(c))
	}
	return fmt.Sprintf("0x%02X", c)
}

func (d *decoder) skipSpace() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

func (d *decoder) value() (any, error) {
	if d.pos >= len(d.data) {
		return nil, d.unexpected("looking for a value")
	}
	switch c := d.data[d.pos]; {
	case c == '{':
		return d.object()
	case c == '[':
		return d.array()
	case c == '"':
		return d.string()
	case c == '-' || ('0' <= c && c <= '9'):
		return d.number()
	case c == 't':
		return true, d.literal("true")
	case c == 'f':
		return false, d.literal("false")
	case c == 'n':
		return nil, d.literal("null")
	default:
		return nil, d.unexpected("looking for a value")
	}
}

func (d *decoder) literal(word string) error {
	for i := 0; i < len(word); i++ {
		if d.pos >= len(d.data) || d.data[d.pos] != word[i] {
			return d.unexpected("in literal " + word)
		}
		d.pos++
	}
	return nil
}

func (d *decoder) enter() error {
	d.depth++
	if d.depth > d.maxDepth {
		return d.errorf(d.pos, CodeTooDeep, "nesting deeper than %d", d.maxDepth)
	}
	return nil
}

func (d *decoder) object() (any, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	d.pos++ // '{'
	kbase, vbase := len(d.keys), len(d.vals)
	d.skipSpace()
	if d.pos < len(d.data) && d.data[d.pos] == '}' {
		d.pos++
		d.depth--
		return map[string]any{}, nil
	}
	var folded map[string]struct{} // folded keys, once the object is large
	for {
		if d.pos >= len(d.data) || d.data[d.pos] != '"' {
			return nil, d.unexpected("looking for an object key")
		}
		keyOff := d.pos
		key, err := d.string()
		if err != nil {
			return nil, err
		}
		if folded, err = d.checkKey(kbase, keyOff, key, folded); err != nil {
			return nil, err
		}
		d.skipSpace()
		if d.pos >= len(d.data) || d.data[d.pos] != ':' {
			return nil, d.unexpected("after object key")
		}
		d.pos++
		d.skipSpace()
		v, err := d.value()
		if err != nil {
			return nil, err
		}
		d.keys = append(d.keys, key)
		d.vals = append(d.vals, v)
		d.skipSpace()
		if d.pos < len(d.data) && d.data[d.pos] == ',' {
			d.pos++
			d.skipSpace()
			continue
		}
		if d.pos < len(d.data) && d.data[d.pos] == '}' {
			d.pos++
			break
		}
		return nil, d.unexpected("after object member")
	}
	d.depth--
	m := make(map[string]any, len(d.keys)-kbase)
	for i, k := range d.keys[kbase:] {
		m[k] = d.vals[vbase+i]
	}
	d.keys, d.vals = d.keys[:kbase], d.vals[:vbase]
	return m, nil
}

// linearKeys is how many keys an object may have before duplicate detection
// switches from comparing each new key with every earlier one to a set of
// case-folded keys.
const linearKeys = 16

// checkKey rejects key if it equals, up to case, a key already in the object
// whose keys start at d.keys[base]. It returns the set of folded keys, which
// it creates once the object grows past linearKeys.
func (d *decoder) checkKey(base, off int, key string, folded map[string]struct{}) (map[string]struct{}, error) {
	keys := d.keys[base:]
	if folded == nil && len(keys) < linearKeys {
		for _, k := range keys {
			if strings.EqualFold(k, key) {
				return nil, d.duplicate(off, k, key)
			}
		}
		return nil, nil
	}
	if folded == nil {
		folded = make(map[string]struct{}, 2*linearKeys)
		for _, k := range keys {
			folded[foldKey(k)] = struct{}{}
		}
	}
	f := foldKey(key)
	if _, dup := folded[f]; dup {
		for _, k := range keys {
			if strings.EqualFold(k, key) {
				return nil, d.duplicate(off, k, key)
			}
		}
	}
	folded[f] = struct{}{}
	return folded, nil
}

func (d *decoder) duplicate(off int, earlier, key string) *Error {
	if earlier == key {
		return d.errorf(off, CodeDuplicateKey, "duplicate key %q", key)
	}
	return d.errorf(off, CodeDuplicateKey, "key %q differs only in case from earlier key %q", key, earlier)
}

// foldKey maps s to a representative of its strings.EqualFold class: every
// rune is replaced by the smallest rune of its simple case-folding orbit, so
// foldKey(a) == foldKey(b) exactly when strings.EqualFold(a, b).
func foldKey(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		b.WriteRune(least)
	}
	return b.String()
}

func (d *decoder) array() (any, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	d.pos++ // '['
	base := len(d.vals)
	d.skipSpace()
	if d.pos < len(d.data) && d.data[d.pos] == ']' {
		d.pos++
		d.depth--
		return []any{}, nil
	}
	for {
		v, err := d.value()
		if err != nil {
			return nil, err
		}
		d.vals = append(d.vals, v)
		d.skipSpace()
		if d.pos < len(d.data) && d.data[d.pos] == ',' {
			d.pos++
			d.skipSpace()
			continue
		}
		if d.pos < len(d.data) && d.data[d.pos] == ']' {
			d.pos++
			break
		}
		return nil, d.unexpected("after array element")
	}
	d.depth--
	a := append([]any(nil), d.vals[base:]...)
	d.vals = d.vals[:base]
	return a, nil
}

// string parses the string starting at the opening quote at d.pos. Strings
// without escapes are substrings of d.text; the others are unescaped into
// d.buf and copied from there.
func (d *decoder) string() (string, error) {
	d.pos++ // '"'
	start := d.pos
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		switch {
		case c == '"':
			s := d.text[start:d.pos]
			d.pos++
			return s, nil
		case c == '\\':
			d.buf = append(d.buf[:0], d.data[start:d.pos]...)
			return d.escapedString()
		case c < 0x20:
			return "", d.errorf(d.pos, CodeSyntax, "unescaped control character %s in string", quoteByte(c))
		case c < utf8.RuneSelf:
			d.pos++
		default:
			if err := d.multibyte(); err != nil {
				return "", err
			}
		}
	}
	return "", d.unexpected("in string")
}

// multibyte consumes the UTF-8 sequence at d.pos, rejecting invalid,
// overlong and surrogate encodings.
func (d *decoder) multibyte() error {
	r, size := utf8.DecodeRune(d.data[d.pos:])
	if r == utf8.RuneError && size <= 1 {
		return d.errorf(d.pos, CodeInvalidUTF8, "invalid UTF-8 byte %s in string", quoteByte(d.data[d.pos]))
	}
	d.pos += size
	return nil
}

// escapedString continues string after its first backslash, with the
// unescaped text so far in d.buf.
func (d *decoder) escapedString() (string, error) {
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		switch {
		case c == '"':
			d.pos++
			return string(d.buf), nil
		case c == '\\':
			if err := d.escape(); err != nil {
				return "", err
			}
		case c < 0x20:
			return "", d.errorf(d.pos, CodeSyntax, "unescaped control character %s in string", quoteByte(c))
		case c < utf8.RuneSelf:
			d.buf = append(d.buf, c)
			d.pos++
		default:
			at := d.pos
			if err := d.multibyte(); err != nil {
				return "", err
			}
			d.buf = append(d.buf, d.data[at:d.pos]...)
		}
	}
	return "", d.unexpected("in string")
}

// escape decodes the escape sequence at d.pos into d.buf.
func (d *decoder) escape() error {
	at := d.pos
	d.pos++ // '\\'
	if d.pos >= len(d.data) {
		return d.unexpected("in string escape")
	}
	c := d.data[d.pos]
	d.pos++
	switch c {
	case '"', '\\', '/':
		d.buf = append(d.buf, c)
	case 'b':
		d.buf = append(d.buf, '\b')
	case 'f':
		d.buf = append(d.buf, '\f')
	case 'n':
		d.buf = append(d.buf, '\n')
	case 'r':
		d.buf = append(d.buf, '\r')
	case 't':
		d.buf = append(d.buf, '\t')
	case 'u':
		r, err := d.hex4()
		if err != nil {
			return err
		}
		switch {
		case utf16IsLow(r):
			return d.errorf(at, CodeLoneSurrogate, "lone low surrogate \\u%04X", r)
		case utf16IsHigh(r):
			if d.pos+1 >= len(d.data) || d.data[d.pos] != '\\' || d.data[d.pos+1] != 'u' {
				return d.errorf(at, CodeLoneSurrogate, "high surrogate \\u%04X not followed by a low surrogate", r)
			}
			d.pos += 2
			lo, err := d.hex4()
			if err != nil {
				return err
			}
			if !utf16IsLow(lo) {
				return d.errorf(at, CodeLoneSurrogate, "high surrogate \\u%04X followed by \\u%04X, not a low surrogate", r, lo)
			}
			r = 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00)
		}
		d.buf = utf8.AppendRune(d.buf, r)
	default:
		d.pos--
		return d.unexpected("in string escape")
	}
	return nil
}

func utf16IsHigh(r rune) bool { return 0xD800 <= r && r < 0xDC00 }
func utf16IsLow(r rune) bool  { return 0xDC00 <= r && r < 0xE000 }

// hex4 reads the four hex digits of a \u escape.
func (d *decoder) hex4() (rune, error) {
	var r rune
	for range 4 {
		if d.pos >= len(d.data) {
			return 0, d.unexpected("in \\u escape")
		}
		c := d.data[d.pos]
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, d.unexpected("in \\u escape")
		}
		r = r<<4 | rune(c)
		d.pos++
	}
	return r, nil
}

// number parses the number at d.pos:
//
//	number = [ "-" ] ( "0" / [1-9] *DIGIT ) [ "." 1*DIGIT ] [ ( "e" / "E" ) [ "+" / "-" ] 1*DIGIT ]
//
// and checks that its float64 holds it exactly (see exact).
func (d *decoder) number() (any, error) {
	start := d.pos
	neg := d.data[d.pos] == '-'
	if neg {
		d.pos++
	}
	intStart := d.pos
	if d.pos < len(d.data) && d.data[d.pos] == '0' {
		d.pos++
		if d.pos < len(d.data) && isDigit(d.data[d.pos]) {
			return nil, d.errorf(intStart, CodeSyntax, "number with a leading zero")
		}
	} else if !d.digits() {
		return nil, d.unexpected("in number")
	}
	intEnd := d.pos
	plain := true
	if d.pos < len(d.data) && d.data[d.pos] == '.' {
		plain = false
		d.pos++
		if !d.digits() {
			return nil, d.unexpected("after decimal point")
		}
	}
	if d.pos < len(d.data) && (d.data[d.pos] == 'e' || d.data[d.pos] == 'E') {
		plain = false
		d.pos++
		if d.pos < len(d.data) && (d.data[d.pos] == '+' || d.data[d.pos] == '-') {
			d.pos++
		}
		if !d.digits() {
			return nil, d.unexpected("in exponent")
		}
	}
	text := d.data[start:d.pos]

	// Fast path: an integer of at most 15 digits is always exact.
	if plain && intEnd-intStart <= 15 {
		var n int64
		for _, c := range d.data[intStart:intEnd] {
			n = n*10 + int64(c-'0')
		}
		if neg {
			n = -n
		}
		return float64(n), nil // -0 becomes 0: int64 has no negative zero
	}

	f, err := strconv.ParseFloat(string(text), 64)
	if err != nil && !math.IsInf(f, 0) {
		// The grammar above is stricter than ParseFloat's, so only range errors remain.
		return nil, d.errorf(start, CodeSyntax, "invalid number %s", text)
	}
	if !exact(text, f) {
		return nil, d.errorf(start, CodeLossyNumber, "number %s cannot be represented exactly as a 64-bit float", truncate(text))
	}
	if f == 0 {
		f = 0 // -0 reads as 0
	}
	return f, nil
}

func truncate(b []byte) []byte {
	if len(b) > 40 {
		return append(b[:37:37], "..."...)
	}
	return b
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// digits consumes one or more digits, reporting whether there was one.
func (d *decoder) digits() bool {
	start := d.pos
	for d.pos < len(d.data) && isDigit(d.data[d.pos]) {
		d.pos++
	}
	return d.pos > start
}
