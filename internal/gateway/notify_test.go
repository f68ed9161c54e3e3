package gateway_test

import (
	"context"
	"sync"
	"testing"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/policy"
)

// TestNotifyParked: a parked request is handed to the Notifier once, after
// its decision is in the log, with its groups and expiry and none of the
// action's fields; allowed and denied requests are not.
func TestNotifyParked(t *testing.T) {
	f := newFixture(t, t.TempDir())
	var mu sync.Mutex
	var got []gateway.Parked
	var inLog []bool
	gw, err := gateway.New(gateway.Config{Policy: f.pol, Log: f.log, Approvers: f.reg, Now: f.clock.now,
		Notify: gateway.NotifierFunc(func(p gateway.Parked) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, p)
			inLog = append(inLog, f.decisionLogged(p.ID))
		})})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, js := range []string{`{"type": "trade", "amount": 5000}`, `{"type": "report"}`, `{"type": "trade", "amount": 5000}`} {
		if _, err := gw.Submit(ctx, &gateway.Request{Agent: agent42, Session: "s", Action: action(t, js)}, false); err != nil {
			t.Fatal(err)
		}
	}
	res, err := gw.Submit(ctx, &gateway.Request{Agent: policy.Agent{ID: "agent-7"}, Session: "s", Action: action(t, `{"type": "trade", "amount": 5000}`)}, false)
	if err != nil || res.Decision.Decision != policy.Deny {
		t.Fatalf("got %+v, %v, want a denial", res, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("got %d notifications, want 2 (the two parked trades)", len(got))
	}
	for i, p := range got {
		if !inLog[i] {
			t.Errorf("%s: notified before its decision was in the log", p.ID)
		}
		if p.Agent != "agent-42" || p.ActionType != "trade" || p.Expires.IsZero() {
			t.Errorf("got %+v, want agent-42's trade with an expiry", p)
		}
		if len(p.Requirements) != 1 || p.Requirements[0].Approvers != 2 || len(p.Requirements[0].Groups) != 1 || p.Requirements[0].Groups[0] != "treasury" {
			t.Errorf("got requirements %+v, want 2 of treasury", p.Requirements)
		}
	}
	if got[0].ID == got[1].ID {
		t.Errorf("both notifications name %s", got[0].ID)
	}
}

// decisionLogged reports whether the log holds a decision entry for id.
func (f *fixture) decisionLogged(id string) bool {
	for i := int64(0); i < f.log.Size(); i++ {
		raw, err := f.log.ReadEntry(i)
		if err != nil {
			return false
		}
		e, err := audit.DecodeEntry(raw)
		if err == nil && e.Kind == audit.KindDecision && e.RequestID == id {
			return true
		}
	}
	return false
}

// TestNotifyNotRepeatedAtRebuild: a request restored from the log at a
// restart was notified when it parked, and is not notified again.
func TestNotifyNotRepeatedAtRebuild(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t, dir)
	f.park(t)
	f.log.Close()
	g := newFixtureFrom(t, dir, f)
	var n int
	gw, err := gateway.New(gateway.Config{Policy: g.pol, Log: g.log, Approvers: g.reg, Now: g.clock.now,
		Notify: gateway.NotifierFunc(func(gateway.Parked) { n++ })})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Rebuild(context.Background(), g.log); err != nil {
		t.Fatal(err)
	}
	if len(gw.Pending()) != 1 || n != 0 {
		t.Fatalf("got %d pending and %d notifications, want 1 and none", len(gw.Pending()), n)
	}
}
