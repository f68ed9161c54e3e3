package mcpproxy_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/tracing"
	"github.com/rulelock/rulelock/internal/tracing/tracingtest"
	"github.com/rulelock/rulelock/policy"
)

// TestMCPSpans: a tools/call whose params._meta carries a traceparent is
// an MCP server span "tools/call {tool}" under it, with the gateway's
// spans as children and an MCP client span "tools/call {upstream tool}"
// under the execute span, whose context reaches the upstream in the
// forwarded call's _meta. A call parked for approval has an approval_wait
// span that holds the re-decision and the execution, linked to the
// approver's span. Neither the arguments nor the instruction is exported.
func TestMCPSpans(t *testing.T) {
	recv := tracingtest.NewReceiver(t)
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(recv.URL+"/v1/traces"))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp))
	tracer := tp.Tracer(tracing.ScopeName)
	f := newFixtureTraced(t, testPolicy, nil, tracer)
	cs := f.connect(t, "token-a", nil, nil)
	ctx := context.Background()

	const (
		instruction = "INSTRUCTION-echo-the-word"
		argument    = "ARGUMENT-hello-world"
		agentTrace  = "4bf92f3577b34da6a3ce929d0e0e4736"
		agentSpan   = "00f067aa0ba902b7"
		agentTrace2 = "5cf92f3577b34da6a3ce929d0e0e4737"
	)
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up.echo", Arguments: map[string]any{"text": argument},
		Meta: mcp.Meta{"traceparent": "00-" + agentTrace + "-" + agentSpan + "-01", "tracestate": "agent=smuggled", "io.rulelock/instruction": instruction}})
	if err != nil || res.IsError {
		t.Fatalf("call: %v %+v", err, res)
	}

	// A call to a tool that does not exist, named with the argument: the
	// refusal's message quotes the name, the span does not.
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: argument, Arguments: map[string]any{}}); err == nil {
		t.Fatal("a call to an unknown tool was not refused")
	}

	// A parked call, approved by two approvers; the second one's request
	// completes the quorum and is linked.
	done := make(chan error, 1)
	go func() {
		_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "up.publish", Arguments: map[string]any{"text": argument},
			Meta: mcp.Meta{"traceparent": "00-" + agentTrace2 + "-" + agentSpan + "-01"}})
		done <- err
	}()
	var pending []string
	for deadline := time.Now().Add(10 * time.Second); len(pending) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the call was not parked")
		}
		for _, p := range f.gw.Pending() {
			pending = append(pending, p.Request.ID)
		}
	}
	r := f.gw.Pending()[0].Request
	var approverSpan []byte
	for _, who := range []string{"alice", "bob"} {
		signed, err := approval.Sign(r.Statement(approval.Approve, ""), f.signers[who])
		if err != nil {
			t.Fatal(err)
		}
		actx, sp := tracer.Start(ctx, "approver "+who)
		if _, err := f.gw.Approve(actx, who, r.ID, signed); err != nil {
			t.Fatalf("%s approves: %v", who, err)
		}
		sp.End()
		sid := sp.SpanContext().SpanID()
		approverSpan = sid[:]
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := tp.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	st, raw := recv.Received()
	for _, secret := range []string{instruction, argument} {
		if strings.Contains(string(raw), secret) {
			t.Errorf("the exported spans contain %q", secret)
		}
	}

	// The allowed call.
	server := st.Named(t, agentTrace, "tools/call up.echo")
	if got := hex.EncodeToString(server.ParentSpanId); got != agentSpan || server.Kind != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("server span: parent %s kind %v, want the _meta's span %s and server", got, server.Kind, agentSpan)
	}
	for k, v := range map[string]string{"mcp.method.name": "tools/call", "gen_ai.tool.name": "up.echo", "gen_ai.operation.name": "execute_tool",
		"rulelock.decision": "allow", "rulelock.rules": "Echo", "rulelock.action.type": "up.echo",
		"network.transport": "tcp", "network.protocol.name": "http", "mcp.protocol.version": cs.InitializeResult().ProtocolVersion} {
		if got := tracingtest.Attr(server, k); got != v {
			t.Errorf("server span %s = %q, want %q", k, got, v)
		}
	}
	if tracingtest.Attr(server, "mcp.session.id") == "" || tracingtest.Attr(server, "rulelock.request.id") == "" {
		t.Errorf("server span without mcp.session.id or rulelock.request.id")
	}
	if id, err := strconv.Atoi(tracingtest.Attr(server, "jsonrpc.request.id")); err != nil || id < 1 {
		t.Errorf("server span's jsonrpc.request.id = %q, want the SDK client's id", tracingtest.Attr(server, "jsonrpc.request.id"))
	}
	want := []string{"rulelock.decide", "rulelock.record_decision", "rulelock.execute", "rulelock.record_outcome"}
	if got := st.Children(server); !slices.Equal(got, want) {
		t.Errorf("server span's children = %v, want %v", got, want)
	}
	exec := st.Named(t, agentTrace, "rulelock.execute")
	if got := st.Children(exec); !slices.Equal(got, []string{"tools/call echo"}) {
		t.Errorf("execute span's children = %v, want the MCP client span", got)
	}
	client := st.Named(t, agentTrace, "tools/call echo")
	if client.Kind != tracepb.Span_SPAN_KIND_CLIENT || tracingtest.Attr(client, "gen_ai.tool.name") != "echo" {
		t.Errorf("client span: kind %v, tool %q", client.Kind, tracingtest.Attr(client, "gen_ai.tool.name"))
	}
	upHost, upPort, _ := net.SplitHostPort(strings.TrimPrefix(f.up.http.URL, "http://"))
	for k, v := range map[string]string{"mcp.method.name": "tools/call", "gen_ai.operation.name": "execute_tool", "network.transport": "tcp",
		"network.protocol.name": "http", "server.address": upHost, "server.port": upPort} {
		if got := tracingtest.Attr(client, k); got != v {
			t.Errorf("client span %s = %q, want %q", k, got, v)
		}
	}
	if tracingtest.Attr(client, "mcp.session.id") == "" || tracingtest.Attr(client, "mcp.protocol.version") == "" {
		t.Errorf("client span without the upstream session's mcp.session.id or mcp.protocol.version")
	}
	// The unknown tool: a caller's mistake (-32602), recorded, not the span's error.
	var unknown *tracepb.Span
	for _, sp := range st.All {
		if sp.Name == "tools/call" && sp.Kind == tracepb.Span_SPAN_KIND_SERVER {
			unknown = sp
		}
	}
	if unknown == nil || tracingtest.Attr(unknown, "rpc.response.status_code") != "-32602" || tracingtest.Attr(unknown, "error.type") != "" ||
		unknown.Status.GetCode() == tracepb.Status_STATUS_CODE_ERROR {
		t.Errorf("unknown tool's span: %v, want status code -32602 and no error", unknown)
	}
	// The upstream got the client span's context in _meta, and no tracestate.
	var meta map[string]any
	calls := f.up.received()
	if len(calls) != 2 {
		t.Fatalf("upstream received %q", calls)
	}
	// "tool arguments _meta", neither JSON with a space
	if parts := strings.SplitN(calls[0], " ", 3); len(parts) != 3 || json.Unmarshal([]byte(parts[2]), &meta) != nil {
		t.Fatalf("upstream received %q", calls[0])
	}
	if got, want := meta["traceparent"], "00-"+agentTrace+"-"+hex.EncodeToString(client.SpanId)+"-01"; got != want {
		t.Errorf("upstream's _meta traceparent = %v, want %s", got, want)
	}
	if _, ok := meta["tracestate"]; ok {
		t.Errorf("the agent's tracestate reached the upstream: %v", meta)
	}

	// The approved call.
	server = st.Named(t, agentTrace2, "tools/call up.publish")
	if got := tracingtest.Attr(server, "rulelock.decision"); got != "require_approval" {
		t.Errorf("parked call's decision = %q", got)
	}
	want = []string{"rulelock.decide", "rulelock.record_decision", "rulelock.approval_wait"}
	if got := st.Children(server); !slices.Equal(got, want) {
		t.Errorf("parked call's children = %v, want %v", got, want)
	}
	wait := st.Named(t, agentTrace2, "rulelock.approval_wait")
	want = []string{"rulelock.decide", "rulelock.record_decision", "rulelock.execute", "rulelock.record_outcome"}
	if got := st.Children(wait); !slices.Equal(got, want) {
		t.Errorf("approval_wait's children = %v, want %v", got, want)
	}
	if got := tracingtest.Attr(wait, "rulelock.approval.state"); got != "executed" {
		t.Errorf("approval_wait's state = %q", got)
	}
	if len(wait.Links) != 1 || string(wait.Links[0].SpanId) != string(approverSpan) {
		t.Errorf("approval_wait's links = %v, want the approver's span", wait.Links)
	}
}

// TestMCPSpansStdio: over stdio the MCP server span says network.transport
// "pipe" and no HTTP protocol, and names the call's JSON-RPC id as the
// agent wrote it (a string, a number), two identical calls each their own.
func TestMCPSpansStdio(t *testing.T) {
	recv := tracingtest.NewReceiver(t)
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(recv.URL+"/v1/traces"))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp))
	f := newFixtureTraced(t, testPolicy, nil, tp.Tracer(tracing.ScopeName))
	s := startRawStdio(t, f, policy.Agent{ID: "agent-a", Roles: []string{"bot"}})
	s.initialize(t, "2025-06-18")
	traces := map[string]string{`"call-7"`: "6cf92f3577b34da6a3ce929d0e0e4738", `8`: "7cf92f3577b34da6a3ce929d0e0e4739"}
	for _, id := range []string{`"call-7"`, `8`} {
		s.send(t, `{"jsonrpc":"2.0","id":`+id+`,"method":"tools/call","params":{"name":"up.echo","arguments":{"text":"same"},"_meta":{"traceparent":"00-`+traces[id]+`-00f067aa0ba902b7-01"}}}`+"\n")
		if l := s.next(t); !strings.Contains(l, `"id":`+id) || !strings.Contains(l, "echo: same") {
			t.Fatalf("call %s: %s", id, l)
		}
	}
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	st, _ := recv.Received()
	for id, tid := range traces {
		server := st.Named(t, tid, "tools/call up.echo")
		want := map[string]string{"network.transport": "pipe", "network.protocol.name": "", "mcp.method.name": "tools/call",
			"jsonrpc.request.id": strings.Trim(id, `"`), "mcp.protocol.version": "2025-06-18"}
		for k, v := range want {
			if got := tracingtest.Attr(server, k); got != v {
				t.Errorf("call %s: %s = %q, want %q", id, k, got, v)
			}
		}
	}
}
