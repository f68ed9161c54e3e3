package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/hsm/hsmtest"
	"github.com/rulelock/rulelock/internal/testenv"
)

// TestServeCheckpointFault runs `rulelock serve` with log.max_unsigned: 2s
// and takes the checkpoints directory away for real. On main the gateway
// kept deciding and executing with no new checkpoint, /readyz said 200 and
// stderr said nothing, and signing never came back. Now stderr reports the
// failure, /readyz turns 503 checkpoint_overdue once entries have waited
// past max_unsigned, actions are refused the same way, and when the
// directory is back signing resumes and so do actions, without a restart.
// The waits are for conditions, with a generous deadline; nothing here
// measures time.
func TestServeCheckpointFault(t *testing.T) {
	data := t.TempDir()
	cfg := devConfig(data)
	cfg.Log.MaxUnsigned.Duration = 2 * time.Second
	signingFault(t, cfg, func() (mend func()) {
		mend, how := testenv.BreakDir(t, filepath.Join(data, "log", "checkpoints"))
		t.Logf("checkpoints directory: %s", how)
		return mend
	})
}

// TestServePKCS11TokenGoneWhileServing: the same with the log's key on a
// real SoftHSM2 token that goes away while the gateway serves (its token
// directory moved away, then back): checkpoints are not signed, never with
// another key; past max_unsigned /readyz and actions say
// checkpoint_overdue; with the token back, signing resumes by itself.
func TestServePKCS11TokenGoneWhileServing(t *testing.T) {
	p, vkey := hsmKey(t)
	data := t.TempDir()
	cfg := devConfig(data)
	cfg.Log.Signer.PKCS11 = p
	cfg.Log.MaxUnsigned.Duration = 2 * time.Second
	signingFault(t, cfg, func() (mend func()) {
		tokens := hsmtest.TokenDir(t)
		if err := os.Rename(tokens, tokens+".away"); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(tokens, 0o700); err != nil {
			t.Fatal(err)
		}
		return func() {
			if err := os.Remove(tokens); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tokens+".away", tokens); err != nil {
				t.Fatal(err)
			}
		}
	})
	if _, err := os.Stat(filepath.Join(data, "log.key")); err == nil {
		t.Fatal("a key file appeared while the token was gone")
	}
	if _, err := audit.VerifyDir(filepath.Join(data, "log"), verifierOf(t, vkey), audit.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
}

// signingFault serves cfg (with a short log.max_unsigned), makes checkpoint
// signing fail with breakIt, and checks the gateway's answer: stderr
// reports the failure, /readyz turns 503 checkpoint_overdue once entries
// have waited past max_unsigned, actions are refused the same way; after
// mend, signing resumes and so do actions, without a restart. The waits
// are for conditions, with a generous deadline; nothing here measures time.
func signingFault(t *testing.T, cfg *serveConfig, breakIt func() (mend func())) {
	t.Helper()
	stderr := &syncBuffer{}
	e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: stderr, getenv: hsmEnv}
	g, stop := runServing(t, e, cfg, true)
	url := "http://" + g.ln.Addr().String()
	waitReady(t, url)
	tok, err := os.ReadFile(filepath.Join(cfg.DataDir, "agent.token"))
	if err != nil {
		t.Fatal(err)
	}
	token := string(tok)
	const transfer = `{"action": {"type": "transfer", "amount": 10, "to": "acct-7"}}`
	post(t, url, token, transfer)

	mend := breakIt()
	post(t, url, token, transfer) // recorded; its checkpoint cannot be made

	readyz := func() (int, map[string]any) {
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("never %s\nstderr:\n%s", what, stderr)
			}
		}
	}
	waitFor("not ready past max_unsigned", func() bool {
		status, body := readyz()
		return status == 503 && body["code"] == "checkpoint_overdue"
	})
	status, out := postJSON(t, url+"/v1/actions", token, transfer)
	if apiErr, _ := out["error"].(map[string]any); status != 503 || apiErr["code"] != "checkpoint_overdue" {
		t.Fatalf("action past max_unsigned: %d %v, want 503 checkpoint_overdue", status, out)
	}
	if !strings.Contains(stderr.String(), "checkpoint signing failed") {
		t.Errorf("stderr does not report the signing failure:\n%s", stderr)
	}

	mend()
	waitFor("ready again after the fault cleared", func() bool { status, _ := readyz(); return status == 200 })
	post(t, url, token, transfer)
	if !strings.Contains(stderr.String(), "checkpoint signing resumed") {
		t.Errorf("stderr does not report that signing resumed:\n%s", stderr)
	}
	if err := stop(); err != nil {
		t.Fatalf("serve: %v\n%s", err, stderr)
	}
}

// TestConfigMaxUnsigned: log.max_unsigned defaults to a minute and must
// leave room for at least two checkpoint intervals.
func TestConfigMaxUnsigned(t *testing.T) {
	cfg := devConfig(t.TempDir())
	if err := cfg.defaults(); err != nil || cfg.Log.MaxUnsigned.Duration != time.Minute {
		t.Fatalf("default max_unsigned: %v, %v; want 1m", cfg.Log.MaxUnsigned, err)
	}
	path := filepath.Join(t.TempDir(), "rulelock.yaml")
	os.WriteFile(path, []byte("policy: p\ncheckpoint_interval: 10s\nlog:\n  max_unsigned: 15s\n"), 0o600)
	c, err := readConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.defaults(); err == nil || !strings.Contains(err.Error(), "log.max_unsigned (15s) must be at least twice checkpoint_interval (10s)") {
		t.Fatalf("max_unsigned under two intervals: %v", err)
	}
}
