package mcpproxy_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/policy"
)

// sendSchema is the input schema of the upstream's send tool: every kind
// of constraint the proxy must hold arguments to.
const sendSchema = `{"type":"object",
 "properties":{
  "to":{"type":"string","pattern":"^[a-z0-9.]+@example\\.com$"},
  "subject":{"type":"string","maxLength":200},
  "priority":{"type":"string","enum":["low","normal","high"]},
  "count":{"type":"integer","minimum":1,"maximum":10}},
 "required":["to","subject"],
 "additionalProperties":false}`

// sendPolicy allows send, but checks count: a count of the wrong type is
// an evaluation error, which the policy would turn into a denial.
const sendPolicy = testPolicy + `
rule "Send" {
  precondition: action.type == "up.send"
  allow
}

rule "FewCopies" {
  precondition: action.type == "up.send"
  condition: !has(action.count) || action.count <= 5
  deny: "at most 5 copies"
}
`

// withSend adds the send tool to the fixture's upstream and waits until the
// proxy has pinned it.
func withSend(t *testing.T, f *fixture) {
	t.Helper()
	f.up.srv.AddTool(&mcp.Tool{Name: "send", Description: "Sends a message.", InputSchema: json.RawMessage(sendSchema)},
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "sent"}}}, nil
		})
	waitTool(t, f, "up.send")
}

// waitTool waits until the proxy has pinned and accepted the named tool.
func waitTool(t *testing.T, f *fixture, name string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !hasTool(f, name) {
		if time.Now().After(deadline) {
			t.Fatalf("the proxy did not pin %s", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// badSends are arguments the schema refuses.
var badSends = map[string]map[string]any{
	"subject as an array":      {"to": "a@example.com", "subject": []any{"x", "y"}},
	"subject over maxLength":   {"to": "a@example.com", "subject": strings.Repeat("s", 5200)},
	"to not matching pattern":  {"to": "a@evil.test", "subject": "hi"},
	"priority not in the enum": {"to": "a@example.com", "subject": "hi", "priority": "urgent"},
	"count below minimum":      {"to": "a@example.com", "subject": "hi", "count": 0},
	"count above maximum":      {"to": "a@example.com", "subject": "hi", "count": 11},
	"count not an integer":     {"to": "a@example.com", "subject": "hi", "count": 2.5},
	"policy field as a string": {"to": "a@example.com", "subject": "hi", "count": "7"},
	"required to missing":      {"subject": "hi"},
	"null subject":             {"to": "a@example.com", "subject": nil},
}

// checkSchemaRefusals calls send with each bad argument set on cs and
// checks each is -32602, logged as a bad_arguments refusal of agent-a, and
// never forwarded; then that a valid call goes through.
func checkSchemaRefusals(t *testing.T, f *fixture, cs *mcp.ClientSession) {
	t.Helper()
	ctx := context.Background()
	for name, args := range badSends {
		before := len(f.entries(t))
		_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up.send", Arguments: args})
		var je *jsonrpc.Error
		if !errors.As(err, &je) || je.Code != jsonrpc.CodeInvalidParams {
			t.Errorf("%s: err = %v, want invalid params (-32602)", name, err)
			continue
		}
		if len(je.Message) > 1000 {
			t.Errorf("%s: the error is %d bytes long", name, len(je.Message))
		}
		var logged bool
		for _, e := range f.entries(t)[before:] {
			logged = logged || e.Kind == audit.KindDecision && e.Agent == "agent-a" && e.Decision == "deny" &&
				strings.HasPrefix(e.Message, `bad_arguments: tools/call "up.send"`)
		}
		if !logged {
			t.Errorf("%s: no bad_arguments refusal of agent-a in the log", name)
		}
	}
	if got := f.up.received(); len(got) != 0 {
		t.Fatalf("upstream received %q", got)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up.send", Arguments: map[string]any{"to": "a@example.com", "subject": "hi", "priority": "low", "count": 3}})
	if err != nil || res.IsError || text(res) != "sent" {
		t.Fatalf("a valid call: %v %+v", err, res)
	}
	// The policy still judges what the schema lets through.
	res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "up.send", Arguments: map[string]any{"to": "a@example.com", "subject": "hi", "count": 7}})
	if err != nil || !res.IsError || !strings.Contains(text(res), "at most 5 copies") {
		t.Fatalf("a call the policy denies: %v %+v", err, res)
	}
	if got := f.up.received(); len(got) != 1 {
		t.Fatalf("upstream received %q, want the valid call", got)
	}
}

// TestArgumentsValidatedHTTP: on /mcp, arguments the pinned input schema
// refuses are -32602 and logged, never forwarded, never a policy denial.
func TestArgumentsValidatedHTTP(t *testing.T) {
	f := newFixture(t, sendPolicy)
	withSend(t, f)
	checkSchemaRefusals(t, f, f.connect(t, "token-a", nil, nil))
}

// TestArgumentsValidatedStdio: the same on stdio.
func TestArgumentsValidatedStdio(t *testing.T) {
	f := newFixture(t, sendPolicy)
	withSend(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	agentOut, proxyIn := io.Pipe()
	proxyOut, agentIn := io.Pipe()
	go f.proxy.ServeStdio(ctx, policy.Agent{ID: "agent-a", Roles: []string{"bot"}}, agentOut, agentIn)
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil).Connect(ctx, &mcp.IOTransport{Reader: proxyOut, Writer: proxyIn}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	checkSchemaRefusals(t, f, cs)
}

// TestUncompilableSchemaRefusesCalls: a tool whose input schema the
// validator cannot use (here a remote $ref, which is never fetched) is
// refused at every call rather than forwarded unchecked.
func TestUncompilableSchemaRefusesCalls(t *testing.T) {
	f := newFixture(t, sendPolicy)
	f.up.srv.AddTool(&mcp.Tool{Name: "send", Description: "Sends a message.",
		InputSchema: json.RawMessage(`{"type":"object","properties":{"to":{"$ref":"https://schemas.example/to.json"}}}`)},
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "sent"}}}, nil
		})
	waitTool(t, f, "up.send")
	cs := f.connect(t, "token-a", nil, nil)
	_, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "up.send", Arguments: map[string]any{"to": "a@example.com"}})
	var je *jsonrpc.Error
	if !errors.As(err, &je) || je.Code != jsonrpc.CodeInvalidParams || !strings.Contains(je.Message, "cannot be used to check arguments") {
		t.Fatalf("err = %v, want invalid params naming the schema", err)
	}
	if got := f.up.received(); len(got) != 0 {
		t.Fatalf("upstream received %q", got)
	}
}

func hasTool(f *fixture, name string) bool {
	for _, ti := range f.proxy.Tools() {
		if ti.Name == name && ti.Accepted {
			return true
		}
	}
	return false
}
