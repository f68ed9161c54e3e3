// Package strictjson is rulelock's one reading of JSON: a strict decoder and an
// RFC 8785 (JSON Canonicalization Scheme, JCS) encoder.
//
// Every request an agent sends is read exactly once, by [Decode], into plain Go
// values, and from then on rulelock only ever handles the canonical bytes that
// [Canonical] produces from those values: the policy evaluates them, the audit
// log hashes them, the approver sees them and the upstream receives them
// (DESIGN.md, invariant 3). Two parsers that disagree about a document are how
// a request says one thing to the policy and another to the upstream, so Decode
// refuses, rather than repairs, everything that two reasonable JSON parsers
// could read differently:
//
//   - anything outside the RFC 8259 grammar (comments, trailing commas,
//     leading zeros, NaN, single quotes, raw control characters, non-JSON
//     whitespace, a byte-order mark, data after the value);
//   - invalid UTF-8 and \u escapes that do not form a valid surrogate pair;
//   - duplicate object keys, compared after unescaping, and keys that differ
//     only in case, because an upstream that binds fields case-insensitively
//     would read the other one;
//   - numbers that do not survive the round trip through float64: the input
//     must have the same decimal value as the shortest representation of the
//     float64 it becomes, so 0.1, 99.99, 20000.0 and 1e5 are accepted while
//     9007199254740993 (2^53+1) and 1e400 are not;
//   - documents larger than [Limits].MaxBytes or nested deeper than
//     [Limits].MaxDepth.
//
// Each refusal is an [*Error] with a stable Code and a line:col position.
//
// Decode returns map[string]any, []any, string, float64, bool and nil. Canonical
// encodes such values as RFC 8785 prescribes: no whitespace, object members
// sorted by the UTF-16 code units of their names, strings with the minimal
// escaping of ECMAScript's JSON.stringify, and numbers as ECMAScript's
// Number.prototype.toString writes them. For example the request
//
//	{ "to": "acct-9", "amount": 20000.0, "type": "transfer", "memo": "\u20ac 5" }
//
// decodes to map[string]any{"to": "acct-9", "amount": 20000.0, ...} and
// canonicalises to
//
//	{"amount":20000,"memo":"€ 5","to":"acct-9","type":"transfer"}
//
// Because the canonical form is itself strict JSON, Decode followed by
// Canonical is idempotent: canonicalising the canonical bytes again gives
// the same bytes.
package strictjson

import (
	"strconv"
)

// Default limits, used when the corresponding [Limits] field is zero or negative.
const (
	DefaultMaxBytes = 1 << 20
	DefaultMaxDepth = 32
)

// Limits caps the input. The zero value means the defaults: MaxBytes 1 MiB, MaxDepth 32.
//
// MaxBytes is checked against len(data) before anything is parsed. Depth
// counts open objects and arrays: a top-level object is depth 1, an array
// inside it depth 2. A scalar at the top level has depth 0.
type Limits struct {
	MaxBytes int
	MaxDepth int
}

func (l Limits) maxBytes() int {
	if l.MaxBytes <= 0 {
		return DefaultMaxBytes
	}
	return l.MaxBytes
}

func (l Limits) maxDepth() int {
	if l.MaxDepth <= 0 {
		return DefaultMaxDepth
	}
	return l.MaxDepth
}

// Codes of an [Error]. They are stable: callers, logs and API responses may
// branch on them.
const (
	CodeSyntax        = "syntax"         // outside the RFC 8259 grammar
	CodeDuplicateKey  = "duplicate_key"  // a key repeated, or repeated up to case, in one object
	CodeInvalidUTF8   = "invalid_utf8"   // bytes that are not UTF-8 (including overlong forms and encoded surrogates)
	CodeLoneSurrogate = "lone_surrogate" // a \u escape of a surrogate that is not a high+low pair
	CodeTrailingData  = "trailing_data"  // something other than whitespace after the value
	CodeBOM           = "bom"            // a leading UTF-8 byte-order mark
	CodeTooDeep       = "too_deep"       // nesting deeper than Limits.MaxDepth
	CodeTooLarge      = "too_large"      // input longer than Limits.MaxBytes
	CodeLossyNumber   = "lossy_number"   // a number that float64 cannot hold exactly
)

// Error is the error Decode returns for bad input.
//
// Offset is the byte offset of the offending byte (for a duplicate key, the
// opening quote of the second key). Line and Col locate the same byte; lines
// are separated by '\n' and Col counts bytes, both starting at 1.
type Error struct {
	Code      string // stable machine code, one of the Code* constants
	Offset    int    // byte offset in the input
	Line, Col int    // 1-based; Col counts bytes
	Msg       string
}

// Error returns "line:col: msg".
func (e *Error) Error() string {
	return strconv.Itoa(e.Line) + ":" + strconv.Itoa(e.Col) + ": " + e.Msg
}

// newError builds an Error at offset off of data, computing its line and column.
func newError(data []byte, off int, code, msg string) *Error {
	line, col := 1, 1
	for _, c := range data[:min(off, len(data))] {
		if c == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return &Error{Code: code, Offset: off, Line: line, Col: col, Msg: msg}
}
