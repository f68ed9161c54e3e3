package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

// TestConfigRefusesOneKeyTwoApprovers: two approvers with one public key
// are refused with the file and line of the second's key: one private key
// must never count twice towards a quorum.
func TestConfigRefusesOneKeyTwoApprovers(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	vkey := func(name string) string {
		k, err := note.NewEd25519VerifierKey(name, pub)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	path := filepath.Join(t.TempDir(), "rulelock.yaml")
	cfg := "approvers:\n" +
		"  - id: alice\n    groups: [treasury]\n    key: " + vkey("alice") + "\n" +
		"  - id: bob\n    groups: [treasury]\n    key: " + vkey("bob") + "\n"
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = readConfig(path)
	want := path + `:7: approver "bob" has the same public key as approver "alice" (line 4)`
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("got %v, want %s...", err, want)
	}
}
