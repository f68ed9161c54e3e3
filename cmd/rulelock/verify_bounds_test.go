package main

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/audit"
)

// verifyReturns runs rulelock verify with args and fails the test if it
// never returns. The wait guards against a hang; it asserts no timing.
func verifyReturns(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	type res struct {
		code     int
		out, err string
	}
	done := make(chan res, 1)
	go func() {
		code, out, errOut := rulelock(t, append([]string{"verify"}, args...)...)
		done <- res{code, out, errOut}
	}()
	select {
	case r := <-done:
		return r.code, r.out, r.err
	case <-time.After(2 * time.Minute):
		t.Fatalf("rulelock verify %v did not return", args)
		return 0, "", ""
	}
}

// TestVerifyReceiptHugeTree: `rulelock verify --receipt` on a receipt whose
// checkpoint, signed with the log's key, claims 2^62+1 entries fails at
// once with bad_signature instead of spinning forever; a receipt, --since
// or --key file that never ends is refused after its bound.
func TestVerifyReceiptHugeTree(t *testing.T) {
	dir := t.TempDir()
	skey, vkey, err := note.GenerateKey(nil, "rulelock.test/audit")
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	c := audit.Checkpoint{Origin: s.Name(), Size: 1<<62 + 1, Root: tlog.Hash{1}}
	signed, err := note.Sign(&note.Note{Text: string(c.Text())}, s)
	if err != nil {
		t.Fatal(err)
	}
	entry := []byte(`{"kind":"note","message":"hello","time":"2026-11-22T10:00:00Z","v":1}`)
	receipt := fmt.Sprintf("c2sp.org/tlog-proof@v1\nextra %s\nindex 5\n%s\n\n%s",
		base64.StdEncoding.EncodeToString(entry), base64.StdEncoding.EncodeToString(make([]byte, 32)), signed)
	path := filepath.Join(dir, "receipt")
	if err := os.WriteFile(path, []byte(receipt), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ := verifyReturns(t, "--receipt", path, "--key", vkey, "--json")
	if code != 1 || !strings.Contains(out, `"class":"bad_signature"`) || !strings.Contains(out, "over the limit") {
		t.Fatalf("exit %d, output %s; want 1 and a bad_signature naming the limit", code, out)
	}

	if _, err := os.Stat("/dev/zero"); err != nil {
		return
	}
	for _, args := range [][]string{
		{"--receipt", "/dev/zero", "--key", vkey},
		{dir, "--since", "/dev/zero", "--key", vkey},
		{"--receipt", path, "--key", "/dev/zero"},
	} {
		code, _, errOut := verifyReturns(t, args...)
		if code == 0 || !strings.Contains(errOut, "over") {
			t.Errorf("verify %v: exit %d, stderr %q; want a refusal of the endless file", args, code, errOut)
		}
	}
}
