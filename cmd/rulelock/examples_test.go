package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rulelock/rulelock/internal/testenv"
)

// TestExamples starts each example configuration as shipped, after only
// the steps its comments ask for (credentials it names, a token made with
// `rulelock token` in place of the placeholder hash, for mcp.yaml the
// sandbox and the pinning of the server's tools), on a copy of examples/
// so that its data directory is temporary, and on a free port. Each must
// become ready and decide one action of its agent.
func TestExamples(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts the examples")
	}
	bin, err := rulelockBinary()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		config, agent, action, want string
		prepare                     func(t *testing.T, dir string)
	}{{
		config: "rulelock.yaml", agent: "agent-42",
		action: `{"type": "transfer", "amount": 500, "to": "acct-1"}`, want: "allow",
		prepare: func(t *testing.T, dir string) {
			t.Setenv("BANK_API_TOKEN", "bank-token")
			t.Setenv("TREASURY_SLACK_WEBHOOK", "https://hooks.example.com/treasury")
			for _, name := range []string{"settlement-token", "hooks-token"} {
				writeFile(t, filepath.Join(dir, "secrets", name), "secret\n")
			}
		},
	}, {
		config: "mcp.yaml", agent: "claude-desktop",
		action: `{"type": "fs.read_text_file", "path": "/tmp/rulelock-sandbox/notes.txt"}`, want: "allow",
		prepare: func(t *testing.T, dir string) {
			testenv.LookPath(t, "npx", "apt-get install nodejs npm")
			if err := os.MkdirAll("/tmp/rulelock-sandbox", 0o755); err != nil {
				t.Fatal(err)
			}
			// The review and pinning the config asks for before the first start.
			out := runBin(t, bin, "mcp", "pin", "--config", filepath.Join(dir, "mcp.yaml"), "--write")
			if !strings.Contains(out, "fs.read_text_file") {
				t.Fatalf("mcp pin lists no fs.read_text_file:\n%s", out)
			}
		},
	}} {
		t.Run(tc.config, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "examples")
			repo, _ := filepath.Abs("../..")
			if err := os.CopyFS(dir, os.DirFS(filepath.Join(repo, "examples"))); err != nil {
				t.Fatal(err)
			}
			config := filepath.Join(dir, tc.config)
			tc.prepare(t, dir)
			token := replaceAgentToken(t, bin, config, tc.agent)

			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			ln.Close()
			var out bytes.Buffer
			serve := exec.Command(bin, "serve", "--config", config, "--listen", addr)
			serve.Stdout, serve.Stderr = &out, &out
			if err := serve.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				serve.Process.Signal(syscall.SIGTERM)
				serve.Wait()
				if t.Failed() {
					t.Logf("rulelock serve said:\n%s", out.String())
				}
			}()
			waitReady(t, "http://"+addr)

			req, _ := http.NewRequest("POST", "http://"+addr+"/v1/decide", strings.NewReader(`{"action": `+tc.action+`}`))
			req.Header.Set("Authorization", "Bearer "+token)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var got struct {
				Decision struct {
					Decision string `json:"decision"`
				} `json:"decision"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("decide: status %d, %v", resp.StatusCode, err)
			}
			if got.Decision.Decision != tc.want {
				t.Errorf("decision %q, want %q", got.Decision.Decision, tc.want)
			}
		})
	}
}

// replaceAgentToken does what the example's comments say: `rulelock token`
// makes a token, whose hash replaces the agent's placeholder. It returns
// the token.
func replaceAgentToken(t *testing.T, bin, config, agent string) string {
	t.Helper()
	var token, sum string
	for _, line := range strings.Split(runBin(t, bin, "token"), "\n") {
		if v, ok := strings.CutPrefix(line, "token: "); ok {
			token = v
		}
		if v, ok := strings.CutPrefix(line, "token_sha256: "); ok {
			sum = v
		}
	}
	b, err := os.ReadFile(config)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	_, after, ok := strings.Cut(text, "- id: "+agent+"\n")
	_, placeholder, ok2 := strings.Cut(after, "token_sha256: ")
	if token == "" || sum == "" || !ok || !ok2 || len(placeholder) < 64 {
		t.Fatalf("no token, or no token_sha256 for agent %s in %s", agent, config)
	}
	text = strings.Replace(text, placeholder[:64], sum, 1)
	writeFile(t, config, text)
	return token
}

func runBin(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("rulelock %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func writeFile(t *testing.T, name, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}
