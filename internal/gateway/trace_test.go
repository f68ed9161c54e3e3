package gateway_test

import (
	"context"
	"encoding/hex"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/tracing"
	"github.com/rulelock/rulelock/internal/tracing/tracingtest"
	"github.com/rulelock/rulelock/policy"
)

// TestApprovalWaitSpanEnds: a parked request's approval_wait span ends
// when an approver rejects it, with the state and an error status, and
// nothing is executed under it.
func TestApprovalWaitSpanEnds(t *testing.T) {
	recv := tracingtest.NewReceiver(t)
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(recv.URL+"/v1/traces"))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp))
	tracer := tp.Tracer(tracing.ScopeName)

	l, err := audit.Open(t.TempDir(), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p, err := policy.FromSources([]policy.Source{{Name: "t.rules", Data: []byte(testPolicy)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	up := newUpstream(t, l)
	trade := &gateway.HTTPExecutor{Method: "POST", URL: up.srv.URL + "/trades", Headers: http.Header{"Authorization": {"Bearer upstream-secret"}}}
	signers, reg := newApprovers(t)
	gw, err := gateway.New(gateway.Config{Policy: p, Log: l, Approvers: reg, Executors: map[string]gateway.Executor{"trade": trade}, Tracer: tracer})
	if err != nil {
		t.Fatal(err)
	}

	ctx, root := tracer.Start(context.Background(), "agent request")
	res, err := gw.Submit(ctx, &gateway.Request{Agent: agent42, Session: "s", Action: action(t, `{"type": "trade", "amount": 5000}`)}, true)
	root.End()
	if err != nil || res.Approval == nil {
		t.Fatalf("submit: %+v %v, want a parked request", res, err)
	}
	signed, err := approval.Sign(res.Approval.Statement(approval.Reject, "not today"), signers["alice"])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Reject(context.Background(), "alice", res.RequestID, signed); err != nil {
		t.Fatal(err)
	}
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	st, _ := recv.Received()
	if len(st.Traces) != 1 {
		t.Fatalf("got %d traces, want 1: %v", len(st.Traces), tracingtest.Names(st.All))
	}
	var tid string
	for tid = range st.Traces {
	}
	agent := st.Named(t, tid, "agent request")
	want := []string{tracing.SpanDecide, tracing.SpanRecordDecision, tracing.SpanApprovalWait}
	if got := st.Children(agent); !slices.Equal(got, want) {
		t.Errorf("spans under the request = %v, want %v", got, want)
	}
	if got := tracingtest.Attr(agent, "rulelock.request.id"); got != res.RequestID {
		t.Errorf("the caller's span names request %q, want %q", got, res.RequestID)
	}
	wait := st.Named(t, tid, tracing.SpanApprovalWait)
	if got := tracingtest.Attr(wait, "rulelock.approval.state"); got != "rejected" {
		t.Errorf("approval_wait's state = %q, want rejected", got)
	}
	if wait.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR {
		t.Errorf("approval_wait's status = %v, want an error", wait.Status)
	}
	if got := st.Children(wait); len(got) != 0 {
		t.Errorf("spans under a rejected request's wait: %v", got)
	}
}

// TestApprovalWaitSpanAfterRestart: a request parked before a restart and
// approved after it still gets its approval_wait span, with the
// re-decision and the execution under it: the root of a new trace (the
// first trace's id is not in the log), started at the parked decision's
// time, marked restored, and linked to the approver's span that completed
// the quorum. The upstream gets that trace's traceparent.
func TestApprovalWaitSpanAfterRestart(t *testing.T) {
	recv := tracingtest.NewReceiver(t)
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(recv.URL+"/v1/traces"))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp))
	tracer := tp.Tracer(tracing.ScopeName)

	l, err := audit.Open(t.TempDir(), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p, err := policy.FromSources([]policy.Source{{Name: "t.rules", Data: []byte(testPolicy)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	up := newUpstream(t, l)
	trade := &gateway.HTTPExecutor{Method: "POST", URL: up.srv.URL + "/trades", Headers: http.Header{"Authorization": {"Bearer upstream-secret"}}}
	signers, reg := newApprovers(t)
	cfg := gateway.Config{Policy: p, Log: l, Approvers: reg, Executors: map[string]gateway.Executor{"trade": trade}, Tracer: tracer}
	before, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, root := tracer.Start(context.Background(), "agent request")
	res, err := before.Submit(ctx, &gateway.Request{Agent: agent42, Session: "s", Action: action(t, `{"type": "trade", "amount": 5000}`)}, true)
	root.End()
	if err != nil || res.Approval == nil {
		t.Fatalf("submit: %+v %v, want a parked request", res, err)
	}
	parkedAt := res.Approval.Created

	// The restart: a new gateway over the same log.
	after, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := after.Rebuild(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	var approver trace.SpanContext
	for _, who := range []string{"alice", "bob"} {
		signed, err := approval.Sign(res.Approval.Statement(approval.Approve, ""), signers[who])
		if err != nil {
			t.Fatal(err)
		}
		actx, sp := tracer.Start(context.Background(), "approver "+who)
		out, err := after.Approve(actx, who, res.RequestID, signed)
		sp.End()
		if err != nil {
			t.Fatal(err)
		}
		approver = sp.SpanContext()
		if who == "bob" && (out.Result == nil || out.Result.Decision.Decision != "approved") {
			t.Fatalf("after the quorum: %+v, want approved", out.Result)
		}
	}
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	st, _ := recv.Received()
	var waits []*tracepb.Span
	for _, sp := range st.All {
		if sp.Name == tracing.SpanApprovalWait && tracingtest.Attr(sp, "rulelock.approval.restored") == "true" {
			waits = append(waits, sp)
		}
	}
	if len(waits) != 1 {
		t.Fatalf("%d restored approval_wait spans, want 1: %v", len(waits), tracingtest.Names(st.All))
	}
	wait := waits[0]
	tid := hex.EncodeToString(wait.TraceId)
	if tid == root.SpanContext().TraceID().String() || len(wait.ParentSpanId) != 0 {
		t.Errorf("restored wait: trace %s parent %x, want the root of a new trace", tid, wait.ParentSpanId)
	}
	if got := time.Unix(0, int64(wait.StartTimeUnixNano)); !got.Equal(parkedAt) {
		t.Errorf("restored wait starts at %v, want the parked decision's time %v", got, parkedAt)
	}
	for k, v := range map[string]string{"rulelock.request.id": res.RequestID, "rulelock.agent.id": agent42.ID, "rulelock.action.type": "trade", "rulelock.approval.state": "executed"} {
		if got := tracingtest.Attr(wait, k); got != v {
			t.Errorf("restored wait %s = %q, want %q", k, got, v)
		}
	}
	want := []string{tracing.SpanDecide, tracing.SpanRecordDecision, tracing.SpanExecute, tracing.SpanRecordOutcome}
	if got := st.Children(wait); !slices.Equal(got, want) {
		t.Errorf("spans under the restored wait = %v, want %v", got, want)
	}
	if len(wait.Links) != 1 || string(wait.Links[0].SpanId) != string(approverSpanID(approver)) {
		t.Errorf("restored wait's links = %v, want the approver's span", wait.Links)
	}
	exec := st.Named(t, tid, tracing.SpanExecute)
	if got := up.traceparents(); len(got) != 1 || !strings.HasPrefix(got[0], "00-"+tid+"-"+hex.EncodeToString(exec.SpanId)) {
		t.Errorf("upstream traceparents %v, want the execute span of trace %s", got, tid)
	}
}

func approverSpanID(sc trace.SpanContext) []byte {
	id := sc.SpanID()
	return id[:]
}
