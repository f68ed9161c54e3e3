package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rulelock/rulelock/internal/hsm"
	"github.com/rulelock/rulelock/internal/hsm/hsmtest"
)

// rulelock runs the CLI in process and returns its exit code and output.
func rulelock(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, getenv: os.Getenv}, args)
	return code, out.String(), errOut.String()
}

// TestBundleSignPKCS11 signs one bundle with a key file and a key on a
// SoftHSM2 token: the two signatures make a 2-of-2 quorum.
func TestBundleSignPKCS11(t *testing.T) {
	cfg := hsmtest.SoftHSM(t)
	cfg.Label, cfg.Name = "carol-hsm", "carol"
	s, err := hsm.GenerateKey(cfg)
	if err != nil {
		t.Fatal(err)
	}
	carol := s.VerifierKey()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pinFile, aliceKey, out := filepath.Join(dir, "pin"), filepath.Join(dir, "alice.key"), filepath.Join(dir, "seed-1")
	if err := os.WriteFile(pinFile, []byte(hsmtest.PIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, alice, stderr := rulelock(t, "keygen", "--name", "alice", "--out", aliceKey)
	if code != 0 {
		t.Fatalf("keygen: exit %d: %s", code, stderr)
	}
	steps := [][]string{
		{"bundle", "build", filepath.Join("..", "..", "examples", "seed"), "-o", out, "--version", "1"},
		{"bundle", "sign", out, "--key", aliceKey},
		{"bundle", "sign", out, "--pkcs11-module", cfg.Module, "--token", cfg.Token, "--pin-file", pinFile, "--label", cfg.Label, "--name", "carol"},
		{"bundle", "trust", "--threshold", "2", strings.TrimSpace(alice), carol},
	}
	var trust string
	for _, args := range steps {
		code, stdout, stderr := rulelock(t, args...)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", strings.Join(args, " "), code, stderr)
		}
		trust = stdout
	}
	trustFile := filepath.Join(dir, "trust")
	if err := os.WriteFile(trustFile, []byte(trust), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := rulelock(t, "bundle", "verify", out, "--trust", trustFile)
	if code != 0 || !strings.Contains(stdout, "trusted    alice, carol\n") {
		t.Fatalf("verify: exit %d\n%s%s", code, stdout, stderr)
	}
}

func TestLineDiff(t *testing.T) {
	tests := []struct {
		name, a, b, want string
	}{
		{"one line changed", "a\nb\nc\n", "a\nB\nc\n", "--- a/x\n+++ b/x\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n"},
		{"added file", "", "a\nb\n", "--- a/x\n+++ b/x\n@@ -0,0 +1,2 @@\n+a\n+b\n"},
		{"no final newline", "a\n", "a\nb", "--- a/x\n+++ b/x\n@@ -1 +1,2 @@\n a\n+b\n\\ No newline at end of file\n"},
		{"two hunks", "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n", "1\nX\n3\n4\n5\n6\n7\n8\n9\n10\nY\n12\n",
			"--- a/x\n+++ b/x\n@@ -1,5 +1,5 @@\n 1\n-2\n+X\n 3\n 4\n 5\n@@ -8,5 +8,5 @@\n 8\n 9\n 10\n-11\n+Y\n 12\n"},
		{"close changes share a hunk", "1\n2\n3\n4\n5\n6\n7\n8\n", "1\nX\n3\n4\n5\n6\nY\n8\n",
			"--- a/x\n+++ b/x\n@@ -1,8 +1,8 @@\n 1\n-2\n+X\n 3\n 4\n 5\n 6\n-7\n+Y\n 8\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			lineDiff(&b, "x", "x", []byte(tt.a), []byte(tt.b))
			if got := b.String(); got != tt.want {
				t.Errorf("lineDiff:\ngot:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}
