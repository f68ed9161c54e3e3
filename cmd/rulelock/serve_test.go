package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/mcpproxy"
)

// testServe starts the gateway as `rulelock serve --policy examples/payments
// --demo-upstream` would, on a free loopback port, and returns its URL, the
// dev agent's token and a stop function that shuts it down gracefully.
func testServe(t *testing.T, data string, configure ...func(*serveConfig)) (url, token string, stop func() error) {
	t.Helper()
	e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &syncBuffer{}, getenv: func(string) string { return "" }}
	cfg := devConfig(data)
	for _, f := range configure {
		f(cfg)
	}
	g, stop := runServing(t, e, cfg, true)
	tok, err := os.ReadFile(filepath.Join(data, "agent.token"))
	if err != nil {
		t.Fatal(err)
	}
	url = "http://" + g.ln.Addr().String()
	waitReady(t, url)
	return url, string(tok), stop
}

// devConfig is the development gateway's configuration in the tests: the
// payments example, data in data, a free loopback port.
func devConfig(data string) *serveConfig {
	cfg := &serveConfig{Policy: "../../examples/payments", DataDir: data, Listen: "127.0.0.1:0", Origin: "test.rulelock/log"}
	cfg.CheckpointInterval.Duration = 50 * time.Millisecond
	return cfg
}

// runServing starts the gateway cfg describes and serves it in the
// background; stop shuts it down gracefully and returns serve's error.
func runServing(t *testing.T, e *env, cfg *serveConfig, demo bool) (g *running, stop func() error) {
	t.Helper()
	g, err := startGateway(context.Background(), e, cfg, demo)
	if err != nil {
		t.Fatalf("start: %v\n%s", err, e.stderr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.serve(ctx) }()
	return g, func() error { cancel(); return <-done }
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	for i := 0; i < 200; i++ {
		resp, err := http.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("gateway never became ready")
}

// post submits body to /v1/actions as token and returns the reply, which
// must be 200.
func post(t *testing.T, url, token, body string) map[string]any {
	t.Helper()
	status, out := postJSON(t, url+"/v1/actions", token, body)
	if status != 200 {
		t.Fatalf("POST %s: %d %v", body, status, out)
	}
	return out
}

// postJSON posts body as JSON to url as token and returns the status and
// the decoded reply.
func postJSON(t *testing.T, url, token, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func decisionOf(m map[string]any) string {
	d, _ := m["decision"].(map[string]any)
	s, _ := d["decision"].(string)
	return s
}

// TestServe runs the gateway on embedded defaults, sends allowed, denied and
// parked actions, shuts it down, verifies the log, restarts it on the same
// data directory and checks that limits survived.
func TestServe(t *testing.T) {
	data := t.TempDir()
	url, token, stop := testServe(t, data)
	allowed := post(t, url, token, `{"action": {"type": "transfer", "amount": 9000, "to": "acct-7"}, "session": "s1"}`)
	if decisionOf(allowed) != "allow" || allowed["outcome"].(map[string]any)["status"] != "ok" {
		t.Fatalf("allowed transfer: %v", allowed)
	}
	if d := decisionOf(post(t, url, token, `{"action": {"type": "Transfer", "amount": 5, "to": "acct-7"}}`)); d != "deny" {
		t.Fatalf("look-alike type: %s", d)
	}
	if d := decisionOf(post(t, url, token, `{"action": {"type": "trade", "amount": 750000, "counterparty": "acme"}}`)); d != "require_approval" {
		t.Fatalf("large trade: %s", d)
	}
	if err := stop(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	pub, err := os.ReadFile(filepath.Join(data, "log.pub"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := audit.ParseVerifierKey(string(pub))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := audit.VerifyDir(filepath.Join(data, "log"), v, audit.VerifyOptions{})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if rep == nil {
		t.Fatal("no report")
	}

	// Restart on the same data: the key and token are reused and the 24h
	// payee limit still counts the first transfer.
	url, token2, stop := testServe(t, data)
	if token2 != token {
		t.Fatal("the development token changed across restarts")
	}
	second := post(t, url, token, `{"action": {"type": "transfer", "amount": 9000, "to": "acct-7"}, "session": "s2"}`)
	if decisionOf(second) != "allow" {
		t.Fatalf("second transfer (18000 of 50000): %v", second)
	}
	for i := 0; i < 4; i++ {
		post(t, url, token, `{"action": {"type": "transfer", "amount": 9000, "to": "acct-7"}}`)
	}
	if d := decisionOf(post(t, url, token, `{"action": {"type": "transfer", "amount": 9000, "to": "acct-7"}}`)); d != "deny" {
		t.Fatalf("over the payee limit after a restart: got %s, want deny", d)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestExampleConfig keeps the annotated example configuration valid.
func TestExampleConfig(t *testing.T) {
	c, err := readConfig("../../examples/rulelock.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.registry(); err != nil {
		t.Fatalf("approvers: %v", err)
	}
	// One agent's token and the two approvers'.
	if len(c.tokens()) != 3 || len(c.Executors) != 2 {
		t.Fatalf("tokens %d, executors %d", len(c.tokens()), len(c.Executors))
	}
	if a, ok := c.principals()("agent-42"); !ok || a.Principal != "treasury-ops" {
		t.Errorf("agent-42: %+v %v, want principal treasury-ops", a, ok)
	}
	// Its credentials come from the environment and a file: missing, the
	// gateway refuses to start rather than call upstream unauthenticated.
	if _, err := c.executors(func(string) string { return "" }); err == nil {
		t.Fatal("executors built without their credentials")
	}
}

// TestReplay records traffic under the payments policy, then asks what a
// stricter candidate would have done to it.
func TestReplay(t *testing.T) {
	data := t.TempDir()
	url, token, stop := testServe(t, data)
	for _, body := range []string{
		`{"action": {"type": "transfer", "amount": 500, "to": "acct-1"}}`,
		`{"action": {"type": "transfer", "amount": 5000, "to": "acct-1"}}`,
		`{"action": {"type": "transfer", "amount": 20000, "to": "acct-2"}}`,
		`{"action": {"type": "verify_counterparty", "counterparty": "acme"}}`,
	} {
		post(t, url, token, body)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	cand := filepath.Join(t.TempDir(), "strict.rules")
	os.WriteFile(cand, []byte(`policy "strict" {
  default: deny
}
rule "SmallTransfersOnly" {
  precondition: action.type == "transfer"
  condition: action.amount <= 1000
  allow
}
rule "Verify" {
  precondition: action.type == "verify_counterparty"
  allow
}
`), 0o644)
	out := cli(t, data, "replay", "--log", filepath.Join(data, "log"), "--policy", cand)
	for _, want := range []string{
		"replayed 4 decisions",
		"2 unchanged, 2 would change",
		"allow -> deny                    1",
		"require_approval -> deny         1",
		"NoHighValueTransfers             1 -> 0  *",
		"SmallTransfersOnly               0 -> 1  *",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("replay output lacks %q:\n%s", want, out)
		}
	}
	// The unchanged policy replays to the recorded decisions.
	same := cli(t, data, "replay", "--log", filepath.Join(data, "log"), "--policy", "../../examples/payments")
	if !strings.Contains(same, "4 unchanged, 0 would change") {
		t.Errorf("replaying the recorded policy changed decisions:\n%s", same)
	}
}

// TestVerifyReplay records real traffic, replays it clean, then forges
// entries of each class the replay must catch.
func TestVerifyReplay(t *testing.T) {
	data := t.TempDir()
	url, token, stop := testServe(t, data)
	post(t, url, token, `{"action": {"type": "transfer", "amount": 500, "to": "acct-1"}}`)
	post(t, url, token, `{"action": {"type": "update_counterparty_bank_details", "counterparty": "acme", "iban": "X"}}`)
	parked := post(t, url, token, `{"action": {"type": "trade", "amount": 750000, "counterparty": "acme"}}`)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	logDir := filepath.Join(data, "log")
	// A development gateway's log: --allow-development accepts its
	// development-mode activation (TestVerifyReplayDevelopmentPolicy).
	verify := func() string {
		out, code, stderr := cliCode(t, data, "verify", logDir, "--key", filepath.Join(data, "log.pub"), "--replay", "--allow-development")
		if code > 1 {
			t.Fatalf("verify: exit %d: %s", code, stderr)
		}
		return out
	}
	// verifyJSON is verify --replay --json: one document whose "replay"
	// holds the replay's summary, and its exit code.
	verifyJSON := func() (map[string]any, int) {
		out, code, stderr := cliCode(t, data, "verify", logDir, "--key", filepath.Join(data, "log.pub"), "--replay", "--allow-development", "--json")
		var doc map[string]any
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("verify --json: %v: %s %s", err, out, stderr)
		}
		return doc, code
	}
	if out := verify(); !strings.Contains(out, "3 decisions replayed, 0 findings") {
		t.Fatalf("clean log:\n%s", out)
	}
	if doc, code := verifyJSON(); code != 0 || doc["ok"] != true || doc["replay"].(map[string]any)["decisions_replayed"] != 3.0 {
		t.Fatalf("clean log, --json: exit %d, %v", code, doc)
	}

	// Forge entries the way an insider with write access to the log would
	// (the Merkle tree stays valid: they are simply appended).
	l, err := audit.Open(logDir, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var decision *audit.Entry
	var decisionAt int64
	for i := int64(0); i < l.Size(); i++ {
		raw, _ := l.ReadEntry(i)
		e, _ := audit.DecodeEntry(raw)
		if e.Kind == audit.KindDecision && e.Decision == "allow" {
			decision, decisionAt = e, i
		}
	}
	now := time.Now().UTC()
	forged := *decision
	forged.RequestID, forged.Time = "rforged1", now
	forged.Action = audit.Text(`{"amount":20000,"to":"acct-9","type":"transfer"}`)
	forged.ActionSHA256 = audit.Digest{}
	forged.Rules = []audit.Rule{{Name: "AllowTransfers", Outcome: "allow"}} // the policy would also ask for approval
	r1, _ := l.Append(context.Background(), &forged)
	l.Append(context.Background(), &audit.Entry{Kind: audit.KindOutcome, Time: now, Agent: decision.Agent, RequestID: "rother", Closes: decisionAt, Status: "ok"})
	approved := forged
	approved.RequestID = parked["request_id"].(string)
	approved.Decision = "approved"
	approved.Action = audit.Text(`{"amount":750000,"counterparty":"acme","type":"trade"}`)
	approved.Rules = nil
	l.Append(context.Background(), &approved)
	l.Close()

	out := verify()
	for _, want := range []string{
		fmt.Sprintf("FAIL replay_mismatch at entry %d", r1.Index),
		"FAIL unmediated_outcome",
		"FAIL approval_quorum_invalid",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("verify --replay lacks %q:\n%s", want, out)
		}
	}
	if doc, code := verifyJSON(); code != 1 || doc["ok"] != false || len(doc["replay"].(map[string]any)["findings"].([]any)) < 3 {
		t.Errorf("forged log, --json: exit %d, %v; want exit 1, ok false and the findings", code, doc)
	}

	// The archived policy, altered: every decision's policy is now suspect.
	archives, _ := filepath.Glob(filepath.Join(data, "bundles", "*", "payments.rules"))
	if len(archives) != 1 {
		t.Fatalf("archives: %v", archives)
	}
	os.Chmod(archives[0], 0o644) // archived files are read-only
	if err := os.WriteFile(archives[0], []byte("rule \"x\" {\n  precondition: true\n  allow\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := verify(); !strings.Contains(out, "FAIL bundle_hash_mismatch") {
		t.Errorf("altered archive:\n%s", out)
	}
	os.RemoveAll(filepath.Dir(archives[0]))
	if out := verify(); !strings.Contains(out, "FAIL bundle_missing") {
		t.Errorf("missing archive:\n%s", out)
	}
}

// TestExampleMCPConfig keeps the MCP example configuration valid.
func TestExampleMCPConfig(t *testing.T) {
	c, err := readConfig("../../examples/mcp.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ups, err := c.MCP.upstreams(func(k string) string { return map[string]string{"PATH": "/usr/bin"}[k] })
	if err != nil {
		t.Fatal(err)
	}
	if len(ups) != 1 || ups[0].Name != "fs" || len(ups[0].PathArguments) != 4 || len(ups[0].Roots) != 1 || ups[0].PathMode != mcpproxy.PathStrict {
		t.Fatalf("upstreams: %+v", ups)
	}
	if got := strings.Join(ups[0].Env, " "); got != "HOME=/tmp/rulelock-sandbox-home PATH=/usr/bin" {
		t.Errorf("the upstream's environment is %q: only what the config gives, and PATH", got)
	}
	if _, err := loadPolicy(c.Policy); err != nil {
		t.Fatalf("policy %s: %v", c.Policy, err)
	}
	// A pending call must answer before the MCP SDKs' 60s request timeout.
	if w := c.MCP.ApprovalWait.Duration; w <= 0 || w >= 60*time.Second {
		t.Errorf("approval_wait %v: keep it below the clients' 60s timeout", w)
	}
}

// TestMCPConfigRefused: an invalid mcp section stops rulelock before it starts.
func TestMCPConfigRefused(t *testing.T) {
	for name, section := range map[string]string{
		"no transport":     "    - name: fs\n",
		"both transports":  "    - name: fs\n      command: x\n      url: http://127.0.0.1:1/mcp\n",
		"reserved name":    "    - name: rulelock\n      command: x\n",
		"invalid name":     "    - name: File.System\n      command: x\n",
		"duplicate header": "    - name: fs\n      url: http://127.0.0.1:1/mcp\n      headers:\n        Authorization:\n          value: a\n          env: B\n",
		"relative root":    "    - name: fs\n      command: x\n      roots: [sandbox]\n",
		"unknown key":      "    - name: fs\n      command: x\n      forward_agent_token: true\n",
		"first_seen":       "    - name: fs\n      command: x\n      first_seen: trust\n",
	} {
		path := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(path, []byte("mcp:\n  upstreams:\n"+section), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := readConfig(path); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestExamplePolicies: every example policy checks and passes its own tests.
func TestExamplePolicies(t *testing.T) {
	dirs, err := filepath.Glob("../../examples/*/*.rules")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no example policies: %v", err)
	}
	seen := map[string]bool{}
	for _, f := range dirs {
		dir := filepath.Dir(f)
		if seen[dir] {
			continue
		}
		seen[dir] = true
		if code, out, errOut := rulelock(t, "check", dir); code != 0 {
			t.Errorf("check %s: %d\n%s%s", dir, code, out, errOut)
		}
		if tests, _ := filepath.Glob(filepath.Join(dir, "*_test.yaml")); len(tests) > 0 {
			if code, out, errOut := rulelock(t, "test", dir); code != 0 {
				t.Errorf("test %s: %d\n%s%s", dir, code, out, errOut)
			}
		}
	}
}

// TestServeRefusesShortRetention: a retention shorter than the longest
// window the policy reads would forget actions a limit counts: serve
// refuses to start, and says which window.
func TestServeRefusesShortRetention(t *testing.T) {
	var stderr bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &stderr, getenv: func(string) string { return "" }}
	cfg := devConfig(filepath.Join(t.TempDir(), "data"))
	cfg.Limits.Retention.Duration = 2 * time.Second
	g, err := startGateway(context.Background(), e, cfg, false)
	if err == nil {
		g.ln.Close()
		t.Fatal("the gateway started with a 2s retention under a 24h limit")
	}
	if !strings.Contains(err.Error(), "window of 24h0m0s, longer than the retention of 2s") {
		t.Errorf("got %v, want the window and the retention named", err)
	}
}

// TestConfigRefusesMaxHistory: the count cap is gone; a config that still
// sets it is refused with a pointer to what bounds memory now.
func TestConfigRefusesMaxHistory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rulelock.yaml")
	if err := os.WriteFile(path, []byte("limits:\n  max_history: 1000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readConfig(path); err == nil || !strings.Contains(err.Error(), "limits.memory_budget") {
		t.Errorf("got %v, want a refusal naming limits.memory_budget", err)
	}
}
