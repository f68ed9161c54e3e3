package mcpproxy_test

import (
	"bufio"
	"context"
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
