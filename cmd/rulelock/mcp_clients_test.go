package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rulelock/rulelock/internal/testenv"
)

// mcpClients are the MCP client layers of the frameworks people use and of
// both generations of the official TypeScript SDK, each driven by
// testdata/mcp/clients.mjs, with the protocol version each negotiates over
// stdio and over HTTP (empty: the framework does not say, and the version
// is not checked). The SDK's stateful streamable HTTP transport does not
// offer 2026-07-28, so a client that would speak it falls back to
// 2025-11-25 there.
var mcpClients = []struct{ name, stdio, http string }{
	{"sdk-2", "2026-07-28", "2025-11-25"},
	{"sdk-1", "2025-11-25", "2025-11-25"},
	{"sdk-2025-06-18", "2025-06-18", "2025-06-18"},
	{"sdk-2025-03-26", "2025-03-26", "2025-03-26"},
	{"agents", "", ""},
	{"ai-sdk", "", ""},
	{"langchain", "", ""},
	{"inspector", "", ""},
}

// TestMCPClients puts rulelock between each client in mcpClients and the
// reference filesystem server, over stdio and streamable HTTP, and checks
// what the client layer hands the agent (or the model): the tool list, an
// allowed read identical to the server's own answer, a denial naming its
// rule, and a call parked for approval that comes back pending with its
// request id — never an exception, a timeout or a retry of an action that
// ran.
func TestMCPClients(t *testing.T) {
	parts := needMCPParts(t)
	repo, node, fsServer, bin := parts.repo, parts.node, parts.fsServer, parts.bin
	mods := filepath.Join(repo, "testdata", "mcp", "node_modules")
	for _, pkg := range []string{"@modelcontextprotocol/client", "@modelcontextprotocol/sdk", "mcp-sdk-2025-06-18", "mcp-sdk-2025-03-26", "@openai/agents", "@ai-sdk/mcp", "@langchain/mcp-adapters", "@modelcontextprotocol/inspector"} {
		testenv.File(t, filepath.Join(mods, pkg, "package.json"), pkg+" (testdata/mcp)", "npm ci --prefix testdata/mcp")
	}
	w := newClientWorld(t, repo, node, fsServer)
	script := filepath.Join(repo, "testdata", "mcp", "clients.mjs")

	// What each client makes of the filesystem server's own answer.
	direct := map[string]clientStep{}
	for _, c := range mcpClients {
		steps, _ := w.runClient(t, script, c.name, "", "read", "stdio", node, fsServer, w.sandbox)
		direct[c.name] = steps["read"]
	}

	t.Run("stdio", func(t *testing.T) {
		for _, c := range mcpClients {
			t.Run(c.name, func(t *testing.T) {
				steps, stderr := w.runClient(t, script, c.name, "fs_", "", "stdio", bin, "mcp", "--config", w.config("stdio"), "--agent", "agent-1")
				w.check(t, c.name, c.stdio, steps, direct[c.name], stderr)
			})
		}
	})
	// A gateway that starts slower than a client's discovery timeout (the
	// AI SDK gives server/discover one second, then falls back to
	// initialize; a loaded machine is enough): the client still connects,
	// and the late discover leaves nothing that refuses its initialize.
	t.Run("stdio-slow-start", func(t *testing.T) {
		for _, c := range mcpClients {
			if c.name != "ai-sdk" {
				continue
			}
			t.Run(c.name, func(t *testing.T) {
				steps, stderr := w.runClient(t, script, c.name, "fs_", "", "stdio", "/bin/sh", "-c", `sleep 2; exec "$0" "$@"`,
					bin, "mcp", "--config", w.config("stdio"), "--agent", "agent-1")
				w.check(t, c.name, c.stdio, steps, direct[c.name], stderr)
			})
		}
	})
	t.Run("http", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		var gwOut syncBuffer
		serve := exec.CommandContext(ctx, bin, "serve", "--config", w.config("http"))
		serve.Stdout, serve.Stderr = &gwOut, &gwOut
		serve.Dir = t.TempDir() // relative paths resolve from the config file
		if err := serve.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			serve.Process.Signal(syscall.SIGTERM)
			serve.Wait()
		}()
		waitReadyz(t, w.addr, &gwOut)
		for _, c := range mcpClients {
			t.Run(c.name, func(t *testing.T) {
				steps, stderr := w.runClient(t, script, c.name, "fs_", "", "http", "http://"+w.addr+"/mcp", w.token)
				w.check(t, c.name, c.http, steps, direct[c.name], stderr+"\ngateway:\n"+gwOut.String())
			})
		}
	})
}

// waitReadyz waits for the gateway at addr to answer /readyz with 200.
func waitReadyz(t *testing.T, addr string, out fmt.Stringer) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
	}
	t.Fatalf("rulelock serve did not become ready:\n%s", out.String())
}

type clientWorld struct {
	dir, sandbox, policy, addr, token string
	node, fsServer                    string
}

type clientStep struct {
	Step    string         `json:"step"`
	Tools   []string       `json:"tools"`
	IsError bool           `json:"isError"`
	Text    string         `json:"text"`
	Meta    map[string]any `json:"meta"`
	Version string         `json:"version"`
	Error   *struct {
		Code    any    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func newClientWorld(t *testing.T, repo, node, fsServer string) *clientWorld {
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w := &clientWorld{dir: root, sandbox: filepath.Join(root, "sandbox"), policy: filepath.Join(root, "policy"),
		token: "agent-clients-token", node: node, fsServer: fsServer}
	rules, err := os.ReadFile(filepath.Join(repo, "examples", "mcp-filesystem", "filesystem.rules"))
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"sandbox/hello.txt":    helloText,
		"sandbox/secret.txt":   "the launch codes\n",
		"policy/fs.yaml":       fmt.Sprintf("sandbox: %q\n", w.sandbox),
		"policy/filesys.rules": string(rules),
	} {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w.addr = ln.Addr().String()
	ln.Close()
	return w
}

// config writes the gateway's configuration for one mode (each has its
// own log) and returns its path. approval_wait is short: the pending step
// waits for it.
func (w *clientWorld) config(mode string) string {
	cfg := fmt.Sprintf(`listen: %q
data_dir: data-%s
policy: %q
agents:
  - id: agent-1
    roles: [files]
    token_sha256: %s
approvers:
  - id: alice
    groups: [ops]
    key: alice+8e23fc69+AVhzIuN0xxr5ohEuzZIL/Kgd/MLhS/7pgsie/6aL2ymt
  - id: bob
    groups: [ops]
    key: bob+3772fd20+Aa8WtO6TM0ES7sXzsXXQtXMXEWMgv+53vwDCf9noEMRz
mcp:
  approval_wait: 1s
  upstreams:
    - name: fs
      command: %q
      args: [%q, %q]
      path_arguments: [path, paths, source, destination]
      roots: [%q]
      first_seen: expose
`, w.addr, mode, w.policy, sha(w.token), w.node, w.fsServer, w.sandbox, w.sandbox)
	p := filepath.Join(w.dir, "rulelock-"+mode+".yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		panic(err)
	}
	return p
}

// runClient runs clients.mjs and returns its steps by name, and its stderr.
func (w *clientWorld) runClient(t *testing.T, script, client, prefix, steps string, target ...string) (map[string]clientStep, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, w.node, append([]string{script, client}, target...)...)
	cmd.Env = append(os.Environ(), "SANDBOX="+w.sandbox, "PREFIX="+prefix)
	if steps != "" {
		cmd.Env = append(cmd.Env, "STEPS="+steps)
	}
	// The working directory is not the config's: relative paths in the
	// config resolve from the config file.
	cmd.Dir = t.TempDir()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", client, err, stdout, stderr.String())
	}
	out := map[string]clientStep{}
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var s clientStep
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatalf("%s: output %q: %v", client, sc.Text(), err)
		}
		out[s.Step] = s
	}
	return out, stderr.String()
}

// String shows a step without its _meta (the decision, which the checks
// do not read).
func (s clientStep) String() string {
	if s.Error != nil {
		return fmt.Sprintf("error %v: %s", s.Error.Code, s.Error.Message)
	}
	return fmt.Sprintf("isError=%v text=%q", s.IsError, s.Text)
}

var pendingRE = regexp.MustCompile(`awaiting human approval: request (\S+) is pending`)

func (w *clientWorld) check(t *testing.T, client, version string, steps map[string]clientStep, direct clientStep, stderr string) {
	t.Helper()
	defer func() {
		if t.Failed() {
			t.Logf("stderr:\n%s", stderr)
		}
	}()
	wantTools := "fs_directory_tree fs_get_file_info fs_list_allowed_directories fs_list_directory fs_move_file fs_read_file fs_read_multiple_files fs_read_text_file fs_search_files"
	if got := strings.Join(steps["list"].Tools, " "); got != wantTools {
		t.Errorf("tools/list:\n got %s\nwant %s", got, wantTools)
	}
	read := steps["read"]
	if read.Error != nil || read.IsError || read.Text != helloText {
		t.Errorf("allowed read: got %s, want the file's text", read)
	}
	if read.IsError != direct.IsError || read.Text != direct.Text || read.Error != nil || direct.Error != nil {
		t.Errorf("allowed read through rulelock differs from the server's own answer:\n got %s\nwant %s", read, direct)
	}
	deny := steps["deny"]
	if deny.Error != nil || !deny.IsError || !strings.Contains(deny.Text, `rulelock denied the call: rule "NoSecrets"`) {
		t.Errorf("denied read: got %s, want an isError result naming rule NoSecrets", deny)
	}
	pend := steps["pending"]
	if pend.Error != nil || !pend.IsError || !pendingRE.MatchString(pend.Text) {
		t.Errorf("move awaiting approval: got %s, want an isError result with the pending request id", pend)
	}
	if _, err := os.Stat(filepath.Join(w.sandbox, "hello.txt")); err != nil {
		t.Errorf("the move ran without approval: %v", err)
	}
	if version != "" && steps["version"].Version != version {
		t.Errorf("negotiated protocol version %q, want %q", steps["version"].Version, version)
	}
}
