package mcpproxy

import (
	"context"
	"errors"
	"strconv"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Tracing (Config.Tracer), after the OpenTelemetry semantic conventions
// for MCP (docs/gen-ai/mcp.md of open-telemetry/semantic-conventions):
//
//   - each tools/call the agent makes is an MCP server span "tools/call
//     {tool}" (kind server) whose parent is the trace context in the call's
//     params._meta (traceparent, tracestate), with the transport's own
//     context, when there is one, as a link; the gateway's spans (decide,
//     record_decision, execute, record_outcome) are its children;
//   - each call forwarded to an upstream is an MCP client span "tools/call
//     {tool}" (kind client), a child of the gateway's execute span, whose
//     context goes in the forwarded call's params._meta as traceparent.
//
// Attributes: mcp.method.name, gen_ai.operation.name (execute_tool),
// gen_ai.tool.name, mcp.session.id, mcp.protocol.version, error.type and
// rpc.response.status_code, network.transport ("pipe" over stdio, "tcp"
// over streamable HTTP) with network.protocol.name "http", and on the
// client span to an HTTP upstream server.address and server.port. Never
// the opt-in gen_ai.tool.call.arguments or gen_ai.tool.call.result, nor
// the rulelock _meta (instruction, reasoning, session).
//
// jsonrpc.request.id is on the server span, carried from the framing
// (requestIDs); not on the client span: the SDK's client assigns the
// forwarded call's id and tells its caller nothing of it (it would take
// wrapping the SDK's connections, whose optional interfaces a wrapper
// hides). Not recorded either: client.address and client.port, since one
// streamable HTTP session's calls arrive over many HTTP requests, and the
// handler sees none of them.
//
// On a server span, the JSON-RPC codes the conventions list as the
// caller's mistakes (-32700, -32600, -32601, -32602, -32002: a malformed
// call, an unknown tool) are recorded in rpc.response.status_code but are
// not the span's error; any other code is.

// traceContext reads and writes traceparent and tracestate, not baggage.
var traceContext = propagation.TraceContext{}

// metaCarrier is an MCP _meta as a carrier of W3C trace context.
type metaCarrier mcp.Meta

func (m metaCarrier) Get(key string) string {
	s, _ := m[key].(string)
	return s
}

func (m metaCarrier) Set(key, value string) { m[key] = value }

func (m metaCarrier) Keys() []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// startCall starts the MCP server span of the tools/call req of agent, or
// returns ctx and nil when tracing is off.
func (p *Proxy) startCall(ctx context.Context, agent string, req *mcp.CallToolRequest) (context.Context, trace.Span) {
	if p.cfg.Tracer == nil {
		return ctx, nil
	}
	id := p.reqIDs.take(agent, req) // taken whether the span records or not
	parent := ctx
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer)}
	name := "tools/call"
	var tool string
	if req.Params != nil {
		if req.Params.Meta != nil {
			parent = traceContext.Extract(ctx, metaCarrier(req.Params.Meta))
		}
		// The tool's name as the agent sees it, in the span's name only
		// when it is one the agent may see (an agent's made-up names would
		// make one span name each).
		if t, _ := p.lookupExposed(req.Params.Name); t != nil {
			tool = req.Params.Name
			name += " " + tool
		}
	}
	ambient := trace.SpanContextFromContext(ctx)
	if ambient.IsValid() && !ambient.Equal(trace.SpanContextFromContext(parent)) {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: ambient}))
	}
	ctx, sp := p.cfg.Tracer.Start(parent, name, opts...)
	if sp.IsRecording() {
		kv := []attribute.KeyValue{
			attribute.String("mcp.method.name", "tools/call"),
			attribute.String("gen_ai.operation.name", "execute_tool"),
			attribute.String("mcp.protocol.version", requestVersion(req)),
		}
		if tool != "" {
			kv = append(kv, attribute.String("gen_ai.tool.name", tool))
		}
		if req.Session != nil && req.Session.ID() != "" {
			kv = append(kv, attribute.String("mcp.session.id", req.Session.ID()))
		}
		if id != "" {
			kv = append(kv, attribute.String("jsonrpc.request.id", id))
		}
		if req.Extra != nil { // only the streamable HTTP transport sets it
			kv = append(kv, attribute.String("network.transport", "tcp"), attribute.String("network.protocol.name", "http"))
		} else { // ServeStdio
			kv = append(kv, attribute.String("network.transport", "pipe"))
		}
		sp.SetAttributes(kv...)
	}
	return ctx, sp
}

// endCall ends an MCP span with the call's result or JSON-RPC error. On a
// server span (server set) the codes of a caller's mistake are not the
// span's error (callerError).
func endCall(sp trace.Span, server bool, res mcp.Result, err error) {
	if sp == nil {
		return
	}
	if sp.IsRecording() {
		var je *jsonrpc.Error
		switch {
		case errors.As(err, &je) && server && callerError(je.Code):
			sp.SetAttributes(attribute.String("rpc.response.status_code", strconv.FormatInt(je.Code, 10)))
		case errors.As(err, &je):
			code := strconv.FormatInt(je.Code, 10)
			sp.SetAttributes(attribute.String("error.type", code), attribute.String("rpc.response.status_code", code))
			// The code, not the message the conventions suggest: a
			// message may quote the call's arguments or the tool's name.
			sp.SetStatus(codes.Error, code)
		case err != nil:
			sp.SetAttributes(attribute.String("error.type", "_OTHER"))
			sp.SetStatus(codes.Error, "")
		default:
			if r, ok := res.(*mcp.CallToolResult); ok && r != nil && r.IsError {
				sp.SetAttributes(attribute.String("error.type", "tool_error"))
				sp.SetStatus(codes.Error, "")
			}
		}
	}
	sp.End()
}

// callerError reports whether a JSON-RPC error code is, by the MCP
// conventions for server spans, the caller's mistake rather than an error.
func callerError(code int64) bool {
	switch code {
	case jsonrpc.CodeParseError, jsonrpc.CodeInvalidRequest, jsonrpc.CodeMethodNotFound, jsonrpc.CodeInvalidParams, -32002:
		return true
	}
	return false
}

// startForward starts the MCP client span of a call forwarded to upstream
// u as tool, and puts its context in params' _meta (traceparent only: the
// agent's tracestate is the agent's words).
func (p *Proxy) startForward(ctx context.Context, u *upstream, tool string, params *mcp.CallToolParams) (context.Context, trace.Span) {
	if p.cfg.Tracer == nil {
		return ctx, nil
	}
	ctx, sp := p.cfg.Tracer.Start(ctx, "tools/call "+tool, trace.WithSpanKind(trace.SpanKindClient))
	if sp.IsRecording() {
		sp.SetAttributes(attribute.String("mcp.method.name", "tools/call"),
			attribute.String("gen_ai.operation.name", "execute_tool"), attribute.String("gen_ai.tool.name", tool))
		sp.SetAttributes(u.spanAttributes()...)
	}
	if sc := sp.SpanContext(); sc.IsValid() {
		if params.Meta == nil {
			params.Meta = mcp.Meta{}
		}
		traceContext.Inject(trace.ContextWithSpanContext(context.Background(), sc.WithTraceState(trace.TraceState{})), metaCarrier(params.Meta))
	}
	return ctx, sp
}
