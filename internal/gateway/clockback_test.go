package gateway_test

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/policy"
)

// quickApproval parks every trade for two treasury approvers within 4 s.
const quickApproval = `policy "q" {
  default: deny
}
rule "Quick" {
  precondition: action.type == "trade"
  condition: false
  require_approval {
    approvers: 2
    groups: ["treasury"]
    within: 4s
  }
}
rule "AllowTrades" {
  precondition: action.type == "trade"
  allow
}
rule "AllowReports" {
  precondition: action.type == "report"
  allow
}
`

// quickGateway is a gateway on dir under quickApproval whose trades are
// counted by executed, with the wall clock now.
func quickGateway(t *testing.T, dir string, reg *approval.Registry, now func() time.Time, executed *atomic.Int64) (*gateway.Gateway, *audit.Log) {
	t.Helper()
	l, err := audit.Open(dir, audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.FromSources([]policy.Source{{Name: "q.rules", Data: []byte(quickApproval)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	trade := gateway.ExecutorFunc(func(context.Context, gateway.Execution) gateway.Outcome {
		executed.Add(1)
		return gateway.Outcome{Status: gateway.StatusOK}
	})
	gw, err := gateway.New(gateway.Config{Policy: p, Log: l, Approvers: reg, Now: now, Executors: map[string]gateway.Executor{"trade": trade}})
	if err != nil {
		t.Fatal(err)
	}
	return gw, l
}

// TestApprovalExpiryWallClockSetBack is the reported attack, end to end:
// the wall clock goes back an hour while a trade is parked, and the
// approvals 6 s later against a 4 s window were accepted and the trade
// executed. Now the approval is refused as expired, the sweeper ends the
// request, and nothing executes.
func TestApprovalExpiryWallClockSetBack(t *testing.T) {
	dir := t.TempDir()
	signers, reg := newApprovers(t)
	synctest.Test(t, func(t *testing.T) {
		var offset atomic.Int64 // how far the wall clock was set back
		wall := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
		var executed atomic.Int64
		gw, l := quickGateway(t, dir, reg, wall, &executed)
		defer l.Close()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		res, err := gw.Submit(ctx, &gateway.Request{Agent: agent42, Action: action(t, `{"type": "trade", "amount": 1}`)}, true)
		if err != nil || res.Approval == nil {
			t.Fatalf("submit: %+v %v, want parked", res, err)
		}
		r := *res.Approval
		f := &fixture{signers: signers}
		time.Sleep(time.Second)
		offset.Store(int64(-time.Hour))
		time.Sleep(time.Second)
		if _, err := gw.Approve(ctx, "caller", r.ID, f.sign(t, "alice", r, approval.Approve)); err != nil {
			t.Fatalf("first approval 2 s in: %v", err)
		}
		time.Sleep(4 * time.Second) // 6 s after parking
		if _, err := gw.Approve(ctx, "caller", r.ID, f.sign(t, "bob", r, approval.Approve)); approval.Code(err) != "expired" {
			t.Fatalf("approval 6 s in against a 4 s window, wall clock an hour back: %v, want expired", err)
		}
		go gw.RunExpiry(ctx)
		got, err := gw.Wait(ctx, agent42.ID, r.ID)
		if err != nil || got.Approval == nil || got.Approval.State != approval.Expired {
			t.Fatalf("after the window: %+v %v, want expired", got, err)
		}
		if executed.Load() != 0 {
			t.Fatalf("the trade executed %d times after its window", executed.Load())
		}
		cancel()
	})
}

// TestApprovalExpiryRestartClockSetBack: the gateway parks a trade (4 s
// window), logs more 5 s later, stops, and starts again with the wall
// clock an hour back. By the wall clock the window has an hour left; the
// log proves it is over, so approvals are refused and nothing executes.
func TestApprovalExpiryRestartClockSetBack(t *testing.T) {
	dir := t.TempDir()
	signers, reg := newApprovers(t)
	f := &fixture{signers: signers}
	clk := &clock{t: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}
	var executed atomic.Int64
	ctx := context.Background()
	gw, l := quickGateway(t, dir, reg, clk.now, &executed)
	res, err := gw.Submit(ctx, &gateway.Request{Agent: agent42, Action: action(t, `{"type": "trade", "amount": 1}`)}, true)
	if err != nil || res.Approval == nil {
		t.Fatalf("submit: %+v %v, want parked", res, err)
	}
	r := *res.Approval
	clk.advance(5 * time.Second)
	if _, err := gw.Submit(ctx, &gateway.Request{Agent: agent42, Action: action(t, `{"type": "report"}`)}, false); err != nil {
		t.Fatal(err)
	}
	l.Close()

	clk.advance(-time.Hour)
	gw, l = quickGateway(t, dir, reg, clk.now, &executed)
	defer l.Close()
	if _, err := gw.Rebuild(ctx, l); err != nil {
		t.Fatal(err)
	}
	for _, who := range []string{"alice", "bob"} {
		if _, err := gw.Approve(ctx, "caller", r.ID, f.sign(t, who, r, approval.Approve)); approval.Code(err) != "expired" {
			t.Fatalf("%s's approval after a restart with the clock an hour back: %v, want expired", who, err)
		}
	}
	if executed.Load() != 0 {
		t.Fatalf("the trade executed %d times after its window", executed.Load())
	}
}

// capPolicy allows transfers while a payee's last 24 hours, over every
// agent, stay at 100 or below.
const capPolicy = `policy "cap" {
  default: deny
}
rule "AllowTransfers" {
  precondition: action.type == "transfer"
  allow
}
rule "PayeeCap" {
  precondition: action.type == "transfer"
  condition: global.total("transfer", "amount", {"to": action.to}, duration("24h")) + action.amount <= 100
  deny: "at most 100 to one payee in 24 hours"
}
`

// TestLimitWallClockSetBack: a wall clock set back does not reopen a
// limit. 60 is sent at 10:00, the clock is set back an hour, and the next
// 60 (the window by the clock's reading is 09:00 back to 09:00 the day
// before, before the first transfer's time) is denied: a window never ends
// before an action the limit already counted.
func TestLimitWallClockSetBack(t *testing.T) {
	p, err := policy.FromSources([]policy.Source{{Name: "cap.rules", Data: []byte(capPolicy)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.Open(t.TempDir(), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	clk := &clock{t: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}
	var executed atomic.Int64
	ok := gateway.ExecutorFunc(func(context.Context, gateway.Execution) gateway.Outcome {
		executed.Add(1)
		return gateway.Outcome{Status: gateway.StatusOK}
	})
	gw, err := gateway.New(gateway.Config{Policy: p, Log: l, Now: clk.now, Executors: map[string]gateway.Executor{"transfer": ok}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	send := func() *gateway.Result {
		t.Helper()
		res, err := gw.Submit(ctx, &gateway.Request{Agent: agent42, Action: action(t, `{"type": "transfer", "amount": 60, "to": "acct-1"}`)}, true)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := send(); res.Decision.Decision != policy.Allow {
		t.Fatalf("the first 60: %s, want allow", res.Decision.Decision)
	}
	clk.advance(-time.Hour)
	if res := send(); res.Decision.Decision != policy.Deny {
		t.Fatalf("60 more with the clock an hour back: %s, want deny (120 over a cap of 100)", res.Decision.Decision)
	}
	if n := executed.Load(); n != 1 {
		t.Fatalf("%d transfers executed, want 1", n)
	}
}
