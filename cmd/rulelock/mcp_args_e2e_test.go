package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
)

// sendRules allow the send tool and check its count: a count of the wrong
// type would be an evaluation error, which the policy turns into a denial.
const sendRules = `policy "mail" { default: deny }

rule "Send" {
  precondition: action.type == "mail.send"
  allow
}

rule "FewCopies" {
  precondition: action.type == "mail.send"
  condition: !has(action.count) || action.count <= 5
  deny: "at most 5 copies"
}
`

// badSendCalls are calls the send tool's input schema refuses.
var badSendCalls = []struct {
	step string
	args map[string]any
}{
	{"subject-array", map[string]any{"to": "a@example.com", "subject": []string{"x", "y"}}},
	{"subject-too-long", map[string]any{"to": "a@example.com", "subject": strings.Repeat("s", 5200)}},
	{"to-pattern", map[string]any{"to": "a@evil.test", "subject": "hi"}},
	{"priority-enum", map[string]any{"to": "a@example.com", "subject": "hi", "priority": "urgent"}},
	{"count-range", map[string]any{"to": "a@example.com", "subject": "hi", "count": 11}},
	{"count-string", map[string]any{"to": "a@example.com", "subject": "hi", "count": "7"}},
	{"to-missing", map[string]any{"subject": "hi"}},
}

// TestMCPArgumentsEndToEnd: the official TypeScript client calls, through
// rulelock over stdio and over /mcp, a server on the TypeScript SDK whose
// tool has a constrained input schema. Every call the schema refuses —
// a string given as an array, 5 kB over maxLength, a pattern, an enum, a
// range, a policy-checked field of the wrong type, a missing required
// argument — is JSON-RPC -32602 and a logged refusal of the agent, and
// none reaches the server; a valid call does, and one the policy denies is
// a denial.
func TestMCPArgumentsEndToEnd(t *testing.T) {
	parts := needMCPParts(t)
	repo, node, bin := parts.repo, parts.node, parts.bin
	type call struct {
		Step      string         `json:"step"`
		Name      string         `json:"name"`
		Arguments map[string]any `json:"arguments"`
	}
	var calls []call
	for _, c := range badSendCalls {
		calls = append(calls, call{c.step, "mail_send", c.args})
	}
	calls = append(calls,
		call{"valid", "mail_send", map[string]any{"to": "a@example.com", "subject": "hi", "priority": "low", "count": 3}},
		call{"denied", "mail_send", map[string]any{"to": "b@example.com", "subject": "hi", "count": 7}})
	callsJSON, err := json.Marshal(calls)
	if err != nil {
		t.Fatal(err)
	}

	for _, mode := range []string{"stdio", "http"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			record := filepath.Join(dir, "received.jsonl")
			if err := os.WriteFile(filepath.Join(dir, "mail.rules"), []byte(sendRules), 0o644); err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			ln.Close()
			token := "agent-args-token"
			cfg := fmt.Sprintf(`listen: %q
data_dir: %q
policy: %q
agents:
  - id: agent-1
    roles: [mail]
    token_sha256: %s
mcp:
  upstreams:
    - name: mail
      command: %q
      args: [%q]
      first_seen: expose
      env:
        RECORD:
          value: %q
`, addr, filepath.Join(dir, "data"), dir, sha(token), node, filepath.Join(repo, "testdata", "mcp", "send_server.mjs"), record)
			config := filepath.Join(dir, "rulelock.yaml")
			if err := os.WriteFile(config, []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			agentArgs := []string{filepath.Join(repo, "testdata", "mcp", "call_agent.mjs")}
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
				(&mcpWorld{addr: addr}).waitReady(t, &gwOut)
				agentArgs = append(agentArgs, "http", "http://"+addr+"/mcp", token)
			} else {
				agentArgs = append(agentArgs, "stdio", bin, "mcp", "--config", config, "--agent", "agent-1")
			}
			agent := exec.CommandContext(ctx, node, agentArgs...)
			agent.Env = append(os.Environ(), "CALLS="+string(callsJSON))
			var agentErr bytes.Buffer
			agent.Stderr = &agentErr
			stdout, err := agent.Output()
			if err != nil {
				t.Fatalf("agent: %v\n%s\nstderr:\n%s\ngateway:\n%s", err, stdout, agentErr.String(), gwOut.String())
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
			for _, c := range badSendCalls {
				if s := steps[c.step]; s.Error == nil || s.Error.Code == nil || *s.Error.Code != -32602 {
					t.Errorf("%s: want JSON-RPC -32602, got %+v", c.step, s)
				}
			}
			if s := steps["valid"]; s.Error != nil || s.IsError || s.Text != "sent" {
				t.Errorf("valid: %+v", s)
			}
			if s := steps["denied"]; s.Error != nil || !s.IsError || !strings.Contains(s.Text, "at most 5 copies") {
				t.Errorf("denied: %+v", s)
			}
			got, _ := os.ReadFile(record)
			if want := `{"count":3,"priority":"low","subject":"hi","to":"a@example.com"}` + "\n"; string(got) != want {
				t.Errorf("the server received:\n%s\nwant only the valid call:\n%s", got, want)
			}

			if serve != nil {
				serve.Process.Signal(syscall.SIGTERM)
				serve.Wait()
			}
			refusals := 0
			for _, e := range readLog(t, filepath.Join(dir, "data", "log")) {
				if e.Kind == audit.KindDecision && e.Agent == "agent-1" && e.Decision == "deny" && strings.HasPrefix(e.Message, `bad_arguments: tools/call "mail_send"`) {
					refusals++
				}
			}
			if refusals != len(badSendCalls) {
				t.Errorf("log: %d bad_arguments refusals of agent-1, want %d", refusals, len(badSendCalls))
			}
			if t.Failed() {
				t.Logf("agent output:\n%s\nagent stderr:\n%s\ngateway:\n%s", stdout, agentErr.String(), gwOut.String())
			}
		})
	}
}

// readLog decodes every entry of the log in dir, once rulelock has let go
// of it.
func readLog(t *testing.T, dir string) []*audit.Entry {
	t.Helper()
	var l *audit.Log
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if l, err = audit.Open(dir, audit.Options{}); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("open the log: %v", err)
	}
	defer l.Close()
	var out []*audit.Entry
	for i := int64(0); i < l.Size(); i++ {
		raw, err := l.ReadEntry(i)
		if err != nil {
			t.Fatal(err)
		}
		e, err := audit.DecodeEntry(raw)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}
