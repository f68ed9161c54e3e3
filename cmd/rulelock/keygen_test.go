package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/hsm"
	"github.com/rulelock/rulelock/internal/hsm/hsmtest"
)

// keygenRun runs `rulelock args...` with an in-memory env.
func keygenRun(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }}
	code = run(context.Background(), e, args)
	return code, out.String(), errOut.String()
}

func TestKeygenFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.key")
	code, stdout, stderr := keygenRun(t, "keygen", "--name", "example.com/log", "--out", path)
	if code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}

	vkey := strings.TrimSuffix(stdout, "\n")
	if strings.Contains(vkey, "\n") || !strings.HasPrefix(vkey, "example.com/log+") {
		t.Fatalf("stdout %q, want one verifier key line", stdout)
	}
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatalf("note.NewVerifier(%q): %v", vkey, err)
	}

	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Mode().Perm(); got != 0o600 {
		t.Errorf("key file mode %v, want 0600", got)
	}
	skey, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(skey), "PRIVATE+KEY+example.com/log+") {
		t.Fatalf("key file %q is not a note private key", skey)
	}
	signer, err := audit.LoadKeyFile(path)
	if err != nil {
		t.Fatalf("audit.LoadKeyFile: %v", err)
	}
	msg, err := note.Sign(&note.Note{Text: "example.com/log\n1\nAAAA\n"}, signer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := note.Open(msg, note.VerifierList(verifier)); err != nil {
		t.Fatalf("note signed with the key file does not verify with the printed key: %v", err)
	}

	// A second keygen must not overwrite the key.
	code, _, stderr = keygenRun(t, "keygen", "--name", "example.com/log", "--out", path)
	if code != 1 || !strings.Contains(stderr, "refusing to overwrite") {
		t.Errorf("second keygen: exit %d, stderr %q; want exit 1, refusing to overwrite", code, stderr)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(again, skey) {
		t.Error("second keygen changed the key file")
	}
}

func TestKeygenDefaultFile(t *testing.T) {
	t.Chdir(t.TempDir())
	code, _, stderr := keygenRun(t, "keygen", "--name", "example.com/log")
	if code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	if _, err := os.Stat("example.com_log.key"); err != nil {
		t.Fatalf("default key file: %v (stderr %q)", err, stderr)
	}
}

func TestKeygenUsage(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{}, "--name is required"},
		{[]string{"--name", "a b"}, "invalid key name"},
		{[]string{"--name", "a+b"}, "invalid key name"},
		{[]string{"--name", "k", "extra"}, `unexpected argument "extra"`},
		{[]string{"--name", "k", "--token", "t"}, "need --pkcs11-module"},
		{[]string{"--name", "k", "--pkcs11-module", "m.so", "--pin-file", "p"}, "needs --token and --pin-file"},
		{[]string{"--name", "k", "--pkcs11-module", "m.so", "--token", "t", "--pin-file", "p", "--out", "f"}, "--out cannot be used"},
		{[]string{"--bogus"}, "flag provided but not defined"},
	}
	for _, tt := range tests {
		code, stdout, stderr := keygenRun(t, append([]string{"keygen"}, tt.args...)...)
		if code != 2 || stdout != "" || !strings.Contains(stderr, tt.want) {
			t.Errorf("keygen %q: exit %d, stdout %q, stderr %q; want exit 2 and %q", tt.args, code, stdout, stderr, tt.want)
		}
	}
}

func TestKeygenPKCS11(t *testing.T) {
	cfg := hsmtest.SoftHSM(t)
	pinFile := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pinFile, []byte(cfg.PIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"keygen", "--name", "example.com/log", "--pkcs11-module", cfg.Module,
		"--token", cfg.Token, "--pin-file", pinFile, "--label", "checkpoint"}
	code, stdout, stderr := keygenRun(t, args...)
	if code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	vkey := strings.TrimSuffix(stdout, "\n")
	if _, err := note.NewVerifier(vkey); err != nil {
		t.Fatalf("note.NewVerifier(%q): %v", vkey, err)
	}

	cfg.Label, cfg.Name = "checkpoint", "example.com/log"
	s, err := hsm.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := s.VerifierKey()
	s.Close()
	if got != vkey {
		t.Errorf("key on the token has verifier key %q, keygen printed %q", got, vkey)
	}

	code, _, stderr = keygenRun(t, args...)
	if code != 1 || !strings.Contains(stderr, "key label already in use") {
		t.Errorf("second keygen: exit %d, stderr %q; want exit 1, key label already in use", code, stderr)
	}

	if err := os.WriteFile(pinFile, []byte("9999\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args[len(args)-1] = "other"
	code, _, stderr = keygenRun(t, args...)
	if code != 1 || !strings.Contains(stderr, "incorrect pin") {
		t.Errorf("wrong pin: exit %d, stderr %q; want exit 1, incorrect pin", code, stderr)
	}
}
