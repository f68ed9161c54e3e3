package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rulelock/rulelock/internal/attest"
	"github.com/rulelock/rulelock/internal/attest/swtpmtest"
)

// TestTPMEnrol enrols a real swtpm's attestation key against its EK
// certificate (swtpm_setup's, signed by swtpm's local CA as the pinned
// manufacturer root) end to end with the four commands: enrol prints the
// TPM's own pin; another TPM cannot answer the challenge (libtpms answers
// TPM_RC_FAILURE to a credential it cannot decrypt), an EK certificate
// under another manufacturer's root is refused, and a secret file is never
// overwritten.
func TestTPMEnrol(t *testing.T) {
	ca := swtpmtest.NewCA(t)
	sw := swtpmtest.StartWithEK(t, ca)
	other := swtpmtest.StartWithEK(t, ca)
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	write := func(name, text string) {
		if err := os.WriteFile(p(name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("roots.pem", string(ca.Root()))
	write("cas.pem", string(ca.Issuer()))
	run := func(args ...string) (string, int, string) { return cliCode(t, dir, args...) }

	req, code, stderr := run("tpm", "request", "--device", sw.Socket)
	if code != 0 {
		t.Fatalf("tpm request: exit %d: %s", code, stderr)
	}
	write("request", req)
	ch, code, stderr := run("tpm", "challenge", "--ek-roots", p("roots.pem"), "--ek-intermediates", p("cas.pem"), "--secret", p("secret"), p("request"))
	if code != 0 {
		t.Fatalf("tpm challenge: exit %d: %s", code, stderr)
	}
	write("challenge", ch)
	ans, code, stderr := run("tpm", "answer", "--device", sw.Socket, p("challenge"))
	if code != 0 {
		t.Fatalf("tpm answer: exit %d: %s", code, stderr)
	}
	write("answer", ans)
	out, code, stderr := run("tpm", "enrol", "--secret", p("secret"), p("answer"))
	tp, err := attest.OpenTPM(attest.TPMOptions{Device: sw.Socket})
	if err != nil {
		t.Fatal(err)
	}
	pin, _ := tp.AttestationKey()
	tp.Close()
	if code != 0 || out != "tpm-ak "+pin+"\n" {
		t.Fatalf("tpm enrol: exit %d, %q %s; want tpm-ak %s", code, out, stderr, pin)
	}

	if out, code, stderr := run("tpm", "request", "--device", other.Socket); code != 0 {
		t.Fatalf("other: tpm request: %d %s %s", code, out, stderr)
	}
	// Another TPM cannot answer this challenge.
	if ans, code, stderr := run("tpm", "answer", "--device", other.Socket, p("challenge")); code == 0 {
		write("answer2", ans)
		if out, code, _ := run("tpm", "enrol", "--secret", p("secret"), p("answer2")); code != 1 {
			t.Errorf("enrol with another TPM's answer: exit %d %q, want 1", code, out)
		}
	} else {
		t.Logf("another TPM: %s", stderr)
	}

	// The secret file is never overwritten.
	if _, code, stderr := run("tpm", "challenge", "--ek-roots", p("roots.pem"), "--ek-intermediates", p("cas.pem"), "--secret", p("secret"), p("request")); code == 0 || !strings.Contains(stderr, "exists") {
		t.Errorf("a second challenge over the secret file: exit %d %s", code, stderr)
	}
	// Another manufacturer's root.
	wrong := swtpmtest.NewCA(t)
	swtpmtest.StartWithEK(t, wrong) // creates its root
	write("wrong.pem", string(wrong.Root()))
	write("wrongcas.pem", string(ca.Issuer())+string(wrong.Issuer()))
	if _, code, stderr := run("tpm", "challenge", "--ek-roots", p("wrong.pem"), "--ek-intermediates", p("wrongcas.pem"), "--secret", p("secret3"), p("request")); code != 1 || !strings.Contains(stderr, "FAIL") {
		t.Errorf("challenge against another manufacturer's root: exit %d %s", code, stderr)
	} else {
		t.Log(stderr)
	}
}
