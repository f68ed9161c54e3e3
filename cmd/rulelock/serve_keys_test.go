package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/hsm"
	"github.com/rulelock/rulelock/internal/hsm/hsmtest"
)

// servedLog runs the development gateway on data once, with one allowed
// action, and shuts it down: data then holds a log with entries and
// checkpoints, log.key and log.pub.
func servedLog(t *testing.T, data string, configure ...func(*serveConfig)) {
	t.Helper()
	url, token, stop := testServe(t, data, configure...)
	post(t, url, token, `{"action": {"type": "transfer", "amount": 10, "to": "acct-7"}}`)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// startErr starts the gateway on data and returns why it refused to.
func startErr(t *testing.T, cfg *serveConfig, getenv func(string) string) string {
	t.Helper()
	e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &syncBuffer{}, getenv: getenv}
	g, err := startGateway(context.Background(), e, cfg, true)
	if err == nil {
		g.close()
		t.Fatal("the gateway started")
	}
	return err.Error()
}

func noEnv(string) string { return "" }

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// keyName returns the name+hash of a verifier key, as refusals name keys.
func keyName(t *testing.T, vkey string) string {
	t.Helper()
	v := verifierOf(t, vkey)
	return fmt.Sprintf("%s+%08x", v.Name(), v.KeyHash())
}

// TestServeRefusesMissingKey: with log.key deleted, an existing log is
// never given a new key; log.pub is left as it was.
func TestServeRefusesMissingKey(t *testing.T) {
	data := t.TempDir()
	servedLog(t, data)
	pub := readFile(t, filepath.Join(data, "log.pub"))
	if err := os.Remove(filepath.Join(data, "log.key")); err != nil {
		t.Fatal(err)
	}
	msg := startErr(t, devConfig(data), noEnv)
	for _, want := range []string{"log.key is missing", keyName(t, pub), "restore the log's key"} {
		if !strings.Contains(msg, want) {
			t.Errorf("refusal %q does not say %q", msg, want)
		}
	}
	if _, err := os.Stat(filepath.Join(data, "log.key")); err == nil {
		t.Error("a new log.key was created")
	}
	if got := readFile(t, filepath.Join(data, "log.pub")); got != pub {
		t.Errorf("log.pub changed from %q to %q", pub, got)
	}
}

// TestServeRefusesReplacedKey: another key in log.key is refused, naming
// both keys.
func TestServeRefusesReplacedKey(t *testing.T) {
	data := t.TempDir()
	servedLog(t, data)
	pub := readFile(t, filepath.Join(data, "log.pub"))
	skey, vkey, err := note.GenerateKey(nil, "test.rulelock/log")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "log.key"), []byte(skey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	msg := startErr(t, devConfig(data), noEnv)
	for _, want := range []string{"refusing to start", "is not the log's key", keyName(t, pub), keyName(t, vkey)} {
		if !strings.Contains(msg, want) {
			t.Errorf("refusal %q does not say %q", msg, want)
		}
	}
	if got := readFile(t, filepath.Join(data, "log.pub")); got != pub {
		t.Errorf("log.pub changed from %q to %q", pub, got)
	}
}

// TestServeRefusesKeyNotInLogPub: a log.pub naming another key than the
// signing key is refused.
func TestServeRefusesKeyNotInLogPub(t *testing.T) {
	data := t.TempDir()
	servedLog(t, data)
	_, vkey, err := note.GenerateKey(nil, "test.rulelock/log")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "log.pub"), []byte(vkey+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	msg := startErr(t, devConfig(data), noEnv)
	if !strings.Contains(msg, "not the published key") || !strings.Contains(msg, keyName(t, vkey)) {
		t.Errorf("refusal %q does not name the published key %s", msg, keyName(t, vkey))
	}
}

// TestServeKeepsKeyAcrossRestarts: a restart signs with the same key, and
// log.pub is written once, whole, and not rewritten.
func TestServeKeepsKeyAcrossRestarts(t *testing.T) {
	data := t.TempDir()
	servedLog(t, data)
	key, pub := readFile(t, filepath.Join(data, "log.key")), readFile(t, filepath.Join(data, "log.pub"))
	st, err := os.Stat(filepath.Join(data, "log.pub"))
	if err != nil {
		t.Fatal(err)
	}
	servedLog(t, data)
	if readFile(t, filepath.Join(data, "log.key")) != key || readFile(t, filepath.Join(data, "log.pub")) != pub {
		t.Fatal("the restart changed log.key or log.pub")
	}
	st2, _ := os.Stat(filepath.Join(data, "log.pub"))
	if !os.SameFile(st, st2) {
		t.Error("the restart rewrote log.pub")
	}
	if _, err := audit.VerifyDir(filepath.Join(data, "log"), verifierOf(t, pub), audit.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(data)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".tmp") {
			t.Errorf("temporary file %s left in the data directory", e.Name())
		}
	}
}

func verifierOf(t *testing.T, vkey string) note.Verifier {
	t.Helper()
	v, err := note.NewVerifier(strings.TrimSpace(vkey))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// hsmKey makes a SoftHSM2 token with an Ed25519 key for the test log's
// origin and returns the config section naming it (PIN in $HSM_PIN) and its
// verifier key.
func hsmKey(t *testing.T) (*pkcs11Config, string) {
	t.Helper()
	cfg := hsmtest.SoftHSM(t)
	cfg.Label, cfg.Name = "checkpoint", "test.rulelock/log"
	s, err := hsm.GenerateKey(cfg)
	if err != nil {
		t.Fatal(err)
	}
	vkey := s.VerifierKey()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return &pkcs11Config{Module: cfg.Module, Token: cfg.Token, Label: cfg.Label, PINEnv: "HSM_PIN"}, vkey
}

func hsmEnv(name string) string {
	if name == "HSM_PIN" {
		return hsmtest.PIN
	}
	return ""
}

// TestServePKCS11 signs the log's checkpoints with a key on a SoftHSM2
// token: no key file is made, log.pub is the token's key and the log
// verifies with it. A log begun with the token's key refuses a key file.
func TestServePKCS11(t *testing.T) {
	p, vkey := hsmKey(t)
	data := t.TempDir()
	withHSM := func(cfg *serveConfig) { cfg.Log.Signer.PKCS11 = p }
	e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &syncBuffer{}, getenv: hsmEnv}
	cfg := devConfig(data)
	withHSM(cfg)
	g, stop := runServing(t, e, cfg, true)
	url := "http://" + g.ln.Addr().String()
	waitReady(t, url)
	post(t, url, readFile(t, filepath.Join(data, "agent.token")), `{"action": {"type": "transfer", "amount": 10, "to": "acct-7"}}`)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(data, "log.key")); err == nil {
		t.Error("serve with a PKCS#11 key created log.key")
	}
	if got := strings.TrimSpace(readFile(t, filepath.Join(data, "log.pub"))); got != vkey {
		t.Errorf("log.pub %q, want the token's key %q", got, vkey)
	}
	var out bytes.Buffer
	ve := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &out, getenv: noEnv}
	if code := run(context.Background(), ve, []string{"verify", filepath.Join(data, "log"), "--key", vkey}); code != 0 {
		t.Fatalf("verify with the token's key: exit %d\n%s", code, out.String())
	}
	if !strings.Contains(out.String(), "ok: ") {
		t.Fatalf("verify said %q", out.String())
	}

	// The same log with a key file instead: refused, and no key file made.
	msg := startErr(t, devConfig(data), noEnv)
	if !strings.Contains(msg, "log.key is missing") {
		t.Errorf("the token's log served without the token: %q", msg)
	}
	skey, _, _ := note.GenerateKey(nil, "test.rulelock/log")
	if err := os.WriteFile(filepath.Join(data, "log.key"), []byte(skey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if msg := startErr(t, devConfig(data), noEnv); !strings.Contains(msg, "is not the log's key") {
		t.Errorf("the token's log with a key file: %q", msg)
	}
}

// TestServePKCS11RefusesOtherLogsKey: a log begun with a key file refuses
// a token key that is not its key.
func TestServePKCS11RefusesOtherLogsKey(t *testing.T) {
	p, vkey := hsmKey(t)
	data := t.TempDir()
	servedLog(t, data)
	cfg := devConfig(data)
	cfg.Log.Signer.PKCS11 = p
	msg := startErr(t, cfg, hsmEnv)
	if !strings.Contains(msg, "is not the log's key") || !strings.Contains(msg, keyName(t, vkey)) {
		t.Errorf("refusal %q does not name the token's key %s", msg, keyName(t, vkey))
	}
}

// TestServePKCS11TokenGone takes the token away while the gateway serves:
// signing fails, naming PKCS#11, no checkpoint is signed with anything
// else and no key file appears; with the token back, signing resumes with
// the same key and the log verifies.
func TestServePKCS11TokenGone(t *testing.T) {
	p, vkey := hsmKey(t)
	data := t.TempDir()
	e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &syncBuffer{}, getenv: hsmEnv}
	cfg := devConfig(data)
	cfg.Log.Signer.PKCS11 = p
	g, stop := runServing(t, e, cfg, true)
	url := "http://" + g.ln.Addr().String()
	waitReady(t, url)
	token := readFile(t, filepath.Join(data, "agent.token"))
	post(t, url, token, `{"action": {"type": "transfer", "amount": 10, "to": "acct-7"}}`)
	before, err := g.cp.Checkpoint()
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
	post(t, url, token, `{"action": {"type": "transfer", "amount": 11, "to": "acct-7"}}`)
	for range 2 {
		_, err := g.cp.Checkpoint()
		if err == nil || !strings.Contains(err.Error(), "pkcs11") {
			t.Fatalf("checkpoint with the token gone: got %v, want a PKCS#11 error", err)
		}
	}
	if got := g.cp.Latest(); !bytes.Equal(got, before) {
		t.Fatalf("a checkpoint was signed with the token gone:\n%s", got)
	}
	if _, err := os.Stat(filepath.Join(data, "log.key")); err == nil {
		t.Fatal("a key file appeared while the token was gone")
	}

	if err := os.Remove(tokens); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tokens+".away", tokens); err != nil {
		t.Fatal(err)
	}
	after, err := g.cp.Checkpoint()
	if err != nil {
		t.Fatalf("checkpoint with the token back: %v", err)
	}
	if _, err := note.Open(after, note.VerifierList(verifierOf(t, vkey))); err != nil {
		t.Fatalf("checkpoint after the token came back: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.VerifyDir(filepath.Join(data, "log"), verifierOf(t, vkey), audit.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
}

// rulelockCLI runs the CLI in-process and fails t unless it exits 0.
func rulelockCLI(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, getenv: noEnv}
	if code := run(context.Background(), e, args); code != 0 {
		t.Fatalf("rulelock %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
	}
	return out.String()
}

// TestServeRotateKey rotates a served log's key with rulelock log
// rotate-key: the gateway then refuses the old key, serves with the new
// one, and the log verifies with the old key and with the new one.
func TestServeRotateKey(t *testing.T) {
	data := t.TempDir()
	servedLog(t, data)
	oldPub := readFile(t, filepath.Join(data, "log.pub"))
	newKeyFile := filepath.Join(t.TempDir(), "new.key")
	newPub := rulelockCLI(t, "keygen", "--name", "test.rulelock/log", "--out", newKeyFile)
	rulelockCLI(t, "log", "rotate-key", data, "--new", strings.TrimSpace(newPub))
	if got := readFile(t, filepath.Join(data, "log.pub")); got != newPub {
		t.Fatalf("log.pub after the rotation %q, want %q", got, newPub)
	}

	msg := startErr(t, devConfig(data), noEnv)
	if !strings.Contains(msg, "rotated the log's key") || !strings.Contains(msg, keyName(t, newPub)) {
		t.Fatalf("the retired key: %q", msg)
	}
	if err := os.Rename(newKeyFile, filepath.Join(data, "log.key")); err != nil {
		t.Fatal(err)
	}
	servedLog(t, data)
	for _, pub := range []string{oldPub, newPub} {
		out := rulelockCLI(t, "verify", filepath.Join(data, "log"), "--key", strings.TrimSpace(pub))
		if !strings.HasPrefix(out, "ok: ") {
			t.Fatalf("verify with %s: %s", keyName(t, pub), out)
		}
	}
}

// TestServeRotateToPKCS11 moves a log from its key file to a key on a
// SoftHSM2 token: after the rotation the gateway signs with the token, and
// the log verifies with the original key.
func TestServeRotateToPKCS11(t *testing.T) {
	p, vkey := hsmKey(t)
	data := t.TempDir()
	servedLog(t, data)
	oldPub := readFile(t, filepath.Join(data, "log.pub"))
	rulelockCLI(t, "log", "rotate-key", data, "--new", vkey)
	e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &syncBuffer{}, getenv: hsmEnv}
	cfg := devConfig(data)
	cfg.Log.Signer.PKCS11 = p
	g, stop := runServing(t, e, cfg, true)
	url := "http://" + g.ln.Addr().String()
	waitReady(t, url)
	post(t, url, readFile(t, filepath.Join(data, "agent.token")), `{"action": {"type": "transfer", "amount": 10, "to": "acct-7"}}`)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := note.Open(g.cp.Latest(), note.VerifierList(verifierOf(t, vkey))); err != nil {
		t.Fatalf("the latest checkpoint is not the token's: %v", err)
	}
	out := rulelockCLI(t, "verify", filepath.Join(data, "log"), "--key", strings.TrimSpace(oldPub))
	if !strings.HasPrefix(out, "ok: ") {
		t.Fatalf("verify with the original key: %s", out)
	}
}

// TestConfigLogSigner reads the log.signer.pkcs11 section and refuses an
// incomplete one.
func TestConfigLogSigner(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ yaml, err string }{
		{"log:\n  signer:\n    pkcs11:\n      module: /m.so\n      token: t\n      label: k\n      pin_env: PIN\n", ""},
		{"log:\n  signer:\n    pkcs11:\n      module: /m.so\n      token: t\n      label: k\n      pin_file: /p\n", ""},
		{"log:\n  signer:\n    pkcs11:\n      module: /m.so\n      token: t\n      pin_env: PIN\n", "module, token and label are required"},
		{"log:\n  signer:\n    pkcs11:\n      module: /m.so\n      token: t\n      label: k\n", "exactly one of pin_file, pin_env"},
		{"log:\n  signer:\n    pkcs11:\n      module: /m.so\n      token: t\n      label: k\n      pin_env: P\n      pin_file: /p\n", "exactly one of pin_file, pin_env"},
		{"log:\n  signer:\n    keyfile: x\n", "field keyfile not found"},
	} {
		path := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(path, []byte("policy: p\n"+c.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := readConfig(path)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%q: %v", c.yaml, err)
		case c.err == "" && (cfg.Log.Signer.PKCS11 == nil || cfg.Log.Signer.PKCS11.Label != "k"):
			t.Errorf("%q: read %+v", c.yaml, cfg.Log)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%q: got %v, want %q", c.yaml, err, c.err)
		}
	}
}

// TestServeRepairsEmptyLogPub: a log.pub emptied by a crash (as rulelock
// 0.1's unsynced write could leave it) is rewritten from the key, which the
// log's latest checkpoint vouches for; a log.pub naming another key is not.
func TestServeRepairsEmptyLogPub(t *testing.T) {
	data := t.TempDir()
	servedLog(t, data)
	pub := readFile(t, filepath.Join(data, "log.pub"))
	if err := os.WriteFile(filepath.Join(data, "log.pub"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	servedLog(t, data)
	if got := readFile(t, filepath.Join(data, "log.pub")); got != pub {
		t.Fatalf("log.pub %q after the restart, want %q", got, pub)
	}
}
