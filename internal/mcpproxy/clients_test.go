package mcpproxy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/mcpproxy"
	"github.com/rulelock/rulelock/policy"
)

// TestUnauthorizedChallenges: a 401 on /mcp says it wants a bearer token
// (RFC 6750), so a client asks for one instead of starting OAuth.
func TestUnauthorizedChallenges(t *testing.T) {
	f := newFixture(t, testPolicy)
	for _, tc := range []struct{ auth, want string }{
		{"", `Bearer realm="rulelock"`},
		{"Bearer not-an-agent", `Bearer realm="rulelock", error="invalid_token", error_description="the token is not an agent's"`},
	} {
		req, err := http.NewRequest("POST", f.mcp.URL, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("Authorization %q: status %d, want 401", tc.auth, resp.StatusCode)
		}
		if got := resp.Header.Get("WWW-Authenticate"); got != tc.want {
			t.Errorf("Authorization %q: WWW-Authenticate %q, want %q", tc.auth, got, tc.want)
		}
	}
}

// TestNameCollisionRefused: two tools the agent would see under one name
// stop the proxy at start, whatever the order of the upstreams.
func TestNameCollisionRefused(t *testing.T) {
	a, ab := newTestUpstream(t), newTestUpstream(t)
	a.srv.AddTool(&mcp.Tool{Name: "b_echo", InputSchema: json.RawMessage(`{"type":"object"}`)},
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{}, nil
		})
	l, err := audit.Open(t.TempDir(), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ups := []mcpproxy.Upstream{{Name: "a", URL: a.http.URL}, {Name: "a_b", URL: ab.http.URL}}
	// "a" + "_" + "b_echo" and "a_b" + "_" + "echo" are both a_b_echo.
	_, err = mcpproxy.New(context.Background(), mcpproxy.Config{Upstreams: ups, Log: l, NameSeparator: "_"})
	if err == nil || !strings.Contains(err.Error(), `tools a.b_echo and a_b.echo would both be called "a_b_echo"`) {
		t.Fatalf("New: %v, want a collision refused", err)
	}
	// With "." the names are the action types, which cannot collide.
	p, err := mcpproxy.New(context.Background(), mcpproxy.Config{Upstreams: ups, Log: l, NameSeparator: "."})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if _, err := mcpproxy.New(context.Background(), mcpproxy.Config{Upstreams: ups, Log: l, NameSeparator: "/"}); err == nil {
		t.Error(`separator "/" accepted`)
	}
}

// TestResultTypeForVersion: under 2026-07-28 every tools/call result
// rulelock builds carries resultType "complete" (clients that speak it
// reject a result without one, after the call ran); under 2025-11-25 none
// does. The newest clients are tested for real in cmd/rulelock
// (TestMCPClients); this pins the wire form without node.
func TestResultTypeForVersion(t *testing.T) {
	f := newFixture(t, testPolicy)
	modern := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"raw","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}`
	for _, tc := range []struct {
		name     string
		setup    []string // lines sent before the calls, each answered or not
		meta     string
		wantType bool
	}{
		{name: "2026-07-28", meta: "," + modern, wantType: true},
		{name: "2025-11-25", setup: []string{
			`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`,
			`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			agentOut, proxyIn := io.Pipe()
			proxyOut, agentIn := io.Pipe()
			go f.proxy.ServeStdio(ctx, policy.Agent{ID: "agent-a", Roles: []string{"bot"}}, agentOut, agentIn)
			replies := bufio.NewReader(proxyOut)
			send := func(line string) {
				t.Helper()
				if _, err := io.WriteString(proxyIn, line+"\n"); err != nil {
					t.Fatal(err)
				}
			}
			for _, line := range tc.setup {
				send(line)
				if strings.Contains(line, `"id"`) {
					if _, err := replies.ReadString('\n'); err != nil {
						t.Fatal(err)
					}
				}
			}
			for _, call := range []struct{ what, args string }{
				{"allowed", `{"text":"hello"}`},
				{"denied", `{"text":"a secret"}`},
			} {
				send(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"up.echo","arguments":` + call.args + tc.meta + `}}`)
				line, err := replies.ReadString('\n')
				if err != nil {
					t.Fatal(err)
				}
				var reply struct {
					Result map[string]json.RawMessage `json:"result"`
				}
				if err := json.Unmarshal([]byte(line), &reply); err != nil || reply.Result == nil {
					t.Fatalf("%s call: reply %s (%v)", call.what, line, err)
				}
				rt, has := reply.Result["resultType"]
				switch {
				case tc.wantType && string(rt) != `"complete"`:
					t.Errorf("%s call: resultType %s, want \"complete\": %s", call.what, rt, line)
				case !tc.wantType && has:
					t.Errorf("%s call: resultType %s under %s: %s", call.what, rt, tc.name, line)
				}
			}
		})
	}
}

// TestLateNameCollisionRefused: a tool an upstream adds later under a name
// the agent already sees for another upstream's tool is refused, and the
// first tool keeps its name.
func TestLateNameCollisionRefused(t *testing.T) {
	a, ab := newTestUpstream(t), newTestUpstream(t)
	l, err := audit.Open(t.TempDir(), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p, err := mcpproxy.New(context.Background(), mcpproxy.Config{Log: l, NameSeparator: "_",
		Upstreams: []mcpproxy.Upstream{{Name: "a", URL: a.http.URL}, {Name: "a_b", URL: ab.http.URL}}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	empty := func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{}, nil
	}
	a.srv.AddTool(&mcp.Tool{Name: "b_echo", InputSchema: json.RawMessage(`{"type":"object"}`)}, empty) // a_b_echo, taken
	a.srv.AddTool(&mcp.Tool{Name: "later", InputSchema: json.RawMessage(`{"type":"object"}`)}, empty)  // a_later, free
	has := func(name string) bool {
		for _, ti := range p.Tools() {
			if ti.Name == name {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(10 * time.Second); !has("a.later"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the upstream's new tool never appeared")
		}
	}
	if has("a.b_echo") {
		t.Error("a.b_echo was accepted although the agent sees a_b.echo as a_b_echo")
	}
	if !has("a_b.echo") {
		t.Error("a_b.echo lost its place")
	}
}
