package strictjson

import (
	"bufio"
	"encoding/json"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestCanonicalNumbers checks the number vectors in testdata/numbers.txt.
func TestCanonicalNumbers(t *testing.T) {
	f, err := os.Open("testdata/numbers.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		in, want, ok := strings.Cut(line, " ")
		if !ok {
			t.Fatalf("bad line %q", line)
		}
		var v float64
		if hex, ok := strings.CutPrefix(in, "0x"); ok {
			bits, err := strconv.ParseUint(hex, 16, 64)
			if err != nil {
				t.Fatalf("bad line %q: %v", line, err)
			}
			v = math.Float64frombits(bits)
		} else if v, err = strconv.ParseFloat(in, 64); err != nil {
			t.Fatalf("bad line %q: %v", line, err)
		}
		n++
		got, err := Canonical(v)
		if want == "error" {
			if err == nil {
				t.Errorf("Canonical(%s) = %s, want an error", in, got)
			}
			continue
		}
		if err != nil || string(got) != want {
			t.Errorf("Canonical(%s): got %s (%v), want %s", in, got, err, want)
		}
		// The canonical text must decode strictly back to the same number.
		back, err := Decode(got, Limits{})
		if wantBack := v + 0; err != nil || back != wantBack {
			t.Errorf("Decode(%s): got %v (%v), want %v", got, back, err, wantBack)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n < 40 {
		t.Fatalf("read %d vectors, want at least 40", n)
	}
}

// golden reads a testdata file made of a line saying what it proves and
// "-- name --" sections.
func golden(t *testing.T, name string) map[string]string {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]string{}
	parts := strings.Split(string(data), "\n-- ")
	for _, p := range parts[1:] {
		name, body, _ := strings.Cut(p, " --\n")
		sections[name] = strings.TrimSuffix(body, "\n")
	}
	return sections
}

func TestRFC8785Sample(t *testing.T) {
	g := golden(t, "rfc8785_sample.txt")
	in, want := g["input"], g["canonical"]

	// Decode refuses the sample as written: 333333333.33333329 is not the
	// shortest form of the float64 it becomes.
	if _, err := Decode([]byte(in), Limits{}); !isCode(err, CodeLossyNumber) {
		t.Errorf("Decode(RFC 8785 sample): got %v, want %v", err, CodeLossyNumber)
	}
	// A lenient reading of the sample canonicalises to the RFC's output.
	var lenient any
	if err := json.Unmarshal([]byte(in), &lenient); err != nil {
		t.Fatal(err)
	}
	if got, err := Canonical(lenient); err != nil || string(got) != want {
		t.Errorf("Canonical(RFC 8785 sample):\ngot  %s (%v)\nwant %s", got, err, want)
	}
	// With the number written in its shortest form, Decode accepts it and
	// Canonical gives the same output.
	exactIn := strings.Replace(in, "333333333.33333329", "333333333.3333333", 1)
	v, err := Decode([]byte(exactIn), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Canonical(v); err != nil || string(got) != want {
		t.Errorf("Canonical(Decode(sample)):\ngot  %s (%v)\nwant %s", got, err, want)
	}
}

func TestRFC8785Sorting(t *testing.T) {
	g := golden(t, "rfc8785_sorting.txt")
	v, err := Decode([]byte(g["input"]), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Canonical(v); err != nil || string(got) != g["canonical"] {
		t.Errorf("Canonical(sorting sample):\ngot  %s (%v)\nwant %s", got, err, g["canonical"])
	}
}

func TestCanonical(t *testing.T) {
	cyclic := map[string]any{}
	cyclic["self"] = cyclic
	tests := []struct {
		name string
		in   any
		want string // "" means an error
	}{
		{"null", nil, `null`},
		{"true", true, `true`},
		{"false", false, `false`},
		{"empty string", "", `""`},
		{"short escapes", "\"\\\b\f\n\r\t", `"\"\\\b\f\n\r\t"`},
		{"other controls as lowercase \\u00xx", "\x00\x01\x1f\x0b", `"\u0000\u0001\u001f\u000b"`},
		{"DEL, slash and line separators literal", "\x7f/\u2028\u2029", "\"\x7f/\u2028\u2029\""},
		{"non-ASCII literal", "€😀é", `"€😀é"`},
		{"invalid UTF-8", "a\xffb", ""},
		{"invalid UTF-8 key", map[string]any{"\xff": 1.0}, ""},
		{"NaN", math.NaN(), ""},
		{"+Inf", math.Inf(1), ""},
		{"-Inf", math.Inf(-1), ""},
		{"-0", math.Copysign(0, -1), `0`},
		{"int", 42, `42`},
		{"negative int64", int64(-7), `-7`},
		{"int at 2^53", 1 << 53, `9007199254740992`},
		{"int64 at -2^53", int64(-1 << 53), `-9007199254740992`},
		{"int beyond 2^53", 1<<53 + 1, ""},
		{"int64 beyond -2^53", int64(-1<<53 - 1), ""},
		{"uint64", uint64(1e15), `1000000000000000`},
		{"uint64 beyond 2^53", uint64(1<<53 + 1), ""},
		{"float32 unsupported", float32(1), ""},
		{"int32 unsupported", int32(1), ""},
		{"json.Number unsupported", json.Number("1"), ""},
		{"typed map unsupported", map[string]string{"a": "b"}, ""},
		{"nested unsupported", []any{1.0, struct{}{}}, ""},
		{"cycle", cyclic, ""},
		{"empty array", []any{}, `[]`},
		{"nil array", []any(nil), `[]`},
		{"empty object", map[string]any{}, `{}`},
		{"sorted keys", map[string]any{"b": 1.0, "a": []any{"x", nil}, "": true}, `{"":true,"a":["x",null],"b":1}`},
		{"prefix sorts first", map[string]any{"ab": 1.0, "a": 2.0}, `{"a":2,"ab":1}`},
		// U+10000 is the surrogate pair D800 DC00, which sorts before U+E000
		// and U+FFFF although its UTF-8 bytes sort after them.
		{"UTF-16 order", map[string]any{"\uffff": 1.0, "\U00010000": 2.0, "\ue000": 3.0, "\u00e9": 4.0}, "{\"\u00e9\":4,\"\U00010000\":2,\"\ue000\":3,\"\uffff\":1}"},
		{"same high surrogate", map[string]any{"\U0001F601": 1.0, "\U0001F600": 2.0}, "{\"\U0001F600\":2,\"\U0001F601\":1}"},
		{"request", map[string]any{"to": "acct-9", "amount": 20000.0, "type": "transfer"}, `{"amount":20000,"to":"acct-9","type":"transfer"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Canonical(tt.in)
			if tt.want == "" {
				if err == nil {
					t.Errorf("Canonical(%#v) = %s, want an error", tt.in, got)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Errorf("Canonical: got %s (%v), want %s", got, err, tt.want)
			}
		})
	}
}

func TestAppendCanonical(t *testing.T) {
	dst := []byte("prefix:")
	got, err := AppendCanonical(dst, map[string]any{"a": 1.0})
	if err != nil || string(got) != `prefix:{"a":1}` {
		t.Errorf("AppendCanonical: got %s (%v), want %s", got, err, `prefix:{"a":1}`)
	}
	got, err = AppendCanonical(dst, []any{1.0, math.NaN()})
	if err == nil || string(got) != "prefix:" {
		t.Errorf("AppendCanonical(NaN): got %q, %v; want %q and an error", got, err, "prefix:")
	}
}

// TestRoundTrip checks Decode(Canonical(v)) == v and that canonicalising twice changes nothing.
func TestRoundTrip(t *testing.T) {
	inputs := []string{
		`{"action":{"type":"transfer","amount":20000,"to":"acct-9"},"agent":{"id":"agent-42","roles":["payments"]}}`,
		`[0.1,-0,1e21,1e-7,5e-324,1.7976931348623157e308,123456789012345680000,-1.5e-10]`,
		`{"\u0000\u001f\"\\/\b\f\n\r\t":"\u2028\ud83d\ude00\u00e9\u007f","":{"":[]}}`,
		`{"a":[{"b":[{"c":null}]},true,false,"x"],"A0":1}`,
	}
	for _, in := range inputs {
		v, err := Decode([]byte(in), Limits{})
		if err != nil {
			t.Fatalf("Decode(%s): %v", in, err)
		}
		c1, err := Canonical(v)
		if err != nil {
			t.Fatalf("Canonical(%s): %v", in, err)
		}
		v2, err := Decode(c1, Limits{})
		if err != nil {
			t.Fatalf("Decode(%s): %v", c1, err)
		}
		c2, err := Canonical(v2)
		if err != nil || string(c2) != string(c1) {
			t.Errorf("canonical form not stable:\ngot  %s (%v)\nwant %s", c2, err, c1)
		}
		if !json.Valid(c1) {
			t.Errorf("canonical %s is not valid JSON", c1)
		}
	}
}
