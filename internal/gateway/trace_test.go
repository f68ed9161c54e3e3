package gateway_test

import (
	"context"
	"net/http"
	"slices"
	"testing"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
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
