// Package tracing is rulelock's OpenTelemetry tracing: the names of the
// spans the HTTP API, the gateway and the MCP proxy record, the attributes
// they carry, the W3C traceparent passed to upstreams, and the OTLP/HTTP
// exporter configured by the standard OTEL_* environment variables.
//
// One agent request is one trace:
//
//	POST /v1/actions                     (server; parent: the agent's traceparent, if any)
//	├── rulelock.authenticate
//	├── rulelock.decode
//	├── rulelock.decide                  (policy evaluation)
//	├── rulelock.record_decision         (the DECISION entry, durable)
//	├── rulelock.approval_wait           (parked until final; the approver's request is a link)
//	│   ├── rulelock.decide              (the re-decision at quorum)
//	│   ├── rulelock.record_decision
//	│   ├── rulelock.execute …
//	│   └── rulelock.record_outcome
//	├── rulelock.execute                 (the upstream call; the upstream gets traceparent)
//	└── rulelock.record_outcome          (the OUTCOME entry, durable)
//
// Over MCP the root is the MCP server span "tools/call {tool}" of the
// OpenTelemetry MCP semantic conventions, whose parent is the trace context
// in the call's params._meta, and the upstream call is an MCP client span
// that passes its own in the forwarded call's params._meta.
//
// Attributes are identifiers and verdicts only (Attribute keys below): the
// request id, agent id, action type, decision, reason, the names of the
// rules that fired, the policy digest, log indexes and outcome status.
// Never the action's fields, the instruction, the reasoning, bearer tokens,
// rule messages, upstream replies or errors: a trace backend is not the
// audit log, and what it holds is not access-controlled like it.
//
// A nil trace.Tracer means tracing is off: Start then returns the context
// unchanged and a span that records nothing, without allocating, and
// callers build attributes only when span.IsRecording().
package tracing

import (
	"context"
	"encoding/hex"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Span names.
const (
	SpanAuthenticate   = "rulelock.authenticate"
	SpanDecode         = "rulelock.decode"
	SpanDecide         = "rulelock.decide"
	SpanRecordDecision = "rulelock.record_decision"
	SpanApprovalWait   = "rulelock.approval_wait"
	SpanExecute        = "rulelock.execute"
	SpanRecordOutcome  = "rulelock.record_outcome"
)

// Attribute keys of rulelock's own spans.
const (
	RequestID     = attribute.Key("rulelock.request.id")
	Agent         = attribute.Key("rulelock.agent.id")
	ActionType    = attribute.Key("rulelock.action.type")
	Decision      = attribute.Key("rulelock.decision")
	Reason        = attribute.Key("rulelock.reason")
	Rules         = attribute.Key("rulelock.rules") // the names of the rules that fired
	Policy        = attribute.Key("rulelock.policy.digest")
	LogIndex      = attribute.Key("rulelock.log.index")
	OutcomeStatus = attribute.Key("rulelock.outcome.status")
	ApprovalState = attribute.Key("rulelock.approval.state")
	// Restored marks the approval_wait span of a request parked before the
	// gateway restarted: the root of a new trace, started at the parked
	// decision's time (the original trace's id is not in the log).
	Restored = attribute.Key("rulelock.approval.restored")
)

// noSpan is the span of a context without one: it records nothing.
var noSpan = trace.SpanFromContext(context.Background())

// Start starts span name as a child of the span in ctx. With t nil
// (tracing off) it returns ctx and a span that records nothing, at the cost
// of a comparison.
func Start(ctx context.Context, t trace.Tracer, name string) (context.Context, trace.Span) {
	if t == nil {
		return ctx, noSpan
	}
	return t.Start(ctx, name)
}

// Traceparent is the W3C traceparent header of sc ("00-trace-span-flags"),
// "" when sc is not valid. Only traceparent is passed on to upstreams:
// tracestate and baggage came from the agent, and the upstream receives
// nothing from the agent but the canonical action.
func Traceparent(sc trace.SpanContext) string {
	if !sc.IsValid() {
		return ""
	}
	tid, sid := sc.TraceID(), sc.SpanID()
	var b [55]byte
	copy(b[:], "00-")
	hex.Encode(b[3:35], tid[:])
	b[35] = '-'
	hex.Encode(b[36:52], sid[:])
	b[52] = '-'
	hex.Encode(b[53:55], []byte{byte(sc.TraceFlags())})
	return string(b[:])
}
