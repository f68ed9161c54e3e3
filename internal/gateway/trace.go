package gateway

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/tracing"
	"github.com/rulelock/rulelock/policy"
)

// Tracing (Config.Tracer). Every helper here costs a nil check when
// tracing is off, and builds attributes only for a span that records.

// span starts span name under ctx (tracing.Start with the gateway's tracer).
func (g *Gateway) span(ctx context.Context, name string) (context.Context, trace.Span) {
	return tracing.Start(ctx, g.cfg.Tracer, name)
}

// annotate puts the request id and what was decided on the caller's span
// (the HTTP API's server span, the MCP proxy's tools/call span).
func (g *Gateway) annotate(ctx context.Context, id string, req *Request, d *policy.Decision) {
	if g.cfg.Tracer == nil {
		return
	}
	if sp := trace.SpanFromContext(ctx); sp.IsRecording() {
		sp.SetAttributes(decisionAttributes(id, req, d)...)
	}
}

// decisionAttributes are the attributes of a decision: identifiers and
// verdicts, never the action's fields, the instruction or the reasoning.
func decisionAttributes(id string, req *Request, d *policy.Decision) []attribute.KeyValue {
	kv := []attribute.KeyValue{tracing.RequestID.String(id)}
	if req != nil {
		kv = append(kv, tracing.Agent.String(req.Agent.ID))
		if req.Action.Type != "" {
			kv = append(kv, tracing.ActionType.String(req.Action.Type))
		}
	}
	if d == nil {
		return kv
	}
	rules := make([]string, len(d.Rules))
	for i, r := range d.Rules {
		rules[i] = r.Name
	}
	return append(kv, tracing.Decision.String(string(d.Decision)), tracing.Reason.String(d.Reason),
		tracing.Rules.StringSlice(rules), tracing.Policy.String(d.Policy))
}

// endDecide ends a decide span with the decision made.
func endDecide(sp trace.Span, id string, req *Request, rec *record, err error) {
	if sp.IsRecording() {
		if rec != nil {
			sp.SetAttributes(decisionAttributes(id, req, rec.Decision)...)
		}
		fail(sp, err)
	}
	sp.End()
}

// endRecord ends a record_decision or record_outcome span with where the
// entry went.
func endRecord(sp trace.Span, r audit.Receipt, err error) {
	if sp.IsRecording() {
		if err == nil {
			sp.SetAttributes(tracing.LogIndex.Int64(r.Index))
		}
		fail(sp, err)
	}
	sp.End()
}

// endExecute ends an execute span with the outcome's status (not its
// body or error text: they are the upstream's words).
func endExecute(sp trace.Span, out Outcome) {
	if sp.IsRecording() {
		sp.SetAttributes(tracing.OutcomeStatus.String(string(out.Status)))
		if out.HTTPStatus != 0 {
			sp.SetAttributes(attribute.Int("http.response.status_code", out.HTTPStatus))
		}
		if out.Status != StatusOK {
			sp.SetStatus(codes.Error, string(out.Status))
		}
	}
	sp.End()
}

// fail marks sp failed when err is not nil, with a code: the error's text
// may carry what an error from below quoted.
func fail(sp trace.Span, err error) {
	switch {
	case err == nil:
	case errors.Is(err, ErrUnavailable):
		sp.SetStatus(codes.Error, "unavailable")
	default:
		sp.SetStatus(codes.Error, "error")
	}
}

// startWait starts the approval_wait span of request id, parked: it ends
// when the request is final (endWait), and the re-decision and execution
// at quorum are its children, in the requester's trace.
func (g *Gateway) startWait(ctx context.Context, id string) {
	if g.cfg.Tracer == nil {
		return
	}
	_, sp := g.cfg.Tracer.Start(ctx, tracing.SpanApprovalWait)
	if !sp.IsRecording() {
		return
	}
	sp.SetAttributes(tracing.RequestID.String(id))
	g.waits.Store(id, sp)
}

// startRestoredWait starts the approval_wait span of request id, parked
// at parked by agent before the gateway restarted. The requester's trace
// is gone with the process, and its id is not in the log (traces are not
// the record, and the log's bytes do not depend on whether tracing is
// on), so it is the root of a new trace, started at the parked decision's
// time so that its length is the whole wait, and marked restored. The
// re-decision and execution at quorum are its children, as before a
// restart; the approver's span that completes the quorum is linked.
func (g *Gateway) startRestoredWait(id string, rec *record) {
	if g.cfg.Tracer == nil {
		return
	}
	_, sp := g.cfg.Tracer.Start(context.Background(), tracing.SpanApprovalWait, trace.WithNewRoot(), trace.WithTimestamp(rec.Time))
	if !sp.IsRecording() {
		return
	}
	sp.SetAttributes(tracing.RequestID.String(id), tracing.Agent.String(rec.Agent), tracing.ActionType.String(rec.Action.Type), tracing.Restored.Bool(true))
	g.waits.Store(id, sp)
}

// waitContext is ctx (the approver's request that completed the quorum)
// with request id's approval_wait span as the current span, so that what
// follows is in the requester's trace; the approver's span is linked.
func (g *Gateway) waitContext(ctx context.Context, id string) context.Context {
	if g.cfg.Tracer == nil {
		return ctx
	}
	v, ok := g.waits.Load(id)
	if !ok {
		return ctx
	}
	sp := v.(trace.Span)
	if caller := trace.SpanContextFromContext(ctx); caller.IsValid() {
		sp.AddLink(trace.Link{SpanContext: caller})
	}
	return trace.ContextWithSpan(ctx, sp)
}

// endWait ends request id's approval_wait span, once final.
func (g *Gateway) endWait(id string) {
	if g.cfg.Tracer == nil {
		return
	}
	v, ok := g.waits.LoadAndDelete(id)
	if !ok {
		return
	}
	sp := v.(trace.Span)
	if g.approvals != nil {
		if ar, err := g.approvals.m.Get(id); err == nil {
			sp.SetAttributes(tracing.ApprovalState.String(string(ar.State)))
			if ar.State != approval.Executed {
				sp.SetStatus(codes.Error, string(ar.State))
			}
		}
	}
	sp.End()
}
