package approval

import (
	"bytes"
	"encoding/hex"
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rogpeppe/go-internal/txtar"
	"golang.org/x/mod/sumdb/note"
)

var update = flag.Bool("update", false, "rewrite the .note sections of testdata/vectors.txtar")

const validStatement = `rulelock approval v1
request req-42
action sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
policy sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
expires 2026-11-22T14:00:00Z
verdict approve
`

func TestParseStatement(t *testing.T) {
	st, err := ParseStatement([]byte(validStatement))
	if err != nil {
		t.Fatal(err)
	}
	want := Statement{
		Request: "req-42",
		Policy:  "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
		Expires: time.Date(2026, 11, 22, 14, 0, 0, 0, time.UTC),
		Verdict: Approve,
	}
	hex.Decode(want.Action[:], []byte("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"))
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("ParseStatement (-want +got):\n%s", diff)
	}
	if got := st.Marshal(); string(got) != validStatement {
		t.Errorf("Marshal:\n%s\nwant:\n%s", got, validStatement)
	}

	// Each of these differs from a valid statement in one way.
	bad := []struct{ name, old, new string }{
		{"empty", validStatement, ""},
		{"no final newline", "approve\n", "approve"},
		{"CRLF", "req-42\n", "req-42\r\n"},
		{"blank line", "req-42\n", "req-42\n\n"},
		{"other version", "v1", "v2"},
		{"lines swapped", "request req-42\naction", "action"},
		{"extra line", "verdict approve\n", "verdict approve\nnote hi\n"},
		{"reason on an approval", "verdict approve\n", "verdict approve\nreason why\n"},
		{"rejection without reason", "verdict approve\n", "verdict reject\n"},
		{"rejection with empty reason", "verdict approve\n", "verdict reject\nreason \n"},
		{"reason with two spaces", "verdict approve\n", "verdict reject\nreason a  b\n"},
		{"reason with trailing space", "verdict approve\n", "verdict reject\nreason ab \n"},
		{"reason with a bidi override", "verdict approve\n", "verdict reject\nreason a\u202eb\n"},
		{"reason with a tab", "verdict approve\n", "verdict reject\nreason a\tb\n"},
		{"reason too long", "verdict approve\n", "verdict reject\nreason " + strings.Repeat("x", MaxReasonSize+1) + "\n"},
		{"unknown verdict", "approve", "yes"},
		{"double space after key", "request req-42", "request  req-42"},
		{"empty request id", "request req-42", "request "},
		{"space in request id", "req-42", "req 42"},
		{"slash in request id", "req-42", "req/42"},
		{"upper-case action hex", "sha256:9f86", "sha256:9F86"},
		{"short action hash", "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "sha256:9f86"},
		{"action without algorithm", "action sha256:", "action "},
		{"other hash algorithm", "policy sha256:", "policy sha512:"},
		{"fractional seconds", "14:00:00Z", "14:00:00.000Z"},
		{"offset instead of Z", "14:00:00Z", "14:00:00+00:00"},
		{"lower-case z", "14:00:00Z", "14:00:00z"},
		{"no seconds", "14:00:00Z", "14:00Z"},
		{"out-of-range day", "2026-11-22", "2026-11-31"},
		{"leap second", "14:00:00Z", "23:59:60Z"},
		{"invalid UTF-8", "req-42", "req-\xff"},
	}
	for _, tt := range bad {
		text := strings.Replace(validStatement, tt.old, tt.new, 1)
		if text == validStatement {
			t.Fatalf("%s: edit changed nothing", tt.name)
		}
		if st, err := ParseStatement([]byte(text)); err == nil {
			t.Errorf("%s: ParseStatement accepted %q as %+v", tt.name, text, st)
		}
	}
	if _, err := ParseStatement(bytes.Repeat([]byte("x"), MaxStatementSize+1)); err == nil {
		t.Errorf("ParseStatement accepted an oversized statement")
	}
}

func TestSanitizeReason(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"  two\n\nlines\r\n", "two lines"},
		{"tab\there", "tab here"},
		{"bidi \u202eevil\u202c here", "bidi evil here"},
		{"nbsp\u00a0and zero\u200bwidth", "nbsp and zero width"},
		{"bad \xff utf8", "bad utf8"},
		{"émoji 🙂 ok", "émoji 🙂 ok"},
		{"\x00\x01", ""},
		{strings.Repeat("é", MaxReasonSize), strings.Repeat("é", MaxReasonSize/2)},
		{strings.Repeat("a", MaxReasonSize-1) + " b", strings.Repeat("a", MaxReasonSize-1)},
	}
	for _, tt := range tests {
		got := SanitizeReason(tt.in)
		if got != tt.want {
			t.Errorf("SanitizeReason(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if again := SanitizeReason(got); again != got {
			t.Errorf("SanitizeReason is not idempotent on %q: %q", got, again)
		}
	}
}

func TestSignChecks(t *testing.T) {
	s := keys()["alice"].signer
	base := Statement{Request: "r", Policy: testPolicy, Expires: t0, Verdict: Approve}
	if _, err := Sign(base, s); err != nil {
		t.Fatalf("Sign(valid): %v", err)
	}
	bad := map[string]func(*Statement){
		"sub-second expiry":    func(st *Statement) { st.Expires = t0.Add(time.Millisecond) },
		"non-UTC expiry":       func(st *Statement) { st.Expires = t0.In(time.FixedZone("X", 3600)) },
		"zero expiry":          func(st *Statement) { st.Expires = time.Time{} },
		"unsanitised reason":   func(st *Statement) { st.Verdict, st.Reason = Reject, "a\nverdict approve" },
		"approval reason":      func(st *Statement) { st.Reason = "because" },
		"newline in id":        func(st *Statement) { st.Request = "r\nverdict approve" },
		"unknown verdict":      func(st *Statement) { st.Verdict = "maybe" },
		"non-canonical digest": func(st *Statement) { st.Policy = strings.ToUpper(testPolicy) },
	}
	for name, edit := range bad {
		st := base
		edit(&st)
		if _, err := Sign(st, s); err == nil {
			t.Errorf("%s: Sign accepted %+v", name, st)
		}
	}
}

// TestVectors checks the published vectors in testdata/vectors.txtar.
func TestVectors(t *testing.T) {
	const file = "testdata/vectors.txtar"
	ar, err := txtar.ParseFile(file)
	if err != nil {
		t.Fatal(err)
	}
	section := func(name string) []byte {
		for _, f := range ar.Files {
			if f.Name == name {
				return f.Data
			}
		}
		return nil
	}
	signer, err := note.NewSigner(strings.TrimSpace(string(section("key"))))
	if err != nil {
		t.Fatal(err)
	}
	vkey := strings.TrimSpace(string(section("vkey")))
	reg, err := NewRegistry([]Approver{{ID: "alice@example.com", Key: vkey}})
	if err != nil {
		t.Fatal(err)
	}
	var out []txtar.File
	for _, f := range ar.Files {
		if strings.HasSuffix(f.Name, ".note") {
			continue
		}
		out = append(out, f)
		name, ok := strings.CutSuffix(f.Name, ".statement")
		if !ok {
			continue
		}
		st, err := ParseStatement(f.Data)
		if err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		signed, err := Sign(st, signer)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, txtar.File{Name: name + ".note", Data: signed})
		if want := section(name + ".note"); !*update && !bytes.Equal(signed, want) {
			t.Errorf("%s: Sign gave\n%s\nwant\n%s", name, signed, want)
		}
		who, opened, err := reg.Open(signed)
		if err != nil || who != "alice@example.com" || !cmp.Equal(opened, st) {
			t.Errorf("%s: Open: %q, %+v, %v", name, who, opened, err)
		}
	}
	if *update {
		ar.Files = out
		if err := os.WriteFile(file, txtar.Format(ar), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzStatement checks that ParseStatement accepts only canonical text:
// whatever it accepts, Marshal gives back byte for byte.
func FuzzStatement(f *testing.F) {
	f.Add([]byte(validStatement))
	f.Add([]byte(strings.Replace(validStatement, "verdict approve\n", "verdict reject\nreason no «way»\n", 1)))
	f.Add([]byte(strings.Replace(validStatement, "14:00:00Z", "14:00:00.5Z", 1)))
	f.Fuzz(func(t *testing.T, text []byte) {
		st, err := ParseStatement(text)
		if err != nil {
			return
		}
		if got := st.Marshal(); !bytes.Equal(got, text) {
			t.Fatalf("ParseStatement accepted non-canonical\n%q\nwhich marshals as\n%q", text, got)
		}
		if err := st.Check(); err != nil {
			t.Fatalf("ParseStatement returned a statement that fails Check: %v", err)
		}
	})
}

// FuzzOpen checks that Registry.Open accepts only a canonical note: one
// signature line after the canonical statement.
func FuzzOpen(f *testing.F) {
	skey := "PRIVATE+KEY+alice@example.com+3dbbb3c5+Aco5ygetZwazQW0YnbfYsLFjH4FLVFTp9skKGr+hMAom"
	vkey := "alice@example.com+3dbbb3c5+AT8n67axP6+As7pY8nAPqIAL2FxYWTZWYXpDNrqgGk+W"
	signer, err := note.NewSigner(skey)
	if err != nil {
		f.Fatal(err)
	}
	reg, err := NewRegistry([]Approver{{ID: "alice@example.com", Key: vkey}})
	if err != nil {
		f.Fatal(err)
	}
	st, _ := ParseStatement([]byte(validStatement))
	signed, err := Sign(st, signer)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(signed)
	f.Add(append(bytes.Clone(signed), signed[bytes.LastIndex(signed, []byte("\n\n"))+2:]...))
	f.Fuzz(func(t *testing.T, msg []byte) {
		who, st, err := reg.Open(msg)
		if err != nil {
			return
		}
		resigned, err := Sign(st, signer)
		if err != nil || who != "alice@example.com" || !bytes.Equal(resigned, msg) {
			t.Fatalf("Open accepted %q from %q, which is not the canonical %q (%v)", msg, who, resigned, err)
		}
	})
}
