package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
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

// TestServeAttestationFailsClosed runs the gateway with a real swtpm that
// goes away, then hangs, mid-run. While the periodic attestation fails
// (TPM unreachable) or is overdue (TPM hanging past attestation.max_gap),
// /readyz says attestation_failed and every action is refused 503
// attestation_failed, logged, with the upstream never called; once an
// attestation succeeds again (retried with backoff) actions go through
// again, without a restart. The log then passes verify --attestation
// with a max-gap equal to the gateway's: the refusals need no attestation.
func TestServeAttestationFailsClosed(t *testing.T) {
	sw := swtpmtest.Start(t)
	dir := t.TempDir()
	signedBundles(t, dir)
	data := filepath.Join(dir, "data")
	tok := "rl_" + strings.Repeat("cd", 24)
	sum := httpapi.HashToken(tok)
	var calls atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"ok": true}`))
	}))
	defer up.Close()
	cfg := &serveConfig{Bundle: filepath.Join(dir, "b1"), Trust: filepath.Join(dir, "trust"), DataDir: data, Listen: "127.0.0.1:0", Origin: "test.rulelock/log",
		Agents:      []agentConfig{{ID: "a", Roles: []string{"payments"}, TokenSHA256: hex.EncodeToString(sum[:])}},
		Executors:   map[string]executorConfig{"transfer": {Method: "POST", URL: up.URL}},
		Attestation: &attestationConfig{Provider: "tpm", Device: sw.Socket}}
	cfg.CheckpointInterval.Duration = 50 * time.Millisecond
	cfg.Attestation.Interval.Duration = 200 * time.Millisecond
	cfg.Attestation.MaxGap.Duration = 2 * time.Second
	stderr := &syncBuffer{}
	e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: stderr, getenv: func(string) string { return "" }}
	g, stop := runServing(t, e, cfg, false)
	url := "http://" + g.ln.Addr().String()
	waitReady(t, url)
	n := 0
	act := func() (int, map[string]any) {
		t.Helper()
		n++
		return postJSON(t, url+"/v1/actions", tok, fmt.Sprintf(`{"action": {"type": "transfer", "amount": %d, "to": "acct-7"}, "session": "s1"}`, 100+n))
	}
	accepted := func(when string) {
		t.Helper()
		c := calls.Load()
		if status, out := act(); status != 200 || decisionOf(out) != "allow" || calls.Load() != c+1 {
			t.Fatalf("%s: %d %v, want allowed and executed", when, status, out)
		}
	}
	readyz := func() (int, string) {
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct{ Code string }
		json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body.Code
	}
	// until waits for /readyz to say code ("" for ready), for at most a
	// minute: a bound on a wait, nothing measured.
	until := func(code string) {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if _, got := readyz(); got == code {
				return
			}
		}
		t.Fatalf("/readyz never said %q\n%s", code, stderr)
	}
	refused := func(when string) {
		t.Helper()
		c := calls.Load()
		for range 3 {
			status, out := act()
			code, _ := out["error"].(map[string]any)["code"].(string)
			if status != 503 || code != "attestation_failed" || out["receipt"] == nil {
				t.Fatalf("%s: %d %v, want a logged 503 attestation_failed", when, status, out)
			}
		}
		if calls.Load() != c {
			t.Fatalf("%s: the upstream was called %d times", when, calls.Load()-c)
		}
	}

	accepted("attested")
	sw.Unplug() // the next periodic quote fails at once
	until("attestation_failed")
	refused("TPM unreachable")
	sw.Plug()
	until("")
	accepted("TPM back")

	sw.Pause() // the next quote hangs (until the socket's deadline)
	until("attestation_failed")
	refused("TPM hanging")
	for deadline := time.Now().Add(time.Minute); !strings.Contains(stderr.String(), "ATTESTATION OVERDUE"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no ATTESTATION OVERDUE line:\n%s", stderr)
		}
	}
	sw.Resume()
	until("")
	accepted("TPM answering again")

	if err := stop(); err != nil {
		t.Fatalf("shutdown: %v\n%s", err, stderr)
	}
	for _, want := range []string{"ATTESTATION FAILED", "ATTESTATION OVERDUE", "attestation succeeded again"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}

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
	pol := fmt.Sprintf("origin test.rulelock/log\ntpm-ak %s\nrelease test %s\nmax-gap 2s\n", pin, engine)
	polFile := filepath.Join(dir, "attestation.policy")
	os.WriteFile(polFile, []byte(pol), 0o644)
	out, code, errOut := cliCode(t, dir, "verify", filepath.Join(data, "log"), "--key", filepath.Join(data, "log.pub"), "--attestation", polFile)
	if code != 0 {
		t.Fatalf("verify --attestation: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "3 decisions") || !strings.Contains(out, "refused before any evaluation (need no attestation): 6 requests") {
		t.Errorf("verify --attestation:\n%s", out)
	}
	t.Logf("verify --attestation:\n%s", out)
}

// TestAttestationConfig: a max_gap no longer than the interval would
// refuse actions before every periodic attestation: refused at start.
func TestAttestationConfig(t *testing.T) {
	for _, tc := range []struct {
		interval, maxGap time.Duration
		ok               bool
	}{
		{0, 0, true},                  // 1h, 2h
		{time.Minute, 0, true},        // 1m, 2m
		{time.Hour, time.Hour, false}, // equal
		{time.Hour, 30 * time.Minute, false},
		{0, 30 * time.Minute, false}, // under the default interval
	} {
		c := &attestationConfig{Provider: "tpm", Device: filepath.Join(t.TempDir(), "no-such-tpm")}
		c.Interval.Duration, c.MaxGap.Duration = tc.interval, tc.maxGap
		err := (&running{cfg: &serveConfig{Attestation: c}}).openAttestation()
		var ee *exitError
		invalid := errors.As(err, &ee) && ee.code == 2 && strings.Contains(err.Error(), "max_gap")
		if invalid == tc.ok {
			t.Errorf("interval %s, max_gap %s: %v", tc.interval, tc.maxGap, err)
		}
	}
}
