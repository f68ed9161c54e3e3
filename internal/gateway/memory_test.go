package gateway_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/strictjson"
	"github.com/rulelock/rulelock/policy"
)

// TestDeniedRequestsDoNotPinMemory: 1,000 denied requests of 64 KiB from
// one agent grow the gateway's live heap by less than 10 MB. A denial adds
// nothing to the ledger (no session.history in the policy), so what the
// gateway keeps of each is its record for GET /v1/requests/{id}; if that
// record held the request's action (56 KiB of memo, twice: the decoded
// fields and the canonical JSON), 1,000 of them would be ~110 MB. The log
// is an in-memory fake that keeps nothing: this is about the gateway's
// memory, not the log's. The heap is measured after a GC, with the gateway
// alive.
func TestDeniedRequestsDoNotPinMemory(t *testing.T) {
	p, err := policy.FromSources([]policy.Source{{Name: "t.rules", Data: []byte(testPolicy)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	gw, err := gateway.New(gateway.Config{Policy: p, Log: &nopRecorder{}, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	const (
		n    = 1000
		memo = 56 << 10 // the action; with instruction and reasoning, 64 KiB a request
		note = 4 << 10
	)
	pad := strings.Repeat("x", memo-8)
	instruction, reasoning := strings.Repeat("i", note), strings.Repeat("r", note-256)
	// Over the DailyCap of 10,000 per payee: denied by a rule that fired.
	submit := func(i int) {
		act := action(t, fmt.Sprintf(`{"type": "transfer", "amount": 20000, "to": "acct-1", "memo": "%08d%s"}`, i, pad))
		res, err := gw.Submit(context.Background(), &gateway.Request{Agent: agent42, Session: "s1", Action: act,
			Instruction: instruction, Reasoning: reasoning}, false)
		if err != nil {
			t.Fatal(err)
		}
		if res.Decision.Decision != policy.Deny {
			t.Fatalf("request %d: got %s, want deny", i, res.Decision.Decision)
		}
		c.advance(time.Second)
	}
	submit(-1) // the agent's state exists before the first measurement
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n {
		submit(i)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(gw)
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("live heap grew by %d bytes (%d per denied request)", grew, grew/n)
	if grew >= 10<<20 {
		t.Errorf("1,000 denied 64 KiB requests grew the live heap by %.1f MB, want < 10 MB", float64(grew)/(1<<20))
	}
}

// TestAwaitingRequestsDoNotPinMemory: 1,000 allowed decide-only requests
// of 64 KiB whose agent never reports grow the live heap by less than
// 10 MB: until a report comes, the gateway reads the action back from the
// log rather than keeping it. A report, when it comes, still has it (the
// postcondition reads action.amount).
func TestAwaitingRequestsDoNotPinMemory(t *testing.T) {
	p, err := policy.FromSources([]policy.Source{{Name: "t.rules", Data: []byte(`policy "t" {
  default: allow
}
rule "Echo" {
  precondition: action.type == "payout"
  postcondition: result.amount == action.amount
  deny: "paid another amount"
}
`)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.Open(t.TempDir(), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	gw, err := gateway.New(gateway.Config{Policy: p, Log: l})
	if err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("x", 64<<10-100)
	submit := func(i int) string {
		res, err := gw.Submit(context.Background(), &gateway.Request{Agent: agent42,
			Action: action(t, fmt.Sprintf(`{"type": "payout", "amount": %d, "memo": %q}`, i, pad))}, true)
		if err != nil || res.Decision.Decision != policy.Allow {
			t.Fatalf("%+v %v", res, err)
		}
		return res.RequestID
	}
	first := submit(7)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range 1000 {
		submit(i)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(gw)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew >= 10<<20 {
		t.Errorf("1,000 awaiting 64 KiB requests grew the live heap by %.1f MB, want < 10 MB", float64(grew)/(1<<20))
	}
	res, err := gw.ReportOutcome(context.Background(), agent42.ID, first, gateway.Outcome{Status: gateway.StatusOK, Body: []byte(`{"amount": 7}`)})
	if err != nil || len(res.Postconditions) != 1 || !res.Postconditions[0].Holds {
		t.Fatalf("report: %+v %v, want the postcondition to hold", res, err)
	}
}

// TestSessionsDoNotPinMemory: 1,000 allowed 64 KiB requests, each in a
// session of its own under a policy that counts per session, grow the live
// heap by less than 10 MB: the ledger keeps a session's id, not the request
// body it was decoded from (a decoded string shares the body's memory).
func TestSessionsDoNotPinMemory(t *testing.T) {
	p, err := policy.FromSources([]policy.Source{{Name: "t.rules", Data: []byte(`policy "t" {
  default: allow
}
rule "FewPerSession" {
  precondition: action.type == "payout"
  condition: session.count("payout", {}, duration("1h")) < 5
  deny: "five a session"
}
`)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{Policy: p, Log: &readableNop{}})
	if err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("x", 64<<10-100)
	submit := func(i int) {
		body := fmt.Sprintf(`{"session": "s-%d", "action": {"type": "payout", "amount": %d, "memo": %q}}`, i, i, pad)
		v, err := strictjson.Decode([]byte(body), strictjson.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		env := v.(map[string]any)
		act, err := policy.NewAction(env["action"])
		if err != nil {
			t.Fatal(err)
		}
		res, err := gw.Submit(context.Background(), &gateway.Request{Agent: agent42, Session: env["session"].(string), Action: act}, false)
		if err != nil || res.Decision.Decision != policy.Allow {
			t.Fatalf("%+v %v", res, err)
		}
	}
	submit(-1)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range 1000 {
		submit(i)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(gw)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew >= 10<<20 {
		t.Errorf("1,000 sessions of 64 KiB requests grew the live heap by %.1f MB, want < 10 MB", float64(grew)/(1<<20))
	}
}
