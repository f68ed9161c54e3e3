package hsm_test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/internal/hsm"
	"github.com/rulelock/rulelock/internal/hsm/hsmtest"
)

// TestSignerTokenGoneAndBack removes the token directory under a signer:
// signing fails, and works again, with the same key, once it is back.
func TestSignerTokenGoneAndBack(t *testing.T) {
	_, s := newKey(t, "checkpoint", "example.com/log")
	v, err := note.NewVerifier(s.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	tokens := hsmtest.TokenDir(t)
	if err := os.Rename(tokens, tokens+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the signature and the reconnection both fail
		if _, err := note.Sign(&note.Note{Text: checkpoint}, s); err == nil {
			t.Fatal("signed with the token gone")
		}
	}
	if err := os.Remove(tokens); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tokens+".away", tokens); err != nil {
		t.Fatal(err)
	}
	msg, err := note.Sign(&note.Note{Text: checkpoint}, s)
	if err != nil {
		t.Fatalf("sign with the token back: %v", err)
	}
	if _, err := note.Open(msg, note.VerifierList(v)); err != nil {
		t.Fatalf("note signed after reconnecting: %v", err)
	}
}

// TestSignerRefusesReplacedKey replaces the token with one of the same
// label holding another key under the same label: the signer never signs
// with it.
func TestSignerRefusesReplacedKey(t *testing.T) {
	cfg, s := newKey(t, "checkpoint", "example.com/log")
	tokens := hsmtest.TokenDir(t)
	if err := os.Rename(tokens, tokens+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sign([]byte("x")); err == nil {
		t.Fatal("signed with the token gone")
	}
	// The failed signature released the module; a new token of the same
	// label gets another key under the same label.
	out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", hsmtest.Token, "--pin", hsmtest.PIN, "--so-pin", hsmtest.SOPIN).CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util: %v\n%s", err, out)
	}
	other, err := hsm.GenerateKey(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if other.VerifierKey() == s.VerifierKey() {
		t.Fatal("the new token has the same key")
	}
	other.Close()
	for range 2 {
		_, err = s.Sign([]byte("y"))
		if err == nil || !strings.Contains(err.Error(), "now another key") {
			t.Fatalf("sign with the key replaced: got %v, want a refusal", err)
		}
	}
}

// TestSignerRedactsPIN: the Signer keeps the PIN to reconnect, and never
// prints it.
func TestSignerRedactsPIN(t *testing.T) {
	_, s := newKey(t, "checkpoint", "example.com/log")
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		got := fmt.Sprintf(format, s)
		// The key hash is random hex and could hold the PIN's digits.
		got = strings.ReplaceAll(got, fmt.Sprintf("%08x", s.KeyHash()), "")
		if strings.Contains(got, hsmtest.PIN) {
			t.Errorf("%s of a Signer shows the PIN: %s", format, got)
		}
	}
}
