package strictjson

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestDecodeErrors has one row per rule Decode enforces, with the code and
// the position it must report.
func TestDecodeErrors(t *testing.T) {
	caseDup := manyKeys(40, `"key7"`, `"KEY7"`)
	exactDup := manyKeys(40, `"key30"`, `"key30"`)
	tests := []struct {
		name      string
		in        string
		lim       Limits
		code      string
		line, col int
	}{
		// RFC 8259 grammar.
		{"empty", ``, Limits{}, CodeSyntax, 1, 1},
		{"only whitespace", " \n ", Limits{}, CodeSyntax, 2, 2},
		{"line comment", "{\n// c\n}", Limits{}, CodeSyntax, 2, 1},
		{"block comment", `[1/*c*/]`, Limits{}, CodeSyntax, 1, 3},
		{"trailing comma in array", `[1,]`, Limits{}, CodeSyntax, 1, 4},
		{"trailing comma in object", `{"a":1,}`, Limits{}, CodeSyntax, 1, 8},
		{"leading zero", `[01]`, Limits{}, CodeSyntax, 1, 2},
		{"negative leading zero", `-012`, Limits{}, CodeSyntax, 1, 2},
		{"plus sign", `+1`, Limits{}, CodeSyntax, 1, 1},
		{"bare fraction", `.5`, Limits{}, CodeSyntax, 1, 1},
		{"trailing point", `5.`, Limits{}, CodeSyntax, 1, 3},
		{"empty exponent", `5e`, Limits{}, CodeSyntax, 1, 3},
		{"signed empty exponent", `5e+`, Limits{}, CodeSyntax, 1, 4},
		{"minus alone", `-`, Limits{}, CodeSyntax, 1, 2},
		{"NaN", `NaN`, Limits{}, CodeSyntax, 1, 1},
		{"Infinity", `Infinity`, Limits{}, CodeSyntax, 1, 1},
		{"-Infinity", `-Infinity`, Limits{}, CodeSyntax, 1, 2},
		{"hex number", `0x10`, Limits{}, CodeTrailingData, 1, 2},
		{"single quotes", `{'a':1}`, Limits{}, CodeSyntax, 1, 2},
		{"unquoted key", `{a:1}`, Limits{}, CodeSyntax, 1, 2},
		{"raw newline in string", "\"a\nb\"", Limits{}, CodeSyntax, 1, 3},
		{"raw tab in string", "\"a\tb\"", Limits{}, CodeSyntax, 1, 3},
		{"raw NUL in string", "\"\x00\"", Limits{}, CodeSyntax, 1, 2},
		{"bad escape", `"\x41"`, Limits{}, CodeSyntax, 1, 3},
		{"short unicode escape", `"\u12"`, Limits{}, CodeSyntax, 1, 6},
		{"unterminated string", `"abc`, Limits{}, CodeSyntax, 1, 5},
		{"form feed as whitespace", "\f1", Limits{}, CodeSyntax, 1, 1},
		{"vertical tab as whitespace", "[1,\v2]", Limits{}, CodeSyntax, 1, 4},
		{"no-break space as whitespace", "[1,\u00a02]", Limits{}, CodeSyntax, 1, 4},
		{"truncated literal", `tru`, Limits{}, CodeSyntax, 1, 4},
		{"capitalised literal", `True`, Limits{}, CodeSyntax, 1, 1},
		{"missing colon", `{"a" 1}`, Limits{}, CodeSyntax, 1, 6},
		{"missing comma", `[1 2]`, Limits{}, CodeSyntax, 1, 4},
		{"unclosed object", `{"a":1`, Limits{}, CodeSyntax, 1, 7},
		{"unclosed array", "[\n1,\n2", Limits{}, CodeSyntax, 3, 2},

		// BOM and trailing data.
		{"bom", "\xef\xbb\xbf{}", Limits{}, CodeBOM, 1, 1},
		{"second value", `{} {}`, Limits{}, CodeTrailingData, 1, 4},
		{"trailing garbage", "1\n\nx", Limits{}, CodeTrailingData, 3, 1},
		{"trailing NUL", "{}\x00", Limits{}, CodeTrailingData, 1, 3},

		// Limits.
		{"too large", `[1, 2, 3]`, Limits{MaxBytes: 8}, CodeTooLarge, 1, 9},
		{"too large before syntax", `[1, 2, x`, Limits{MaxBytes: 4}, CodeTooLarge, 1, 5},
		{"too deep", `{"a":[{"b":1}]}`, Limits{MaxDepth: 2}, CodeTooDeep, 1, 7},
		{"too deep by default", strings.Repeat("[", 33) + strings.Repeat("]", 33), Limits{}, CodeTooDeep, 1, 33},

		// UTF-8.
		{"invalid byte", "\"a\xffb\"", Limits{}, CodeInvalidUTF8, 1, 3},
		{"stray continuation byte", "\"\x80\"", Limits{}, CodeInvalidUTF8, 1, 2},
		{"overlong slash", "\"\xc0\xaf\"", Limits{}, CodeInvalidUTF8, 1, 2},
		{"overlong three bytes", "\"\xe0\x80\xaf\"", Limits{}, CodeInvalidUTF8, 1, 2},
		{"encoded surrogate", "\"\xed\xa0\x80\"", Limits{}, CodeInvalidUTF8, 1, 2},
		{"beyond U+10FFFF", "\"\xf4\x90\x80\x80\"", Limits{}, CodeInvalidUTF8, 1, 2},
		{"truncated sequence", "\"\xe2\x82\"", Limits{}, CodeInvalidUTF8, 1, 2},
		{"invalid UTF-8 in key", "{\"\xff\":1}", Limits{}, CodeInvalidUTF8, 1, 3},
		{"invalid UTF-8 after escape", "\"\\n\xff\"", Limits{}, CodeInvalidUTF8, 1, 4},
		{"invalid UTF-8 outside string", "[\xff]", Limits{}, CodeSyntax, 1, 2},

		// Surrogate escapes.
		{"lone high surrogate", `"\ud800"`, Limits{}, CodeLoneSurrogate, 1, 2},
		{"lone high surrogate then text", `"\uD800abcdef"`, Limits{}, CodeLoneSurrogate, 1, 2},
		{"lone low surrogate", `"x\udc00"`, Limits{}, CodeLoneSurrogate, 1, 3},
		{"reversed pair", `"\udc00\ud800"`, Limits{}, CodeLoneSurrogate, 1, 2},
		{"high then high", `"\ud800\ud800"`, Limits{}, CodeLoneSurrogate, 1, 2},
		{"high then ordinary escape", `"\ud800\u0041"`, Limits{}, CodeLoneSurrogate, 1, 2},

		// Duplicate keys.
		{"duplicate key", `{"a":1,"a":2}`, Limits{}, CodeDuplicateKey, 1, 8},
		{"duplicate after unescaping", `{"a":1,"\u0061":2}`, Limits{}, CodeDuplicateKey, 1, 8},
		{"duplicate escaped slash", `{"/":1,"\/":2}`, Limits{}, CodeDuplicateKey, 1, 8},
		{"duplicate nested", "{\"x\":{\"b\":1,\n\"b\":2}}", Limits{}, CodeDuplicateKey, 2, 1},
		{"duplicate in array element", `[{},{"k":1,"k":1}]`, Limits{}, CodeDuplicateKey, 1, 12},
		{"keys differing in case", `{"amount":1,"Amount":20000}`, Limits{}, CodeDuplicateKey, 1, 13},
		{"Kelvin sign folds to k", `{"k":1,"\u212a":2}`, Limits{}, CodeDuplicateKey, 1, 8},
		{"case duplicate past the linear scan", caseDup, Limits{}, CodeDuplicateKey, 1, strings.LastIndex(caseDup, `"KEY7"`) + 1},
		{"exact duplicate past the linear scan", exactDup, Limits{}, CodeDuplicateKey, 1, strings.LastIndex(exactDup, `"key30"`) + 1},

		// Numbers that float64 cannot hold exactly.
		{"extra digit beyond float64", `10000.0000000000001`, Limits{}, CodeLossyNumber, 1, 1},
		{"2^53+1", `9007199254740993`, Limits{}, CodeLossyNumber, 1, 1},
		{"overflow", `1e400`, Limits{}, CodeLossyNumber, 1, 1},
		{"negative overflow", `[-1e400]`, Limits{}, CodeLossyNumber, 1, 2},
		{"underflow", `1e-400`, Limits{}, CodeLossyNumber, 1, 1},
		{"more digits than the shortest form", `0.1000000000000000055511151231257827`, Limits{}, CodeLossyNumber, 1, 1},
		{"RFC 8785 sample number", `333333333.33333329`, Limits{}, CodeLossyNumber, 1, 1},
		{"huge exponent", `1e99999999999999999999999`, Limits{}, CodeLossyNumber, 1, 1},
		{"lossy in object", "{\"amount\":\n  20000.000000000001}", Limits{}, CodeLossyNumber, 2, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := Decode([]byte(tt.in), tt.lim)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Decode(%q) = %#v, %v; want *Error %s", tt.in, v, err, tt.code)
			}
			if v != nil {
				t.Errorf("Decode(%q) value = %#v, want nil", tt.in, v)
			}
			if e.Code != tt.code {
				t.Errorf("Decode(%q) code: got %v, want %v (%v)", tt.in, e.Code, tt.code, e)
			}
			if e.Line != tt.line || e.Col != tt.col {
				t.Errorf("Decode(%q) position: got %d:%d, want %d:%d (%v)", tt.in, e.Line, e.Col, tt.line, tt.col, e)
			}
			if want := lineCol(tt.in, e.Offset); want != [2]int{e.Line, e.Col} {
				t.Errorf("Decode(%q): offset %d is at %v, but error says %d:%d", tt.in, e.Offset, want, e.Line, e.Col)
			}
			if got, prefix := e.Error(), itoa(tt.line)+":"+itoa(tt.col)+": "; !strings.HasPrefix(got, prefix) {
				t.Errorf("Error(): got %q, want prefix %q", got, prefix)
			}
		})
	}
}

// manyKeys returns an object of n members named f0, f1, … with the member
// names first at index 3 and second at index n-5, past the linear scan.
func manyKeys(n int, first, second string) string {
	var b strings.Builder
	b.WriteString("{")
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		switch i {
		case 3:
			b.WriteString(first)
		case n - 5:
			b.WriteString(second)
		default:
			b.WriteString(`"f` + itoa(i) + `"`)
		}
		b.WriteString(":" + itoa(i))
	}
	b.WriteString("}")
	return b.String()
}

func itoa(i int) string { return strconv.Itoa(i) }

// lineCol computes the 1-based line and byte column of offset off in s.
func lineCol(s string, off int) [2]int {
	before := s[:min(off, len(s))]
	line := strings.Count(before, "\n") + 1
	return [2]int{line, off - strings.LastIndex(before, "\n")}
}

func TestDecodeValues(t *testing.T) {
	tests := []struct {
		in   string
		want any
	}{
		{`null`, nil},
		{` true `, true},
		{"\t\r\nfalse\n", false},
		{`""`, ""},
		{`"plain"`, "plain"},
		{`"\"\\\/\b\f\n\r\t"`, "\"\\/\b\f\n\r\t"},
		{`"\u0041\u00e9\u20AC\ud83d\ude00"`, "A\u00e9\u20ac\U0001F600"},
		{"\"\u00e9\u2028\U0001F600\x7f\"", "\u00e9\u2028\U0001F600\x7f"},
		{`"\u0000"`, "\x00"},
		{`"\ufffd"`, "\ufffd"},
		{`0`, 0.0},
		{`-0`, 0.0},
		{`-0.0e5`, 0.0},
		{`0.1`, 0.1},
		{`99.99`, 99.99},
		{`20000.0`, 20000.0},
		{`1e5`, 1e5},
		{`1E+5`, 1e5},
		{`100e-2`, 1.0},
		{`0.00000000000000000000000000000000000000001e41`, 1.0},
		{`-123456789012345`, -123456789012345.0},
		{`9007199254740992`, 9007199254740992.0},
		{`1.7976931348623157e308`, 1.7976931348623157e308},
		{`5e-324`, 5e-324},
		{`[]`, []any{}},
		{`{}`, map[string]any{}},
		{`[1,"a",[null],{"b":false}]`, []any{1.0, "a", []any{nil}, map[string]any{"b": false}}},
		{`{"a":{"a":{"a":1}},"b":[{"a":2},{"a":3}]}`, map[string]any{
			"a": map[string]any{"a": map[string]any{"a": 1.0}},
			"b": []any{map[string]any{"a": 2.0}, map[string]any{"a": 3.0}},
		}},
		{`{"ß":1,"ss":2,"SS":3}`[:len(`{"ß":1,"ss":2`)] + "}", map[string]any{"ß": 1.0, "ss": 2.0}},
	}
	for _, tt := range tests {
		got, err := Decode([]byte(tt.in), Limits{})
		if err != nil {
			t.Errorf("Decode(%q): %v", tt.in, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("Decode(%q) mismatch (-want +got):\n%s", tt.in, diff)
		}
		if f, ok := got.(float64); ok && f == 0 && math.Signbit(f) {
			t.Errorf("Decode(%q) = -0, want 0", tt.in)
		}
	}
}

func TestLimitsDefault(t *testing.T) {
	big := []byte(`"` + strings.Repeat("a", DefaultMaxBytes-2) + `"`)
	if _, err := Decode(big, Limits{}); err != nil {
		t.Errorf("Decode(1 MiB string): %v", err)
	}
	big = append(big, ' ')
	if _, err := Decode(big, Limits{}); !isCode(err, CodeTooLarge) {
		t.Errorf("Decode(1 MiB + 1): got %v, want %v", err, CodeTooLarge)
	}
	deep := strings.Repeat(`[{"a":`, 16) + "1" + strings.Repeat("}]", 16)
	if _, err := Decode([]byte(deep), Limits{}); err != nil {
		t.Errorf("Decode at the default MaxDepth: %v", err)
	}
	if _, err := Decode([]byte(`[[[1]]]`), Limits{MaxDepth: 3}); err != nil {
		t.Errorf("Decode at MaxDepth: %v", err)
	}
	if _, err := Decode([]byte(`1`), Limits{MaxDepth: 1, MaxBytes: 1}); err != nil {
		t.Errorf("Decode at MaxBytes: %v", err)
	}
}

func isCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// TestDecodeCopies checks that decoded strings do not change when the input
// buffer is reused, and that concurrent decodes (sharing pooled decoders) do
// not mix their results.
func TestDecodeCopies(t *testing.T) {
	in := []byte(`{"key":"value","list":["a","b\n"]}`)
	v, err := Decode(in, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range in {
		in[i] = 'x'
	}
	want := map[string]any{"key": "value", "list": []any{"a", "b\n"}}
	if diff := cmp.Diff(want, v); diff != "" {
		t.Errorf("value changed with its input (-want +got):\n%s", diff)
	}

	done := make(chan error)
	for g := range 8 {
		go func() {
			for i := range 200 {
				in := `{"g":` + itoa(g) + `,"i":` + itoa(i) + `,"s":["` + itoa(g*1000+i) + `"]}`
				v, err := Decode([]byte(in), Limits{})
				if err != nil {
					done <- err
					return
				}
				c, err := Canonical(v)
				if want := `{"g":` + itoa(g) + `,"i":` + itoa(i) + `,"s":["` + itoa(g*1000+i) + `"]}`; err != nil || string(c) != want {
					done <- fmt.Errorf("got %s (%v), want %s", c, err, want)
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
