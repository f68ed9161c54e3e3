package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rulelock/rulelock/internal/attest"
	"github.com/rulelock/rulelock/internal/attest/swtpmtest"
	"github.com/rulelock/rulelock/internal/httpapi"
)

// TestServeAttested runs the gateway with a TPM (a real swtpm): start,
// decisions, a bundle activation, decisions, a reboot and restart,
// decisions; `rulelock verify --attestation` then prints the log's segments
// and passes, and fails once one checkpoint loses the attested key's
// signature.
func TestServeAttested(t *testing.T) {
	sw := swtpmtest.Start(t)
	dir := t.TempDir()
	signedBundles(t, dir)
	data := filepath.Join(dir, "data")
	tok := "rl_" + strings.Repeat("ab", 24)
	sum := httpapi.HashToken(tok)
	run := func(bundleDir string, then func(g *running, url string)) {
		t.Helper()
		cfg := &serveConfig{Bundle: bundleDir, Trust: filepath.Join(dir, "trust"), DataDir: data, Listen: "127.0.0.1:0", Origin: "test.rulelock/log",
			Agents:      []agentConfig{{ID: "a", Roles: []string{"payments"}, TokenSHA256: hex.EncodeToString(sum[:])}},
			Attestation: &attestationConfig{Provider: "tpm", Device: sw.Socket}}
		cfg.CheckpointInterval.Duration = 50 * time.Millisecond
		e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &syncBuffer{}, getenv: func(string) string { return "" }}
		g, stop := runServing(t, e, cfg, false)
		url := "http://" + g.ln.Addr().String()
		waitReady(t, url)
		then(g, url)
		if err := stop(); err != nil {
			t.Fatalf("shutdown: %v\n%s", err, e.stderr)
		}
	}
	decide := func(url string, n int) {
		t.Helper()
		for k := range n {
			body := fmt.Sprintf(`{"action": {"type": "transfer", "amount": %d, "to": "acct-7"}, "session": "s1"}`, 100+k)
			if status, out := postJSON(t, url+"/v1/actions", tok, body); status != 200 || decisionOf(out) == "" {
				t.Fatalf("POST %s: %d %v", body, status, out)
			}
		}
	}
	run(filepath.Join(dir, "b1"), func(g *running, url string) {
		decide(url, 3)
		g.cfg.Bundle = filepath.Join(dir, "b2")
		g.reload(context.Background())
		if v := g.gw.Active().Version; v != 2 {
			t.Fatalf("active version %d after the reload, want 2", v)
		}
		decide(url, 2)
	})
	sw.Reboot()
	run(filepath.Join(dir, "b2"), func(g *running, url string) { decide(url, 2) })

	tp, err := attest.OpenTPM(attest.TPMOptions{Device: sw.Socket})
	if err != nil {
		t.Fatal(err)
	}
	pin, err := tp.AttestationKey()
	tp.Close()
	if err != nil {
		t.Fatal(err)
	}
	engine, err := attest.EngineDigest()
	if err != nil {
		t.Fatal(err)
	}
	pol := fmt.Sprintf("origin test.rulelock/log\ntpm-ak %s\nrelease test %s\nthreshold 2\nmax-gap 1h\n", pin, engine)
	for _, n := range []string{"alice", "bob", "carol"} {
		vk, err := os.ReadFile(filepath.Join(dir, n+".vkey"))
		if err != nil {
			t.Fatal(err)
		}
		pol += "signer " + strings.TrimSpace(string(vk)) + "\n"
	}
	polFile := filepath.Join(dir, "attestation.policy")
	os.WriteFile(polFile, []byte(pol), 0o644)
	logDir := filepath.Join(data, "log")
	verify := func() (string, int, string) {
		return cliCode(t, dir, "verify", logDir, "--key", filepath.Join(data, "log.pub"), "--attestation", polFile)
	}
	out, code, stderr := verify()
	if code != 0 {
		t.Fatalf("verify --attestation: exit %d\n%s%s", code, out, stderr)
	}
	t.Logf("verify --attestation:\n%s", out)
	// Two boots; each with a segment before its first activation and one
	// per bundle: none, b1, b2 | none, b2.
	if n := strings.Count(out, "segment entries"); n != 5 || !strings.Contains(out, "7 decisions") {
		t.Errorf("want 5 segments and 7 decisions:\n%s", out)
	}

	// Strip the attested key's signature from a checkpoint covering
	// decisions: the log still verifies with its own key; the attestation
	// check fails.
	cps, _ := filepath.Glob(filepath.Join(logDir, "checkpoints", "0*"))
	stripped := false
	for _, f := range cps {
		b, _ := os.ReadFile(f)
		var kept []string
		for _, l := range strings.Split(string(b), "\n") {
			if !strings.HasPrefix(l, "— test.rulelock/log/boot ") {
				kept = append(kept, l)
			}
		}
		nb := strings.Join(kept, "\n")
		if nb == string(b) {
			continue
		}
		os.WriteFile(f, []byte(nb), 0o644)
		if _, code, _ := cliCode(t, dir, "verify", logDir, "--key", filepath.Join(data, "log.pub")); code != 0 {
			t.Fatalf("the log without a per-boot signature no longer verifies with its own key")
		}
		if out, code, stderr := verify(); code == 0 {
			os.WriteFile(f, b, 0o644) // this checkpoint covered no decision: try the next
			continue
		} else {
			t.Logf("after stripping %s: %s%s", filepath.Base(f), out, stderr)
		}
		stripped = true
		break
	}
	if !stripped {
		t.Fatal("no checkpoint's per-boot signature mattered")
	}
}
