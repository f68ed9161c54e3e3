package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/policy"
)

// The secrets of TestSensitiveFieldsNeverWritten.
const (
	secretCard     = "4111111111111111"
	secretPassword = "hunter2-Pa55w0rd!"
	secretAPIKey   = "sk_live_51HxQ2eZvKYlo2C0aIiXyZ"
	secretIBAN     = "DE89370400440532013000"
	secretMCP      = "mcp-S3cret-Pa55phrase"
	secretCard2    = "5500005555555559"
)

const sensitivePolicy = `policy "secrets" {
  default: deny
}

action "pay_card" {
  amount: number
  card_number: string sensitive
}

action "login" {
  user: string
  password: string sensitive
}

action "call_api" {
  endpoint: string
  api_key: string sensitive
}

action "set_iban" {
  counterparty: string
  iban: string sensitive
}

# The configuration marks this MCP tool's password sensitive, not the schema.
action "up.login" {
  user: string
  password: string
}

rule "AllowAll" {
  precondition: action.type in ["pay_card", "login", "call_api", "set_iban", "up.login"]
  allow
}

# A limit over a sensitive value: the ledger keeps the plaintext in memory.
rule "CardDailyLimit" {
  precondition: action.type == "pay_card"
  condition: global.total("pay_card", "amount", {"card_number": action.card_number}, duration("24h")) + action.amount <= 100
  deny: "At most 100 per card in 24 hours"
}

rule "IBANChangesNeedApproval" {
  precondition: action.type == "set_iban"
  condition: false
  require_approval {
    approvers: 1
    groups: ["treasury"]
    message: "A bank account change needs an approver"
  }
}
`

// recorder is an HTTP upstream that keeps what it was sent.
type recorder struct {
	mu     sync.Mutex
	bodies []string
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.bodies = append(r.bodies, string(b))
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(`{"ok":true}`))
}

func (r *recorder) got() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.bodies, "\n")
}

// TestSensitiveFieldsNeverWritten runs the gateway on a real data
// directory and real HTTP with a card number, a password, an API key and an
// IBAN in fields the policy marks sensitive, and a password in an MCP tool
// argument the configuration marks sensitive (called over MCP, and once
// refused for a bad argument). The upstreams receive the values; no byte
// under the data directory and no API response holds any of them, plain,
// hex or base64; verify and verify --replay pass (the replay and a restart
// open the values with the salts: a per-card limit still holds after the
// restart); log reveal returns a value; once the salts are deleted the log
// still verifies, reveal fails clearly, the replay reports what it cannot
// see, and the gateway does not start on state it cannot rebuild.
func TestSensitiveFieldsNeverWritten(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	policyDir := filepath.Join(dir, "policy")
	os.MkdirAll(policyDir, 0o700)
	if err := os.WriteFile(filepath.Join(policyDir, "secrets.rules"), []byte(sensitivePolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	payments := &recorder{}
	exec := httptest.NewServer(payments)
	defer exec.Close()
	up, upCalls := sensitiveMCPUpstream(t)

	cfg := &serveConfig{Policy: policyDir, DataDir: data, Listen: "127.0.0.1:0", Origin: "test.rulelock/log",
		Executors: map[string]executorConfig{"pay_card": {Method: "POST", URL: exec.URL}, "login": {Method: "POST", URL: exec.URL},
			"call_api": {Method: "POST", URL: exec.URL}, "set_iban": {Method: "POST", URL: exec.URL}},
		MCP: mcpConfig{Upstreams: []mcpUpstreamConfig{{Name: "up", URL: up.URL, SensitiveArguments: []string{"password"}, FirstSeen: "expose"}}}}
	cfg.CheckpointInterval.Duration = 50 * time.Millisecond
	start := func() (string, func() error) {
		e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &syncBuffer{}, getenv: func(string) string { return "" }}
		c := *cfg
		g, stop := runServing(t, e, &c, false)
		// Stopped before the upstreams' servers close (they wait for the
		// gateway's connections), also when the test fails.
		stop = sync.OnceValue(stop)
		t.Cleanup(func() { stop() })
		url := "http://" + g.ln.Addr().String()
		waitReady(t, url)
		return url, stop
	}
	url, stop := start()
	token := readTrimmed(t, filepath.Join(data, "agent.token"))
	aliceToken := readTrimmed(t, filepath.Join(data, "approvers", "alice.token"))
	alice, err := note.NewSigner(readTrimmed(t, filepath.Join(data, "approvers", "alice.key")))
	if err != nil {
		t.Fatal(err)
	}

	var responses []string // every API response body
	call := func(method, path, tok, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, url+path, strings.NewReader(body))
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		responses = append(responses, string(b))
		var out map[string]any
		json.Unmarshal(b, &out)
		return resp.StatusCode, out
	}
	submit := func(action string) map[string]any {
		t.Helper()
		status, out := call("POST", "/v1/actions", token, `{"action": `+action+`}`)
		if status != 200 {
			t.Fatalf("POST %s: %d %v", action, status, out)
		}
		return out
	}
	var ids []string
	pay := submit(`{"type": "pay_card", "amount": 60, "card_number": "` + secretCard + `"}`)
	if decisionOf(pay) != "allow" || pay["outcome"].(map[string]any)["status"] != "ok" {
		t.Fatalf("card payment: %v", pay)
	}
	payIndex := int64(pay["receipt"].(map[string]any)["index"].(float64))
	for _, a := range []string{
		`{"type": "login", "user": "alice", "password": "` + secretPassword + `"}`,
		`{"type": "call_api", "endpoint": "/v1/charges", "api_key": "` + secretAPIKey + `"}`,
		// Longer than the log keeps inline: the action goes to a blob.
		`{"type": "call_api", "endpoint": "/v1/` + strings.Repeat("x", 5000) + `", "api_key": "` + secretAPIKey + `"}`,
		`{"type": "pay_card", "amount": "60", "card_number": "` + secretCard + `"}`, // schema_mismatch: denied, logged
	} {
		ids = append(ids, submit(a)["request_id"].(string))
	}
	parked := submit(`{"type": "set_iban", "counterparty": "acme", "iban": "` + secretIBAN + `"}`)
	if decisionOf(parked) != "require_approval" {
		t.Fatalf("IBAN change: %v", parked)
	}
	ids = append(ids, pay["request_id"].(string), parked["request_id"].(string))
	// The hash the decision names is the logged form's: the plaintext
	// action's hash (brute-forceable for a card number) is never shown.
	plain, err := policy.NewAction(map[string]any{"type": "set_iban", "counterparty": "acme", "iban": secretIBAN})
	if err != nil {
		t.Fatal(err)
	}
	plainHashes := []string{hex.EncodeToString(plain.Hash[:])}

	// The approver sees and signs the logged form, and the approval executes.
	status, pending := call("GET", "/v1/approvals", aliceToken, "")
	if status != 200 || !strings.Contains(responses[len(responses)-1], `"$commitment"`) {
		t.Fatalf("approvals: %d %s", status, responses[len(responses)-1])
	}
	stmt := pending["pending"].([]any)[0].(map[string]any)["approve_statement"].(string)
	signed, err := note.Sign(&note.Note{Text: stmt}, alice)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]string{"note": string(signed)})
	if status, out := call("POST", "/v1/requests/"+parked["request_id"].(string)+"/approvals", aliceToken, string(body)); status != 200 {
		t.Fatalf("approve: %d %v", status, out)
	}

	// MCP: a call the configuration marks sensitive, and a refused one.
	mcpText := sensitiveMCPCalls(t, url, token)
	responses = append(responses, mcpText)
	if got := strings.Join(upCalls(), "\n"); !strings.Contains(got, secretMCP) {
		t.Fatalf("the MCP upstream did not receive the password: %s", got)
	}
	for _, s := range []string{secretCard, secretPassword, secretAPIKey, secretIBAN} {
		if !strings.Contains(payments.got(), s) {
			t.Fatalf("the HTTP upstream did not receive %s: %s", s, payments.got())
		}
	}

	// Every request, entry and receipt, once a checkpoint covers them.
	for _, id := range ids {
		call("GET", "/v1/requests/"+id, token, "")
	}
	time.Sleep(200 * time.Millisecond) // a few checkpoint intervals: not an assertion on time
	_, cp := call("GET", "/v1/log/checkpoint", token, "")
	_ = cp
	// Every entry, read as an approver: an agent reads only its own.
	for i := int64(0); ; i++ {
		status, _ := call("GET", fmt.Sprintf("/v1/log/entries/%d", i), aliceToken, "")
		if status != 200 {
			break
		}
		call("GET", fmt.Sprintf("/v1/log/proof/%d", i), aliceToken, "")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// A restart opens the values with the salts: the per-card limit counts
	// the first payment (60 + 60 > 100), not another card's.
	url, stop = start()
	if d := decisionOf(submit(`{"type": "pay_card", "amount": 60, "card_number": "` + secretCard + `"}`)); d != "deny" {
		t.Fatalf("same card after a restart: %s, want deny", d)
	}
	if d := decisionOf(submit(`{"type": "pay_card", "amount": 60, "card_number": "` + secretCard2 + `"}`)); d != "allow" {
		t.Fatalf("another card after a restart: %s, want allow", d)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	secrets := []string{secretCard, secretPassword, secretAPIKey, secretIBAN, secretMCP, secretCard2}
	// The grep sees what it looks for: the upstream's bodies, and the
	// secrets base64-encoded at any offset.
	if leaks([]byte(payments.got()), secrets, nil) == "" {
		t.Fatal("leaks finds nothing in what the upstream received")
	}
	for k := range 3 {
		if enc := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("-", k) + secretIBAN + "--")); leaks([]byte(enc), secrets, nil) == "" {
			t.Fatalf("leaks misses %s", enc)
		}
	}
	if blobs, _ := os.ReadDir(filepath.Join(data, "log", "blobs")); len(blobs) == 0 {
		t.Fatal("no blob: the long action was stored inline")
	}
	if st, err := os.Stat(filepath.Join(data, "log", "salts.jsonl")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("salts file: %v, %v; want mode 0600", st, err)
	}
	files := 0
	filepath.WalkDir(data, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		files++
		if found := leaks(b, secrets, plainHashes); found != "" {
			t.Errorf("%s holds %s", path, found)
		}
		return nil
	})
	for _, r := range responses {
		if found := leaks([]byte(r), secrets, plainHashes); found != "" {
			t.Errorf("an API response holds %s: %s", found, r)
		}
	}
	t.Logf("%d files, %d API responses: no secret", files, len(responses))

	logDir := filepath.Join(data, "log")
	verify := func(replay bool) (string, int) {
		args := []string{"verify", logDir, "--key", filepath.Join(data, "log.pub")}
		if replay {
			args = append(args, "--replay")
		}
		out, code, stderr := cliCode(t, dir, args...)
		return out + stderr, code
	}
	// The replay opens the values with the salts and gets every recorded
	// decision. (A development-mode policy may itself be a finding: the
	// only one allowed here.)
	out, code, stderr := cliCode(t, dir, "verify", logDir, "--key", filepath.Join(data, "log.pub"), "--replay", "--json")
	var doc struct {
		Replay struct {
			Decisions int `json:"decisions_replayed"`
			Findings  []struct {
				Class, Detail string
			} `json:"findings"`
		} `json:"replay"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || code > 1 || doc.Replay.Decisions < 10 {
		t.Fatalf("verify --replay --json: exit %d, %v, %+v\n%s%s", code, err, doc, out, stderr)
	}
	for _, f := range doc.Replay.Findings {
		if f.Class != "development_policy" {
			t.Errorf("verify --replay with the salts: finding %s: %s", f.Class, f.Detail)
		}
	}
	out, code, stderr = cliCode(t, dir, "log", "reveal", "--data", data, fmt.Sprint(payIndex), "action.card_number")
	if code != 0 || out != `"`+secretCard+`"`+"\n" {
		t.Fatalf("log reveal: exit %d: %q %s", code, out, stderr)
	}

	// Crypto-shredding: delete the salts.
	if err := os.Remove(filepath.Join(logDir, "salts.jsonl")); err != nil {
		t.Fatal(err)
	}
	if out, code := verify(false); code != 0 {
		t.Fatalf("verify after shredding: exit %d\n%s", code, out)
	}
	out, code, stderr = cliCode(t, dir, "log", "reveal", "--data", data, fmt.Sprint(payIndex), "action.card_number")
	if code == 0 || !strings.Contains(stderr, "salt is gone") || strings.Contains(out+stderr, secretCard) {
		t.Fatalf("log reveal after shredding: exit %d: %q %s", code, out, stderr)
	}
	if out, _ := verify(true); !strings.Contains(out, "sensitive_shredded") || strings.Contains(out, "replay_mismatch") {
		t.Fatalf("verify --replay after shredding: want sensitive_shredded findings, no replay_mismatch:\n%s", out)
	}
	e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &syncBuffer{}, getenv: func(string) string { return "" }}
	c := *cfg
	if g, err := startGateway(context.Background(), e, &c, false); err == nil || !strings.Contains(err.Error(), "salts") {
		if g != nil {
			g.close()
		}
		t.Fatalf("start after shredding inside the retention window: %v, want a refusal naming the salts", err)
	}
}

// leaks says which secret b holds, plain, hex or base64 encoded, or which
// plaintext action hash; "" for none.
func leaks(b []byte, secrets, hashes []string) string {
	lower := bytes.ToLower(b)
	for _, s := range secrets {
		forms := []string{s, hex.EncodeToString([]byte(s))}
		for k := range 3 {
			// Base64 of s at each alignment inside a longer text: the
			// groups that hold only bytes of s.
			pad := strings.Repeat("\x00", k)
			for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
				full := enc.EncodeToString([]byte(pad + s))
				forms = append(forms, full[4:len(full)-4])
			}
		}
		for _, f := range forms {
			if bytes.Contains(b, []byte(f)) || bytes.Contains(lower, []byte(strings.ToLower(f))) && f == hex.EncodeToString([]byte(s)) {
				return fmt.Sprintf("secret %q (as %q)", s, f)
			}
		}
	}
	for _, h := range hashes {
		if bytes.Contains(lower, []byte(h)) {
			return "the plaintext action hash " + h
		}
	}
	return ""
}

func readTrimmed(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// sensitiveMCPUpstream is a streamable HTTP MCP server with a login tool;
// calls returns the arguments it was called with.
func sensitiveMCPUpstream(t *testing.T) (*httptest.Server, func() []string) {
	var mu sync.Mutex
	var calls []string
	srv := mcp.NewServer(&mcp.Implementation{Name: "up", Version: "1"}, nil)
	srv.AddTool(&mcp.Tool{Name: "login", Description: "Logs in.",
		InputSchema: json.RawMessage(`{"type":"object","properties":{"user":{"type":"string"},"password":{"type":"string"}},"required":["user","password"]}`)},
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			mu.Lock()
			calls = append(calls, string(req.Params.Arguments))
			mu.Unlock()
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "logged in"}}}, nil
		})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil)
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), calls...)
	}
}

// sensitiveMCPCalls calls up.login over the gateway's MCP endpoint, once
// allowed and once refused for an argument the tool does not declare, and
// returns what the agent was answered.
func sensitiveMCPCalls(t *testing.T, url, token string) string {
	t.Helper()
	c := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil)
	cs, err := c.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: url + "/mcp",
		HTTPClient: &http.Client{Transport: bearerTransport(token)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	var answers []string
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "up_login", Arguments: map[string]any{"user": "alice", "password": secretMCP}})
	if err != nil || res.IsError {
		t.Fatalf("up_login: %v %+v", err, res)
	}
	b, _ := json.Marshal(res)
	answers = append(answers, string(b))
	res, err = cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "up_login", Arguments: map[string]any{"user": "alice", "password": secretMCP, "otp": "1"}})
	if err == nil {
		t.Fatalf("up.login with an undeclared argument: %+v, want a refusal", res)
	}
	answers = append(answers, err.Error())
	return strings.Join(answers, "\n")
}

type bearerTransport string

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+string(b))
	return http.DefaultTransport.RoundTrip(r)
}
