package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
)

// TestMCPEndToEnd puts rulelock between the official TypeScript MCP client
// and the reference filesystem server (both from npm, pinned in
// testdata/mcp/package-lock.json), over stdio and over streamable HTTP.
func TestMCPEndToEnd(t *testing.T) {
	parts := needMCPParts(t)
	repo, node, fsServer, bin := parts.repo, parts.node, parts.fsServer, parts.bin
	for _, mode := range []string{"stdio", "http"} {
		t.Run(mode, func(t *testing.T) {
			e := newMCPWorld(t, repo, node, fsServer, bin)
			e.run(t, mode)
		})
	}
}

type mcpWorld struct {
	repo, node, bin          string
	root, sandbox, dir, data string
	config, addr             string
	agentToken               string
	approverTokens, keyFiles map[string]string
}

const helloText = "hello from the sandbox\n"

func newMCPWorld(t *testing.T, repo, node, fsServer, bin string) *mcpWorld {
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w := &mcpWorld{repo: repo, node: node, bin: bin, root: root, sandbox: filepath.Join(root, "sandbox"),
		dir: t.TempDir(), agentToken: "agent-e2e-token",
		approverTokens: map[string]string{}, keyFiles: map[string]string{}}
	w.data = filepath.Join(w.dir, "data")
	files := map[string]string{
		"sandbox/hello.txt":    helloText,
		"sandbox/secret.txt":   "the launch codes\n",
		"outside.txt":          "outside the sandbox\n",
		"sandbox_evil/x.txt":   "a sibling with the sandbox's prefix\n",
		"sandbox/docs/a.txt":   "a\n",
		"policy/fs.yaml":       fmt.Sprintf("sandbox: %q\n", filepath.Join(root, "sandbox")),
		"policy/filesys.rules": "",
	}
	rules, err := os.ReadFile(filepath.Join(repo, "examples", "mcp-filesystem", "filesystem.rules"))
	if err != nil {
		t.Fatal(err)
	}
	files["policy/filesys.rules"] = string(rules)
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(root, "outside.txt"), filepath.Join(w.sandbox, "link.txt")); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w.addr = ln.Addr().String()
	ln.Close()

	var approvers strings.Builder
	for _, who := range []string{"alice", "bob"} {
		skey, vkey, err := note.GenerateKey(nil, who)
		if err != nil {
			t.Fatal(err)
		}
		w.keyFiles[who] = filepath.Join(w.dir, who+".key")
		if err := os.WriteFile(w.keyFiles[who], []byte(skey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		w.approverTokens[who] = who + "-approver-token"
		fmt.Fprintf(&approvers, "  - id: %s\n    groups: [ops]\n    key: %q\n    token_sha256: %s\n", who, vkey, sha(w.approverTokens[who]))
	}
	cfg := fmt.Sprintf(`listen: %q
data_dir: %q
policy: %q
agents:
  - id: agent-1
    roles: [files]
    token_sha256: %s
approvers:
%smcp:
  approval_wait: 90s
  name_separator: "." # the action types' own names (mcp_clients_test.go runs the default "_")
  upstreams:
    - name: fs
      command: %q
      args: [%q, %q]
      path_arguments: [path, paths, source, destination]
      roots: [%q]
      first_seen: expose # trust on first use: pins are TestMCPPoisonedDefinitions' subject
`, w.addr, w.data, filepath.Join(root, "policy"), sha(w.agentToken), approvers.String(), node, fsServer, w.sandbox, w.sandbox)
	w.config = filepath.Join(w.dir, "rulelock.yaml")
	if err := os.WriteFile(w.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return w
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

type stepResult struct {
	Step       string         `json:"step"`
	Tools      []string       `json:"tools"`
	IsError    bool           `json:"isError"`
	Text       string         `json:"text"`
	Structured map[string]any `json:"structured"`
	Meta       map[string]any `json:"meta"`
	Count      int            `json:"count"`
	Error      *struct {
		Code    *int   `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (w *mcpWorld) run(t *testing.T, mode string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var gwOut bytes.Buffer
	var serve *exec.Cmd
	agentArgs := []string{filepath.Join(w.repo, "testdata", "mcp", "agent.mjs")}
	if mode == "http" {
		serve = exec.CommandContext(ctx, w.bin, "serve", "--config", w.config)
		serve.Stdout, serve.Stderr = &gwOut, &gwOut
		if err := serve.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			serve.Process.Signal(syscall.SIGTERM)
			serve.Wait()
		}()
		w.waitReady(t, &gwOut)
		agentArgs = append(agentArgs, "http", "http://"+w.addr+"/mcp", w.agentToken)
	} else {
		agentArgs = append(agentArgs, "stdio", w.bin, "mcp", "--config", w.config, "--agent", "agent-1")
	}

	// The approvers approve the move while the agent waits for it.
	var wg sync.WaitGroup
	wg.Add(1)
	approved := make(chan error, 1)
	go func() {
		defer wg.Done()
		approved <- w.approveWhenPending(ctx)
	}()

	agent := exec.CommandContext(ctx, w.node, agentArgs...)
	agent.Env = append(os.Environ(), "SANDBOX="+w.sandbox, "ROOT="+w.root)
	var agentErr bytes.Buffer
	agent.Stderr = &agentErr
	stdout, err := agent.Output()
	wg.Wait()
	if err != nil {
		t.Fatalf("agent: %v\nstdout:\n%s\nstderr (agent and, over stdio, rulelock):\n%s\ngateway:\n%s", err, stdout, agentErr.String(), gwOut.String())
	}
	if err := <-approved; err != nil {
		t.Fatalf("approvers: %v\nagent stderr:\n%s", err, agentErr.String())
	}
	steps := map[string]stepResult{}
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	for sc.Scan() {
		var s stepResult
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatalf("agent output %q: %v", sc.Text(), err)
		}
		steps[s.Step] = s
	}
	if t.Failed() {
		return
	}
	defer func() {
		if t.Failed() {
			t.Logf("agent output:\n%s\nagent stderr:\n%s\ngateway:\n%s", stdout, agentErr.String(), gwOut.String())
		}
	}()

	// tools/list hides what the policy never allows (writes, media reads …).
	want := "fs.directory_tree fs.get_file_info fs.list_allowed_directories fs.list_directory fs.move_file fs.read_file fs.read_multiple_files fs.read_text_file fs.search_files"
	if got := strings.Join(steps["list"].Tools, " "); got != want {
		t.Errorf("tools/list:\n got %s\nwant %s", got, want)
	}
	if s := steps["read"]; s.IsError || s.Text != helloText && s.Structured["content"] != helloText {
		t.Errorf("allowed read: %+v", s)
	}
	for step, rule := range map[string]string{
		"write":  "NoWrites",
		"secret": "NoSecrets",
	} {
		s := steps[step]
		if !s.IsError || !strings.Contains(s.Text, "rulelock denied the call") || s.Structured != nil {
			t.Errorf("%s: want a denial as an isError result, got %+v", step, s)
			continue
		}
		if rule != "" && !strings.Contains(s.Text, fmt.Sprintf("rule %q", rule)) {
			t.Errorf("%s: the denial does not name rule %s: %q", step, rule, s.Text)
		}
		if _, ok := s.Meta["io.rulelock/decision"]; !ok {
			t.Errorf("%s: no decision in _meta: %v", step, s.Meta)
		}
	}
	// A path outside the roots (by "..", a sibling prefix or a symbolic
	// link) is refused before the decision, like a malformed argument.
	for _, step := range []string{"extra", "unknown", "traversal", "sibling", "symlink"} {
		if s := steps[step]; s.Error == nil || s.Error.Code == nil || *s.Error.Code != -32602 {
			t.Errorf("%s: want JSON-RPC -32602, got %+v", step, s)
		}
	}
	if s := steps["move"]; s.IsError {
		t.Errorf("approved move: %+v", s)
	}
	if steps["progress"].Count == 0 {
		t.Error("the agent saw no progress while the move awaited approval")
	}
	// The write never happened; the move did, once.
	if b, err := os.ReadFile(filepath.Join(w.sandbox, "moved.txt")); err != nil || string(b) != helloText {
		t.Errorf("moved.txt: %q %v", b, err)
	}
	if b, _ := os.ReadFile(filepath.Join(w.root, "outside.txt")); string(b) != "outside the sandbox\n" {
		t.Errorf("outside.txt changed: %q", b)
	}

	// Stop the gateway, then check the log holds every call and verifies.
	if serve != nil {
		serve.Process.Signal(syscall.SIGTERM)
		serve.Wait()
	}
	w.checkLog(t)
}

func (w *mcpWorld) waitReady(t *testing.T, out *bytes.Buffer) {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + w.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("rulelock serve did not become ready:\n%s", out.String())
}

// approveWhenPending waits for the parked move and approves it as alice and
// bob with the real CLI.
func (w *mcpWorld) approveWhenPending(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("no request was parked: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+w.addr+"/v1/approvals", nil)
		req.Header.Set("Authorization", "Bearer "+w.approverTokens["alice"])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			continue
		}
		var pending struct {
			Pending []struct {
				Request struct{ ID string } `json:"request"`
			} `json:"pending"`
		}
		err = json.NewDecoder(resp.Body).Decode(&pending)
		resp.Body.Close()
		if err != nil || len(pending.Pending) == 0 {
			continue
		}
		id := pending.Pending[0].Request.ID
		for _, who := range []string{"alice", "bob"} {
			cmd := exec.CommandContext(ctx, w.bin, "approve", id, "--key", w.keyFiles[who])
			cmd.Env = append(os.Environ(), "RULELOCK_GATEWAY=http://"+w.addr, "RULELOCK_TOKEN="+w.approverTokens[who])
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("%s approves %s: %v\n%s", who, id, err, out)
			}
		}
		return nil
	}
}

func (w *mcpWorld) checkLog(t *testing.T) {
	logDir := filepath.Join(w.data, "log")
	// The log opens only once rulelock has let go of it.
	var l *audit.Log
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if l, err = audit.Open(logDir, audit.Options{}); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("open the log: %v", err)
	}
	counts := map[string]int{}
	var pins int
	for i := int64(0); i < l.Size(); i++ {
		raw, err := l.ReadEntry(i)
		if err != nil {
			t.Fatal(err)
		}
		e, err := audit.DecodeEntry(raw)
		if err != nil {
			t.Fatal(err)
		}
		switch e.Kind {
		case audit.KindDecision:
			counts["decision:"+e.Decision]++
		case audit.KindOutcome:
			counts["outcome:"+e.Status]++
		case audit.KindApproval:
			counts["approval"]++
		case audit.KindNote:
			if strings.HasPrefix(e.Message, "mcp_tool_pinned ") {
				pins++
			}
		}
	}
	l.Close()
	// Nine calls: read (allow), write, secret (deny), traversal, sibling,
	// symlink, extra and unknown (refused, logged as deny), move (parked,
	// then approved: a second decision). Outcomes: the read and the move.
	wantCounts := map[string]int{"decision:allow": 1, "decision:deny": 7, "decision:require_approval": 1, "decision:approved": 1, "outcome:ok": 2}
	for k, n := range wantCounts {
		if counts[k] != n {
			t.Errorf("log: %d %s entries, want %d (all: %v)", counts[k], k, n, counts)
		}
	}
	if pins != 14 {
		t.Errorf("log: %d tool pins, want the filesystem server's 14 tools", pins)
	}
	verify := exec.Command(w.bin, "verify", logDir, "--key", filepath.Join(w.data, "log.pub"), "--replay", "--allow-development", "--config", w.config)
	if out, err := verify.CombinedOutput(); err != nil {
		t.Errorf("rulelock verify --replay: %v\n%s", err, out)
	}
}
