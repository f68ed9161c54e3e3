package mcpproxy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/rulelock/rulelock/policy"
)

// TestStdio serves one agent over stdio: an allowed call, and a batch line
// that is answered with an error and never reaches the server.
func TestStdio(t *testing.T) {
	f := newFixture(t, testPolicy)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	agentOut, proxyIn := io.Pipe() // agent writes → proxy reads
	proxyOut, agentIn := io.Pipe() // proxy writes → agent reads
	go f.proxy.ServeStdio(ctx, policy.Agent{ID: "agent-a", Roles: []string{"bot"}}, agentOut, agentIn)

	// A raw batch first: the reply is a JSON-RPC error, nothing else happens.
	if _, err := io.WriteString(proxyIn, `[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"up.echo","arguments":{"text":"batched"}}}]`+"\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(proxyOut).ReadString('\n')
	if err != nil || !strings.Contains(line, "-32600") {
		t.Fatalf("batch reply %q, %v", line, err)
	}

	c := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil)
	cs, err := c.Connect(ctx, &mcp.IOTransport{Reader: proxyOut, Writer: proxyIn}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	res, err := cs.CallTool(cctx, &mcp.CallToolParams{Name: "up.echo", Arguments: map[string]any{"text": "over stdio"}})
	if err != nil || res.IsError || text(res) != "echo: over stdio" {
		t.Fatalf("call over stdio: %v %+v", err, res)
	}
	if got := f.up.received(); len(got) != 1 || strings.Contains(got[0], "batched") {
		t.Fatalf("upstream received %q", got)
	}
}

// TestStdioDiscoverThenInitialize: a client that probes with server/discover
// and then, its short discovery timeout passed (a gateway still starting
// under load answers later), falls back to initialize, as the Vercel AI
// SDK's client does, gets its session: the discover is answered, and
// leaves nothing that makes the initialize a duplicate. A client that keeps
// the new protocol after its discover still gets its calls answered.
func TestStdioDiscoverThenInitialize(t *testing.T) {
	f := newFixture(t, testPolicy)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	agent := policy.Agent{ID: "agent-a", Roles: []string{"bot"}}
	serve := func() (*bufio.Reader, io.Writer) {
		agentOut, proxyIn := io.Pipe()
		proxyOut, agentIn := io.Pipe()
		go f.proxy.ServeStdio(ctx, agent, agentOut, agentIn)
		t.Cleanup(func() { proxyIn.Close() })
		return bufio.NewReader(proxyOut), proxyIn
	}
	send := func(w io.Writer, msg string) {
		t.Helper()
		if _, err := io.WriteString(w, msg+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	// reply reads the reply to id (skipping notifications).
	reply := func(r *bufio.Reader, id float64) map[string]any {
		t.Helper()
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				t.Fatalf("reading the reply to %v: %v", id, err)
			}
			var m map[string]any
			if err := json.Unmarshal(line, &m); err != nil {
				t.Fatalf("reply %q: %v", line, err)
			}
			if m["id"] == id {
				return m
			}
		}
	}
	const meta = `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"c","version":"1"}}`
	discover := `{"jsonrpc":"2.0","id":0,"method":"server/discover","params":{` + meta + `}}`

	t.Run("then initialize", func(t *testing.T) {
		r, w := serve()
		send(w, discover)
		if m := reply(r, 0); m["result"] == nil {
			t.Fatalf("server/discover: %v, want a result", m)
		}
		send(w, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}`)
		m := reply(r, 1)
		res, _ := m["result"].(map[string]any)
		if res == nil || res["protocolVersion"] != "2025-11-25" {
			t.Fatalf("initialize after server/discover: %v, want the session initialized at 2025-11-25", m)
		}
		send(w, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
		send(w, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`)
		if m := reply(r, 2); m["result"] == nil {
			t.Fatalf("tools/list after the fallback: %v", m)
		}
	})
	t.Run("then the new protocol", func(t *testing.T) {
		r, w := serve()
		send(w, discover)
		if m := reply(r, 0); m["result"] == nil {
			t.Fatalf("server/discover: %v, want a result", m)
		}
		send(w, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"up.echo","arguments":{"text":"modern"},`+meta+`}}`)
		m := reply(r, 1)
		res, _ := m["result"].(map[string]any)
		if res == nil || !strings.Contains(fmt.Sprint(res["content"]), "echo: modern") {
			t.Fatalf("tools/call in the new protocol after server/discover: %v", m)
		}
	})
}
