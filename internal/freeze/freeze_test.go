package freeze

import (
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
)

func TestStatementRoundTrip(t *testing.T) {
	at := time.Date(2026, 12, 3, 3, 0, 0, 0, time.UTC)
	for _, st := range []Statement{
		{ID: NewID(), Time: at, Reason: "agent-7 pays unknown payees"},
		{Lift: true, ID: NewID()},
	} {
		text := string(st.Marshal())
		got, err := Parse(text)
		if err != nil {
			t.Fatalf("Parse(%q): %v", text, err)
		}
		if got != st {
			t.Errorf("Parse(Marshal(%+v)) = %+v", st, got)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	id := NewID()
	for _, text := range []string{
		"",
		"rulelock freeze v1\nid " + id + "\ntime 2026-12-03T03:00:00Z\n",                                          // no reason
		"rulelock freeze v1\nid " + id + "\ntime 2026-12-03T03:00:00Z\nreason \n",                                 // empty reason
		"rulelock freeze v1\nid " + id + "\ntime 2026-12-03T03:00:00Z\nreason two  spaces\n",                      // not canonical
		"rulelock freeze v1\nid " + id + "\ntime 2026-12-03T03:00:00.5Z\nreason x\n",                              // fractional time
		"rulelock freeze v1\nid " + id + "\ntime 2026-12-03T03:00:00Z\nreason x",                                  // no final newline
		"rulelock freeze v1\nid r" + id[1:] + "\ntime 2026-12-03T03:00:00Z\nreason x\n",                           // not a freeze id
		"rulelock unfreeze v1\nid " + id + "\nreason x\n",                                                         // extra line
		"rulelock approval v1\nid " + id + "\n",                                                                   // another statement
		"rulelock freeze v1\nid " + id + "\ntime 2026-12-03T03:00:00Z\nreason " + strings.Repeat("x", 281) + "\n", // too long
	} {
		if st, err := Parse(text); err == nil {
			t.Errorf("Parse(%q) = %+v, want an error", text, st)
		}
	}
}

func TestSign(t *testing.T) {
	skey, vkey, _ := note.GenerateKey(rand.Reader, "alice")
	signer, _ := note.NewSigner(skey)
	verifier, _ := note.NewVerifier(vkey)
	st := Statement{ID: NewID(), Time: time.Now().UTC().Truncate(time.Second), Reason: CleanReason("  stop\nnow\t")}
	if st.Reason != "stop now" {
		t.Fatalf("CleanReason: %q", st.Reason)
	}
	signed, err := Sign(st, signer)
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(signed, note.VerifierList(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Parse(n.Text); err != nil || got != st {
		t.Errorf("got %+v, %v; want %+v", got, err, st)
	}
	if _, err := Sign(Statement{ID: "x"}, signer); err == nil {
		t.Error("Sign accepted an invalid statement")
	}
}

// FuzzParse: whatever Parse accepts, Marshal gives back byte for byte.
func FuzzParse(f *testing.F) {
	f.Add("rulelock freeze v1\nid " + NewID() + "\ntime 2026-12-03T03:00:00Z\nreason x\n")
	f.Add("rulelock unfreeze v1\nid " + NewID() + "\n")
	f.Fuzz(func(t *testing.T, text string) {
		st, err := Parse(text)
		if err != nil {
			return
		}
		if got := string(st.Marshal()); got != text {
			t.Errorf("Marshal(Parse(%q)) = %q", text, got)
		}
	})
}
