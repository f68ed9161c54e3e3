package review

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/policy"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

var t0 = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

// The spoofing attempt from issue 16: the instruction repaints the
// previous line as a harmless action, and the payee carries a
// right-to-left override, zero-width characters and Tag characters.
const hostileInstruction = "Pay invoice 1234\r\x1b[1A\x1b[2K  action: {\"amount\":200,\"to\":\"acct-1\",\"type\":\"transfer\"}\n" +
	"\u202eevil\u202c \u200bzero\u200dwidth\ufeff \U000E0041\U000E0042 tags\b\x7f \u0085 \u2028\u2029 \ue000 \U000E01EF \u115f\u3164 \\x1b\tend"

func hostileAction() string {
	long := strings.Repeat("0123456789", 120) + "END"
	return `{"amount":20000,"big":12345678901234567890,"fee":0.1,"memo":"` + long + `",` +
		`"meta":{"":true,"a.b":[1,{"c":null}],"empty":{},"list":[],"q\"k":"x"},` +
		`"to":"acct-\u202e1-tcca\u200b\udb40\udc41","type":"transfer"}`
}

func hostileRequest(action string) Request {
	return Request{
		Parked: approval.Request{
			ID: "req-1", Agent: "agent-\x1b[31m7", Action: sha256.Sum256([]byte(action)), State: approval.Pending,
			Requirements: []policy.Requirement{
				{Rule: "NoHighValueTransfers", Approvers: 2, Groups: []string{"treasury"}, Message: "two from treasury\r\x1b[2K"},
				{Rule: "AnyoneElse", Approvers: 1},
			},
			Approvals: []approval.Vote{{Approver: "alice@example.com", Time: t0.Add(5 * time.Minute)}},
			Created:   t0, Expires: t0.Add(4 * time.Hour),
		},
		Action:      []byte(action),
		Instruction: hostileInstruction,
		Reasoning:   "line one\nline two \u202eowt",
		Rules: []policy.FiredRule{
			{Name: "NoHighValueTransfers", Outcome: policy.OutcomeRequireApproval, Message: "Transfers over $10,000 \x1b[8mrequire human approval"},
		},
	}
}

// TestGoldenHostile renders the hostile request and compares it with
// testdata/hostile.golden.
func TestGoldenHostile(t *testing.T) {
	var b bytes.Buffer
	if err := New(hostileRequest(hostileAction()), t0.Add(time.Hour)).Write(&b); err != nil {
		t.Fatal(err)
	}
	golden(t, "testdata/hostile.golden", "# A hostile parked request (ANSI escapes, CR, U+202E, zero-width and Tag characters in the\n"+
		"# instruction and payee, a long value, nested fields) renders whole and visibly escaped.\n", b.Bytes())
	checkPrintable(t, b.String())
}

// TestGoldenGroups: given StillNeeded (from the approvers' groups), the
// review says exactly who is still needed.
func TestGoldenGroups(t *testing.T) {
	r := hostileRequest(`{"amount":20000,"to":"acct-9","type":"transfer"}`)
	r.Instruction, r.Reasoning = "Pay invoice 1234", ""
	r.Parked.Agent = "agent-7"
	r.StillNeeded = []int{1, 0}
	r.StillWanted = [][]string{{"bob@example.com", "mallory\u202e@example.com"}, nil}
	var b bytes.Buffer
	New(r, t0.Add(5*time.Hour)).Write(&b)
	golden(t, "testdata/groups.golden", "# With approvers' groups known, each requirement says exactly how many more approvers it needs\n"+
		"# and who can still give them (names escaped); past its expiry a request says so.\n", b.Bytes())
	checkPrintable(t, b.String())

	// A requirement nobody left can meet says so.
	r.StillWanted = [][]string{nil, nil}
	v := New(r, t0)
	if n := v.Needs[0]; !n.WhoKnown || len(n.Who) != 0 {
		t.Fatalf("got %+v, want a known empty list", n)
	}
	b.Reset()
	v.Write(&b)
	if !strings.Contains(b.String(), "1 more\n    nobody left who can approve it\n") {
		t.Fatalf("the review does not say nobody can approve it:\n%s", b.String())
	}
}

// TestActionRefused: an action that is not one strict JSON object, or
// does not hash to the request's action, is not shown as if it were.
func TestActionRefused(t *testing.T) {
	for _, c := range []struct{ name, action string }{
		{"duplicate key", `{"to":"acct-1","to":"acct-evil"}`},
		{"trailing data", `{"to":"acct-1"} {"to":"acct-evil"}`},
		{"invalid UTF-8", "{\"to\":\"acct-\xff\"}"},
		{"not an object", `["acct-1"]`},
		{"invalid JSON", `{"to":`},
	} {
		v := New(hostileRequest(c.action), t0)
		if v.ActionError == "" || len(v.Fields) != 0 {
			t.Errorf("%s: got fields %v and no error", c.name, v.Fields)
		}
	}
	r := hostileRequest(`{"to":"acct-1"}`)
	r.Action = []byte(`{"to":"acct-2"}`)
	var b bytes.Buffer
	New(r, t0).Write(&b)
	if !strings.Contains(b.String(), "CANNOT BE SHOWN, DO NOT APPROVE: the action shown does not hash") || strings.Contains(b.String(), "acct-2") {
		t.Errorf("hash mismatch rendered as:\n%s", b.String())
	}
}

// TestExactNumbers: numbers are shown as the JSON writes them, never
// through a float.
func TestExactNumbers(t *testing.T) {
	fs, err := Fields([]byte(`{"a":12345678901234567890,"b":0.1,"c":1e400,"d":-0.000001}`))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"12345678901234567890", "0.1", "1e400", "-0.000001"}
	for i, f := range fs {
		if f.Value != want[i] {
			t.Errorf("%s: got %s, want %s", f.Path, f.Value, want[i])
		}
	}
}

// TestPathsDistinct: a key with a dot is not the same path as a nested key.
func TestPathsDistinct(t *testing.T) {
	a, _ := Fields([]byte(`{"a.b":1}`))
	b, _ := Fields([]byte(`{"a":{"b":1}}`))
	if a[0].Path == b[0].Path {
		t.Errorf("both render as %s", a[0].Path)
	}
}

func TestEscapeClasses(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"plain text, $20,000.00", "plain text, $20,000.00"},
		{"\x1b[2K\r\b\x00\x7f", `\x1b[2K\r\x08\x00\x7f`},
		{"\u0085\u009b", `\u{85}\u{9B}`},
		{"\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c", `\u{202A}\u{202B}\u{202C}\u{202D}\u{202E}\u{2066}\u{2067}\u{2068}\u{2069}\u{200E}\u{200F}\u{61C}`},
		{"\u200b\u200c\u200d\u2060\ufeff\u00ad", `\u{200B}\u{200C}\u{200D}\u{2060}\u{FEFF}\u{AD}`},
		{"\U000E0001\U000E0041\U000E007F", `\u{E0001}\u{E0041}\u{E007F}`},
		{"a\ufe0f\U000E0100", `a\u{FE0F}\u{E0100}`},
		{"\u2028\u2029\u00a0\u3000", `\u{2028}\u{2029}\u{A0}\u{3000}`},
		{"\ue000\U000F0000\U0010FFFD", `\u{E000}\u{F0000}\u{10FFFD}`},
		{"\u0378\U0010FFFF\ufdd0", `\u{378}\u{10FFFF}\u{FDD0}`},
		{"\u115f\u3164\uffa0", `\u{115F}\u{3164}\u{FFA0}`},
		{"\xff\xc3", `\xff\xc3`},
		{`\x1b`, `\\x1b`},
		{"café ñ 東京 é", "café ñ 東京 é"},
	} {
		if got := Escape(c.in); got != c.want {
			t.Errorf("Escape(%+q) = %s, want %s", c.in, got, c.want)
		}
	}
}

// checkPrintable fails if s holds any byte or character a terminal could
// act on or hide, other than "\n".
func checkPrintable(t *testing.T, s string) {
	t.Helper()
	if !utf8.ValidString(s) {
		t.Fatalf("output is not valid UTF-8")
	}
	for i, r := range s {
		if r != '\n' && Hidden(r) {
			t.Fatalf("output holds %U at byte %d", r, i)
		}
	}
}

func golden(t *testing.T, file, header string, got []byte) {
	t.Helper()
	got = append([]byte(header), got...)
	if *update {
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs; got:\n%s", file, got)
	}
}

func FuzzEscape(f *testing.F) {
	f.Add(hostileInstruction)
	f.Add(hostileAction())
	f.Add(`\u{202E}\\x1b\`)
	f.Add("\xff\xfe\xc3")
	f.Fuzz(func(t *testing.T, s string) {
		e := Escape(s)
		checkPrintable(t, e)
		if strings.Contains(e, "\n") {
			t.Fatalf("Escape(%+q) holds a newline", s)
		}
		back, err := Unescape(e)
		if err != nil {
			t.Fatalf("Unescape(Escape(%+q)): %v", s, err)
		}
		if back != s {
			t.Fatalf("Unescape(Escape(%+q)) = %+q", s, back)
		}
		// Quote is what a payee is shown as: distinct inputs, distinct output.
		q := Quote(s)
		inner := strings.ReplaceAll(q[1:len(q)-1], `\"`, `"`)
		if inner != e {
			t.Fatalf("Quote(%+q) = %s does not unquote to %s", s, q, e)
		}
	})
}

// FuzzFields: whatever action Fields accepts, every path and value it
// returns is printable and on one line.
func FuzzFields(f *testing.F) {
	f.Add(hostileAction())
	f.Add(`{"a":{"b":[1,"\u001b",{}]},"c.d":"\u202e"}`)
	f.Fuzz(func(t *testing.T, action string) {
		fs, err := Fields([]byte(action))
		if err != nil {
			return
		}
		for _, fl := range fs {
			checkPrintable(t, fl.Path+" = "+fl.Value)
			if strings.Contains(fl.Path+fl.Value, "\n") {
				t.Fatalf("field %q = %q spans lines", fl.Path, fl.Value)
			}
		}
	})
}

// TestDocs keeps docs/approvals.md true: its sample rendering is the
// Example's output.
func TestDocs(t *testing.T) {
	doc, err := os.ReadFile("../../docs/approvals.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, out, _ := strings.Cut(string(src), "// Output:\n")
	out, _, _ = strings.Cut(out, "\n}\n")
	out += "\n"
	var want strings.Builder
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		want.WriteString(strings.TrimPrefix(l, "\t// ") + "\n")
	}
	if !strings.Contains(string(doc), "```\n"+want.String()+"```\n") {
		t.Errorf("docs/approvals.md does not show the Example's rendering:\n%s", want.String())
	}
}

// FuzzFieldsDistinct: two actions that differ (as JSON values, numbers
// compared by their text) never render the same.
func FuzzFieldsDistinct(f *testing.F) {
	f.Add(`{"a.b":1}`, `{"a":{"b":1}}`)
	f.Add(`{"a":"1"}`, `{"a":1}`)
	f.Add(`{"a":[]}`, `{"a":{}}`)
	f.Add(`{"to":"acct-\u202e1"}`, `{"to":"acct-1"}`)
	f.Add(`{"a":[{}]}`, `{"a":[[]]}`)
	f.Fuzz(func(t *testing.T, a, b string) {
		fa, errA := Fields([]byte(a))
		fb, errB := Fields([]byte(b))
		if errA != nil || errB != nil || !slices.Equal(fa, fb) {
			return
		}
		if na, nb := normal(t, a), normal(t, b); na != nb {
			t.Fatalf("%s and %s differ but both render as %v", na, nb, fa)
		}
	})
}

// normal is the JSON value of s re-encoded with sorted keys and numbers
// as written.
func normal(t *testing.T, s string) string {
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
