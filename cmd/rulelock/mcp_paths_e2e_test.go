package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
)

// TestMCPPathIdentity drives the path cases with the official TypeScript
// client (testdata/mcp/calls.mjs) through rulelock, over stdio and over
// streamable HTTP, to the reference filesystem server: the name the policy
// judges and the log records is the name the server opens.
func TestMCPPathIdentity(t *testing.T) {
	parts := needMCPParts(t)
	repo, node, fsServer, bin := parts.repo, parts.node, parts.fsServer, parts.bin
	for _, mode := range []string{"stdio", "http"} {
		t.Run(mode, func(t *testing.T) { runPathCalls(t, repo, node, fsServer, bin, mode) })
	}
}

const pathsRules = `policy "paths" { default: deny }

rule "Reads" {
  precondition: action.type == "fs.read_text_file"
  allow
}

rule "NoKeys" {
  precondition: "path" in action
  condition: !action.path.lowerAscii().contains("key")
  deny: "no key files"
}
`

func runPathCalls(t *testing.T, repo, node, fsServer, bin, mode string) {
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sandbox := filepath.Join(base, "sandbox")
	for name, body := range map[string]string{
		"sandbox/KEY.txt":     "KEY MATERIAL\n",
		"sandbox/café.txt":    "café\n",
		"outside/secret.txt":  "OUTSIDE\n",
		"policy/paths.rules":  pathsRules,
		"sandbox/docs/a.txt":  "a\n",
		"sandbox_evil/x.txt":  "OUTSIDE\n",
		"sandbox/inner/b.txt": "b\n",
	} {
		p := filepath.Join(base, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("../outside/secret.txt", filepath.Join(sandbox, "link.txt")); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	data := filepath.Join(base, "data")
	const token = "agent-paths-token"
	config := filepath.Join(base, "rulelock.yaml")
	cfg := fmt.Sprintf(`listen: %q
data_dir: %q
policy: %q
agents:
  - id: agent-1
    roles: [files]
    token_sha256: %s
mcp:
  upstreams:
    - name: fs
      command: %q
      args: [%q]
      roots: [%q]
      path_arguments: [path, paths, source, destination]
      first_seen: expose # the reference server, trusted on first use
`, addr, data, filepath.Join(base, "policy"), sha(token), node, fsServer, sandbox)
	if err := os.WriteFile(config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	type call struct {
		Step      string         `json:"step"`
		Name      string         `json:"name"`
		Arguments map[string]any `json:"arguments"`
	}
	read := func(step, path string) call {
		return call{step, "fs.read_text_file", map[string]any{"path": path}}
	}
	calls := []call{
		read("warmup", sandbox+"/docs/a.txt"), // the server asks for its roots after the handshake
		read("kelvin", sandbox+"/\u212aEY.txt"),
		read("kelvin-relative", "\u212aEY.txt"),
		read("combining", sandbox+"/cafe\u0301.txt"),
		read("fullwidth", sandbox+"/\uff2b\uff25\uff39.txt"),
		read("traversal", sandbox+"/../outside/secret.txt"),
		read("sibling", base+"/sandbox_evil/x.txt"),
		read("link", sandbox+"/link.txt"),
	}
	js, err := json.Marshal(calls)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := []string{filepath.Join(repo, "testdata", "mcp", "calls.mjs")}
	var gwOut bytes.Buffer
	var serve *exec.Cmd
	if mode == "http" {
		serve = exec.CommandContext(ctx, bin, "serve", "--config", config)
		serve.Stdout, serve.Stderr = &gwOut, &gwOut
		if err := serve.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			serve.Process.Signal(syscall.SIGTERM)
			serve.Wait()
		}()
		waitHealthy(t, addr, &gwOut)
		args = append(args, "http", "http://"+addr+"/mcp", token)
	} else {
		args = append(args, "stdio", bin, "mcp", "--config", config, "--agent", "agent-1")
	}
	// The warm-up may meet a server that has no roots yet: run it until it
	// reads, then the cases once.
	var results map[string]stepResult
	for i := 0; ; i++ {
		results = runCalls(t, ctx, node, args, js, &gwOut)
		if s := results["warmup"]; !s.IsError && s.Error == nil {
			break
		}
		if i == 20 {
			s := results["warmup"]
			if s.Error != nil {
				t.Fatalf("the filesystem server never served its root: %s", s.Error.Message)
			}
			t.Fatalf("the filesystem server never served its root: %q", s.Text)
		}
		time.Sleep(100 * time.Millisecond)
	}

	for _, step := range []string{"kelvin", "kelvin-relative"} {
		if s := results[step]; !s.IsError || !strings.Contains(s.Text, `rule "NoKeys"`) || strings.Contains(s.Text, "KEY MATERIAL") {
			t.Errorf("%s: want the NoKeys denial, got %+v", step, s)
		}
	}
	if s := results["combining"]; s.IsError || s.Text != "café\n" {
		t.Errorf("combining: want café.txt, got %+v", s)
	}
	if s := results["fullwidth"]; !s.IsError || strings.Contains(s.Text, "KEY MATERIAL") {
		t.Errorf("fullwidth: want the server's not-found error, got %+v", s)
	}
	for _, step := range []string{"traversal", "sibling", "link"} {
		if s := results[step]; s.Error == nil || s.Error.Code == nil || *s.Error.Code != -32602 || strings.Contains(s.Error.Message+s.Text, "OUTSIDE") {
			t.Errorf("%s: want -32602, got %+v", step, s)
		}
	}
	if serve != nil {
		serve.Process.Signal(syscall.SIGTERM)
		serve.Wait()
	}

	// The log names the files the server opens.
	logged := loggedPathDecisions(t, filepath.Join(data, "log"))
	if logged[sandbox+"/KEY.txt"] != "deny" || logged[sandbox+"/café.txt"] != "allow" {
		t.Errorf("log: want KEY.txt denied and café.txt allowed, got %v", logged)
	}
	for p := range logged {
		if strings.ContainsRune(p, '\u212a') || strings.Contains(p, "\u0301") {
			t.Errorf("log: a name the server does not open: %q", p)
		}
	}
}

func runCalls(t *testing.T, ctx context.Context, node string, args []string, calls []byte, gwOut *bytes.Buffer) map[string]stepResult {
	t.Helper()
	agent := exec.CommandContext(ctx, node, args...)
	agent.Env = append(os.Environ(), "CALLS="+string(calls))
	var stderr bytes.Buffer
	agent.Stderr = &stderr
	out, err := agent.Output()
	if err != nil {
		t.Fatalf("calls.mjs: %v\nstdout:\n%s\nstderr:\n%s\ngateway:\n%s", err, out, stderr.String(), gwOut.String())
	}
	results := map[string]stepResult{}
	for _, line := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		var s stepResult
		if err := json.Unmarshal(line, &s); err != nil {
			t.Fatalf("calls.mjs output %q: %v", line, err)
		}
		results[s.Step] = s
	}
	return results
}

func waitHealthy(t *testing.T, addr string, out *bytes.Buffer) {
	t.Helper()
	for i := 0; i < 600; i++ {
		if resp, err := http.Get("http://" + addr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("rulelock serve did not become ready:\n%s", out.String())
}

// loggedPathDecisions maps the path of every decision in the log at dir to
// its decision, once rulelock has let go of the log.
func loggedPathDecisions(t *testing.T, dir string) map[string]string {
	t.Helper()
	var l *audit.Log
	var err error
	for i := 0; i < 300; i++ {
		if l, err = audit.Open(dir, audit.Options{}); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("open the log: %v", err)
	}
	defer l.Close()
	out := map[string]string{}
	for i := int64(0); i < l.Size(); i++ {
		raw, err := l.ReadEntry(i)
		if err != nil {
			t.Fatal(err)
		}
		e, err := audit.DecodeEntry(raw)
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind != audit.KindDecision || e.Action.Text == "" {
			continue
		}
		var a struct{ Path string }
		if err := json.Unmarshal([]byte(e.Action.Text), &a); err != nil {
			t.Fatal(err)
		}
		out[a.Path] = e.Decision
	}
	return out
}
