package strictjson

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzDecode checks that Decode never panics and that, for every input it
// accepts, Canonical succeeds, produces valid JSON, and is idempotent:
// decoding the canonical bytes and canonicalising again gives the same bytes.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"action":{"type":"transfer","amount":20000,"to":"acct-9"}}`,
		`{"a":1,"A":2}`, `{"a":1,"\u0061":2}`, `{"k":1,"\u212a":2}`,
		`"\ud83d\ude00"`, `"\ud800"`, `"\udc00\ud800"`, `"\ud800\u0041"`,
		"\"\xed\xa0\x80\"", "\"\xc0\xaf\"", "\xef\xbb\xbf{}", "\"\u2028\u2029\"",
		`0.1`, `-0`, `1e21`, `1e-7`, `5e-324`, `2.5e-324`, `1e-400`, `1e400`,
		`9007199254740993`, `10000.0000000000001`, `333333333.33333329`, `0.30000000000000004`,
		`01`, `+1`, `.5`, `1.`, `NaN`, `-Infinity`, `[1,]`, `{"a":1,}`, `// x`, `1 2`,
		`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`,
		`{"\uffff":1,"\ud800\udc00":2,"\ue000":3}`, `"\u0000\u001f\/"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := Decode(data, Limits{})
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("Decode error %T is not *Error: %v", err, err)
			}
			return
		}
		c1, err := Canonical(v)
		if err != nil {
			t.Fatalf("Canonical of decoded %q: %v", data, err)
		}
		if !json.Valid(c1) {
			t.Fatalf("canonical %q is not valid JSON", c1)
		}
		v2, err := Decode(c1, Limits{})
		if err != nil {
			t.Fatalf("Decode(canonical %q): %v", c1, err)
		}
		c2, err := Canonical(v2)
		if err != nil || !bytes.Equal(c1, c2) {
			t.Fatalf("canonicalisation not idempotent:\n%q\n%q (%v)", c1, c2, err)
		}
	})
}

// FuzzNumber checks the number formatting against encoding/json, which also
// writes float64 as ECMAScript does, and that every canonical number decodes
// strictly back to the same float64.
func FuzzNumber(f *testing.F) {
	for _, v := range []float64{0, 1, -1, 0.1, 1e21, 1e20, 1e-7, 1e-6, 5e-324, math.MaxFloat64, 123456789012345680000, 1 << 53} {
		f.Add(math.Float64bits(v))
	}
	f.Fuzz(func(t *testing.T, bits uint64) {
		v := math.Float64frombits(bits)
		got, err := Canonical(v)
		if math.IsNaN(v) || math.IsInf(v, 0) {
			if err == nil {
				t.Fatalf("Canonical(%v) = %s, want an error", v, got)
			}
			return
		}
		if err != nil {
			t.Fatalf("Canonical(%v): %v", v, err)
		}
		if v != 0 {
			want, _ := json.Marshal(v)
			if !bytes.Equal(got, want) {
				t.Fatalf("Canonical(%v): got %s, want %s (encoding/json)", v, got, want)
			}
		}
		back, err := Decode(got, Limits{})
		if err != nil || back != v+0 {
			t.Fatalf("Decode(%s): got %v (%v), want %v", got, back, err, v)
		}
	})
}

// FuzzFoldKey checks that foldKey, which detects case-insensitive duplicate
// keys in large objects, agrees with strings.EqualFold, which does in small ones.
func FuzzFoldKey(f *testing.F) {
	for _, p := range [][2]string{{"amount", "Amount"}, {"k", "\u212a"}, {"ß", "ss"}, {"σ", "ς"}, {"Σ", "ς"}, {"ǅ", "ǆ"}, {"a", "b"}, {"ſ", "S"}} {
		f.Add(p[0], p[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if !utf8.ValidString(a) || !utf8.ValidString(b) {
			return
		}
		if got, want := foldKey(a) == foldKey(b), strings.EqualFold(a, b); got != want {
			t.Fatalf("foldKey(%q) == foldKey(%q): got %v, want %v (strings.EqualFold)", a, b, got, want)
		}
	})
}
