package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/bundle"
	"github.com/rulelock/rulelock/policy"
)

// cli runs `rulelock args...` in-process in dir and fails the test on a
// non-zero exit; it returns stdout.
func cli(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, code, stderr := cliCode(t, dir, args...)
	if code != 0 {
		t.Fatalf("rulelock %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
	}
	return out
}

func cliCode(t *testing.T, dir string, args ...string) (string, int, string) {
	t.Helper()
	abs := func(p string) string {
		if filepath.IsAbs(p) || strings.HasPrefix(p, "-") {
			return p
		}
		return filepath.Join(dir, p)
	}
	for i, a := range args {
		if i > 1 && (strings.HasSuffix(a, ".key") || strings.HasSuffix(a, ".vkey") || strings.HasPrefix(a, "b") && !strings.Contains(a, "/") || a == "trust") {
			args[i] = abs(a)
		}
	}
	var stdout, stderr bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }}
	code := run(context.Background(), e, args)
	return stdout.String(), code, stderr.String()
}

// signedBundles builds version 1, 2 and an unsigned 3 of the payments
// policy, signed by two of three keys, and writes the 2-of-3 trust file.
func signedBundles(t *testing.T, dir string) {
	t.Helper()
	var vkeys []string
	for _, name := range []string{"alice", "bob", "carol"} {
		vk := cli(t, dir, "keygen", "--name", name, "--out", filepath.Join(dir, name+".key"))
		os.WriteFile(filepath.Join(dir, name+".vkey"), []byte(vk), 0o644)
		vkeys = append(vkeys, filepath.Join(dir, name+".vkey"))
	}
	trust := cli(t, dir, append([]string{"bundle", "trust", "--threshold", "2"}, vkeys...)...)
	os.WriteFile(filepath.Join(dir, "trust"), []byte(trust), 0o644)
	for _, v := range []string{"1", "2", "3"} {
		out := filepath.Join(dir, "b"+v)
		cli(t, dir, "bundle", "build", "../../examples/payments", "-o", out, "--version", v)
		if v != "3" {
			cli(t, dir, "bundle", "sign", out, "--key", filepath.Join(dir, "alice.key"))
			cli(t, dir, "bundle", "sign", out, "--key", filepath.Join(dir, "carol.key"))
		}
	}
}

func serveBundle(t *testing.T, data, bundleDir, trust string) (*running, error) {
	t.Helper()
	var stderr bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &stderr, getenv: func(string) string { return "" }}
	cfg := &serveConfig{Bundle: bundleDir, Trust: trust, DataDir: data, Listen: "127.0.0.1:0", Origin: "test.rulelock/log",
		Agents: []agentConfig{{ID: "a", TokenSHA256: strings.Repeat("0", 64)}}}
	cfg.CheckpointInterval.Duration = time.Second
	return startGateway(context.Background(), e, cfg, false)
}

// activations lists the log's policy activation entries: digest, signers.
func activations(t *testing.T, dir string) []string {
	t.Helper()
	l, err := audit.Open(filepath.Join(dir, "log"), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var out []string
	for i := int64(0); i < l.Size(); i++ {
		raw, _ := l.ReadEntry(i)
		e, _ := audit.DecodeEntry(raw)
		switch {
		case e.Kind == audit.KindPolicyActivation:
			out = append(out, "activated "+e.BundleDigest+" by "+strings.Join(e.Signers, ","))
		case e.Kind == audit.KindNote && strings.Contains(e.Message, "rejected"):
			out = append(out, "rejected: "+e.Message)
		}
	}
	return out
}

// notReady starts a gateway on bundleDir and checks that no policy is
// active, for the reason want.
func notReady(t *testing.T, data, bundleDir, trust, want string) {
	t.Helper()
	g, err := serveBundle(t, data, bundleDir, trust)
	if err != nil {
		t.Fatalf("%s: the gateway did not start: %v", bundleDir, err)
	}
	defer g.close()
	if a := g.gw.Active(); !a.None {
		t.Fatalf("%s: active %s version %d, want no policy (%s)", bundleDir, a.Digest, a.Version, want)
	}
	if r := g.notReadyReason(); !strings.Contains(r, want) {
		t.Fatalf("%s: not ready because %q, want %q", bundleDir, r, want)
	}
}

func TestServeBundles(t *testing.T) {
	dir := t.TempDir()
	signedBundles(t, dir)
	trust := filepath.Join(dir, "trust")
	data := filepath.Join(dir, "data")

	// An unsigned bundle activates nothing: the gateway is not ready.
	notReady(t, data, filepath.Join(dir, "b3"), trust, "unsigned")

	// Version 2 starts it.
	g, err := serveBundle(t, data, filepath.Join(dir, "b2"), trust)
	if err != nil {
		t.Fatal(err)
	}
	a := g.gw.Active()
	if a.Dev || a.Version != 2 || strings.Join(a.Signers, ",") != "alice,carol" {
		t.Fatalf("active: %+v", a)
	}
	v2 := a.Digest
	// A reload with an older, validly signed version keeps version 2.
	g.cfg.Bundle = filepath.Join(dir, "b1")
	g.reload(context.Background())
	if g.gw.Active().Digest != v2 {
		t.Fatal("an older bundle replaced the active one")
	}
	// An unsigned newer version is rejected too.
	g.cfg.Bundle = filepath.Join(dir, "b3")
	g.reload(context.Background())
	if g.gw.Active().Digest != v2 {
		t.Fatal("an unsigned bundle was activated")
	}
	g.close()

	// After a restart, the older version is still refused: the log remembers.
	notReady(t, data, filepath.Join(dir, "b1"), trust, "not higher than the active version 2")
	// The same bundle restarts fine, and its archive is kept.
	g, err = serveBundle(t, data, filepath.Join(dir, "b2"), trust)
	if err != nil {
		t.Fatalf("restart with the active bundle: %v", err)
	}
	g.close()
	archived := filepath.Join(data, "bundles", strings.TrimPrefix(v2, "sha256:"))
	if _, err := os.Stat(filepath.Join(archived, "MANIFEST")); err != nil {
		t.Fatalf("archive: %v", err)
	}
	// A tampered archive stops everything: nothing activates.
	rules := filepath.Join(archived, "payments.rules")
	os.Chmod(rules, 0o644)
	if err := os.WriteFile(rules, []byte("rule \"x\" {\n  allow: \"everything\"\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b4 := filepath.Join(dir, "b4")
	cli(t, dir, "bundle", "build", "../../examples/payments", "-o", b4, "--version", "4")
	cli(t, dir, "bundle", "sign", b4, "--key", filepath.Join(dir, "alice.key"))
	cli(t, dir, "bundle", "sign", b4, "--key", filepath.Join(dir, "bob.key"))
	notReady(t, data, b4, trust, "missing or altered")

	got := strings.Join(activations(t, data), "\n")
	for _, want := range []string{"activated " + v2 + " by alice,carol", "rejected: bundle rejected: ", "unsigned", "not higher than the active version 2", "missing or altered"} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %q:\n%s", want, got)
		}
	}
}

// TestServeNotReadyUntilValidBundle runs `rulelock serve` as a process on
// an unsigned bundle: it starts, logs the rejection, is healthy but not
// ready, refuses every action with no_policy and executes nothing; a SIGHUP
// after a validly signed bundle replaced it makes it ready, and actions
// work. The log replays clean.
func TestServeNotReadyUntilValidBundle(t *testing.T) {
	dir := t.TempDir()
	signedBundles(t, dir)
	current := filepath.Join(dir, "current")
	if err := os.CopyFS(current, os.DirFS(filepath.Join(dir, "b3"))); err != nil {
		t.Fatal(err)
	}
	var upstreamCalls atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstreamCalls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"ok": true}`))
	}))
	defer up.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	url := "http://" + addr
	const token = "rl_not_ready_test_token"
	sum := sha256.Sum256([]byte(token))
	data := filepath.Join(dir, "data")
	cfg := filepath.Join(dir, "rulelock.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`listen: %s
data_dir: %s
bundle: %s
trust: %s
origin: notready.rulelock.test/log
checkpoint_interval: 50ms
agents:
  - id: agent-1
    roles: [payments]
    token_sha256: %s
executors:
  transfer:
    method: POST
    url: %s/transfers
`, addr, data, current, filepath.Join(dir, "trust"), hex.EncodeToString(sum[:]), up.URL)), 0o644)

	cmd := exec.Command(os.Args[0], "-test.run=^TestServeCrashChild$")
	cmd.Env = append(os.Environ(), serveCrashEnv+"="+cfg, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	var stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-done
	}()

	get := func(path string) (int, map[string]any) {
		req, _ := http.NewRequest("GET", url+path, nil)
		req.Header.Set("Authorization", "Bearer "+token) // /readyz gives the reason to an authenticated caller
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	send := func(path, body string) (int, map[string]any) { return postJSON(t, url+path, token, body) }
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if ok() {
				return
			}
			select {
			case err := <-done:
				t.Fatalf("the gateway exited (%v) before %s:\n%s", err, what, stderr.String())
			default:
			}
		}
		t.Fatalf("timed out waiting for %s:\n%s", what, stderr.String())
	}

	waitFor("/healthz", func() bool { code, _ := get("/healthz"); return code == 200 })
	code, body := get("/readyz")
	if code != 503 || !strings.Contains(fmt.Sprint(body["reason"]), "unsigned") {
		t.Fatalf("/readyz without a valid bundle: %d %v, want 503 naming unsigned", code, body)
	}
	transfer := `{"action": {"type": "transfer", "amount": 500, "to": "acct-1"}}`
	for _, path := range []string{"/v1/actions", "/v1/decide"} {
		code, body := send(path, transfer)
		e, _ := body["error"].(map[string]any)
		if code != 503 || e["code"] != "no_policy" || body["request_id"] == nil {
			t.Errorf("POST %s without a policy: %d %v, want 503 no_policy with the refusal's request_id", path, code, body)
		}
	}
	if n := upstreamCalls.Load(); n != 0 {
		t.Fatalf("the upstream was called %d times without a policy", n)
	}

	// A validly signed bundle, then SIGHUP: ready, and actions work.
	os.RemoveAll(current)
	if err := os.CopyFS(current, os.DirFS(filepath.Join(dir, "b2"))); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor("/readyz after SIGHUP", func() bool { code, _ := get("/readyz"); return code == 200 })
	code, body = send("/v1/actions", transfer)
	if code != 200 || decisionOf(body) != "allow" {
		t.Fatalf("POST /v1/actions after activation: %d %v", code, body)
	}
	if n := upstreamCalls.Load(); n != 1 {
		t.Errorf("upstream calls after activation: %d, want 1", n)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := <-done; err != nil {
		t.Fatalf("gateway exit: %v\n%s", err, stderr.String())
	}
	done <- nil // for the deferred Kill

	got := strings.Join(activations(t, data), "\n")
	for _, want := range []string{"rejected: bundle rejected at start: ", "unsigned", "activated sha256:"} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %q:\n%s", want, got)
		}
	}
	out := cli(t, dir, "verify", filepath.Join(data, "log"), "--key", filepath.Join(data, "log.pub"), "--replay")
	if !strings.Contains(out, "1 decisions replayed, 0 findings") {
		t.Errorf("verify --replay:\n%s", out)
	}
}

// syncBuffer is a bytes.Buffer safe for a child's output and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// signAs signs the bundle in bdir with the keys dir/<name>.key.
func signAs(t *testing.T, dir, bdir string, names ...string) {
	t.Helper()
	b, err := bundle.ReadDir(bdir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		s, err := audit.LoadKeyFile(filepath.Join(dir, name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		path, sig, err := bundle.Sign(b, s)
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Join(bdir, bundle.SignaturesDir), 0o755)
		if err := os.WriteFile(filepath.Join(bdir, path), sig, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestServeRejectsBundles: every way a candidate bundle can be wrong is
// refused on SIGHUP (reload) with its reason logged, and the active bundle
// keeps serving. (Unsigned, older version and a tampered archive: see
// TestServeBundles; no valid bundle at start: TestServeNotReadyUntilValidBundle.)
func TestServeRejectsBundles(t *testing.T) {
	dir := t.TempDir()
	signedBundles(t, dir)
	cli(t, dir, "keygen", "--name", "mallory", "--out", filepath.Join(dir, "mallory.key"))
	payments, err := readPolicySources("../../examples/payments")
	if err != nil {
		t.Fatal(err)
	}
	var files []policy.Source
	for _, s := range payments {
		files = append(files, policy.Source{Name: filepath.Base(s.Name), Data: s.Data})
	}
	version := 10
	build := func() string {
		version++
		out := filepath.Join(dir, fmt.Sprintf("v%d", version))
		cli(t, dir, "bundle", "build", "../../examples/payments", "-o", out, "--version", fmt.Sprint(version))
		return out
	}
	cases := []struct {
		name, want string
		make       func() string
	}{
		{"one signature short of the quorum", "below_threshold", func() string {
			b := build()
			signAs(t, dir, b, "alice")
			return b
		}},
		{"the same key signing twice", "below_threshold", func() string {
			b := build()
			signAs(t, dir, b, "alice")
			sigs, _ := filepath.Glob(filepath.Join(b, bundle.SignaturesDir, "*.sig"))
			data, _ := os.ReadFile(sigs[0])
			os.WriteFile(filepath.Join(b, bundle.SignaturesDir, "alice-again.sig"), data, 0o644)
			return b
		}},
		{"an unknown key", "below_threshold", func() string {
			b := build()
			signAs(t, dir, b, "alice", "mallory")
			return b
		}},
		{"a stripped signature file", "bad_signature", func() string {
			b := build()
			signAs(t, dir, b, "alice", "carol")
			sigs, _ := filepath.Glob(filepath.Join(b, bundle.SignaturesDir, "*.sig"))
			data, _ := os.ReadFile(sigs[0])
			text, _, _ := strings.Cut(string(data), "\n\n")
			os.WriteFile(sigs[0], []byte(text+"\n\n"), 0o644)
			return b
		}},
		{"a file added after signing", "unlisted_file", func() string {
			b := build()
			signAs(t, dir, b, "alice", "carol")
			os.WriteFile(filepath.Join(b, "extra.rules"), []byte("rule \"AllowAll\" {\n  allow\n}\n"), 0o644)
			return b
		}},
		{"an expired bundle", "expired", func() string {
			version++
			b := filepath.Join(dir, fmt.Sprintf("v%d", version))
			now := time.Now().Truncate(time.Second)
			m, err := bundle.NewManifest("payments", uint64(version), now.Add(-2*time.Hour), now.Add(-time.Hour), files)
			if err != nil {
				t.Fatal(err)
			}
			if err := writeBundle(b, m, files); err != nil {
				t.Fatal(err)
			}
			signAs(t, dir, b, "alice", "carol")
			return b
		}},
	}

	data := filepath.Join(dir, "data")
	g, err := serveBundle(t, data, filepath.Join(dir, "b1"), filepath.Join(dir, "trust"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.close()
	v1 := g.gw.Active().Digest
	for _, c := range cases {
		g.cfg.Bundle = c.make()
		g.reload(context.Background())
		if a := g.gw.Active(); a.Digest != v1 {
			t.Errorf("%s: activated %s version %d", c.name, a.Digest, a.Version)
		}
	}
	// A valid newer bundle still activates after all that.
	ok := build()
	signAs(t, dir, ok, "bob", "carol")
	g.cfg.Bundle = ok
	g.reload(context.Background())
	if a := g.gw.Active(); a.Version != uint64(version) {
		t.Errorf("a valid bundle after the rejections: active version %d, want %d", a.Version, version)
	}
	g.close()

	var rejections []string
	for _, line := range activations(t, data) {
		if strings.HasPrefix(line, "rejected: ") {
			rejections = append(rejections, line)
		}
	}
	if len(rejections) != len(cases) {
		t.Fatalf("%d rejections logged, want %d:\n%s", len(rejections), len(cases), strings.Join(rejections, "\n"))
	}
	for i, c := range cases {
		if !strings.Contains(rejections[i], c.want) {
			t.Errorf("%s: logged %q, want %s", c.name, rejections[i], c.want)
		}
	}
}

// TestServeBundleInventsNoAgent starts a gateway on a signed bundle with no
// agents and no approvers configured: it runs, creates no development agent
// token (nor approvers), and says how to add an agent.
func TestServeBundleInventsNoAgent(t *testing.T) {
	dir := t.TempDir()
	signedBundles(t, dir)
	data := filepath.Join(dir, "data")
	var stderr bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &stderr, getenv: func(string) string { return "" }}
	cfg := &serveConfig{Bundle: filepath.Join(dir, "b2"), Trust: filepath.Join(dir, "trust"), DataDir: data,
		Listen: "127.0.0.1:0", Origin: "test.rulelock/log"}
	cfg.CheckpointInterval.Duration = time.Second
	g, err := startGateway(context.Background(), e, cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	defer g.close()
	for _, name := range []string{"agent.token", "approvers"} {
		if _, err := os.Stat(filepath.Join(data, name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s in the data directory: %v, want none beside a bundle", name, err)
		}
	}
	if got, want := stderr.String(), "no agents configured: no agent can act; list agents"; !strings.Contains(got, want) {
		t.Errorf("stderr lacks %q:\n%s", want, got)
	}
	if strings.Contains(stderr.String(), "development agent") {
		t.Errorf("stderr mentions a development agent:\n%s", stderr.String())
	}
}
