package gateway_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/freeze"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/policy"
)

// freezeNote signs a freeze (or, with lift, an unfreeze) statement.
func (f *fixture) freezeNote(t *testing.T, who string, st freeze.Statement) []byte {
	t.Helper()
	b, err := freeze.Sign(st, f.signers[who])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func freezeCode(err error) string {
	var fe *gateway.FreezeError
	if errors.As(err, &fe) {
		return fe.Code
	}
	return ""
}

// TestFreeze: a freeze refuses new actions and approvals, keeps parked
// requests parked, survives a rebuild, and is lifted by two distinct
// approvers' signed votes for that freeze; bad statements are refused with
// their code.
func TestFreeze(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t, dir)
	ctx := context.Background()
	parked := f.park(t)
	now := f.clock.now().UTC().Truncate(time.Second)
	id := freeze.NewID()

	refused := []struct {
		name string
		note []byte
		code string
	}{
		{"stale", f.freezeNote(t, "alice", freeze.Statement{ID: id, Time: now.Add(-time.Hour), Reason: "x"}), "stale"},
		{"an unfreeze", f.freezeNote(t, "alice", freeze.Statement{Lift: true, ID: id}), "bad_statement"},
		{"an approval", f.sign(t, "alice", *parked.Approval, "approve"), "bad_statement"},
		{"not signed", []byte("rulelock freeze v1\n"), "bad_statement"},
	}
	for _, c := range refused {
		if _, err := f.gw.Freeze(ctx, "alice", c.note); freezeCode(err) != c.code {
			t.Errorf("%s: got %v, want %s", c.name, err, c.code)
		}
	}
	if _, err := f.gw.Unfreeze(ctx, "alice", f.freezeNote(t, "alice", freeze.Statement{Lift: true, ID: id})); freezeCode(err) != "not_frozen" {
		t.Errorf("unfreeze while not frozen: %v", err)
	}

	st, err := f.gw.Freeze(ctx, "alice", f.freezeNote(t, "alice", freeze.Statement{ID: id, Time: now, Reason: "stop"}))
	if err != nil || st.Freeze == nil || st.Freeze.By != "alice" || st.UnfreezeQuorum != 2 {
		t.Fatalf("freeze: %+v, %v", st, err)
	}
	if _, err := f.gw.Freeze(ctx, "bob", f.freezeNote(t, "bob", freeze.Statement{ID: freeze.NewID(), Time: now, Reason: "again"})); freezeCode(err) != "already_frozen" {
		t.Errorf("second freeze: %v", err)
	}
	_, err = f.gw.Submit(ctx, &gateway.Request{Agent: agent42, Action: action(t, `{"type": "transfer", "amount": 5, "to": "a"}`)}, true)
	if code, _ := gateway.Refusal(err); code != "frozen" {
		t.Errorf("submit while frozen: %v", err)
	}
	if _, err := f.gw.Approve(ctx, "alice", parked.RequestID, f.sign(t, "alice", *parked.Approval, "approve")); !errors.Is(err, gateway.ErrFrozen) {
		t.Errorf("approve while frozen: %v", err)
	}
	if len(f.gw.Pending()) != 1 {
		t.Errorf("the parked request is no longer pending")
	}

	// A rebuild from the log (a restart) is still frozen, votes included.
	if _, err := f.gw.Unfreeze(ctx, "alice", f.freezeNote(t, "alice", freeze.Statement{Lift: true, ID: freeze.NewID()})); freezeCode(err) != "wrong_freeze" {
		t.Errorf("unfreeze of another freeze: %v", err)
	}
	if _, err := f.gw.Unfreeze(ctx, "alice", f.freezeNote(t, "alice", freeze.Statement{Lift: true, ID: id})); err != nil {
		t.Fatal(err)
	}
	f.log.Close()
	g := newFixtureFrom(t, dir, f)
	if _, err := g.gw.Rebuild(ctx, g.log); err != nil {
		t.Fatal(err)
	}
	if st := g.gw.Frozen(); st.Freeze == nil || st.Freeze.ID != id || len(st.Freeze.Votes) != 1 {
		t.Fatalf("after the rebuild: %+v", st.Freeze)
	}
	if _, err := g.gw.Unfreeze(ctx, "alice", g.freezeNote(t, "alice", freeze.Statement{Lift: true, ID: id})); freezeCode(err) != "duplicate_vote" {
		t.Errorf("alice twice: %v", err)
	}
	if st, err := g.gw.Unfreeze(ctx, "bob", g.freezeNote(t, "bob", freeze.Statement{Lift: true, ID: id})); err != nil || st.Freeze != nil {
		t.Fatalf("bob's vote: %+v, %v", st, err)
	}
	res, err := g.gw.Submit(ctx, &gateway.Request{Agent: agent42, Action: action(t, `{"type": "transfer", "amount": 5, "to": "a"}`)}, true)
	if err != nil || res.Outcome == nil || res.Outcome.Status != gateway.StatusOK {
		t.Errorf("after the unfreeze: %+v, %v", res, err)
	}
	// The same freeze id cannot freeze again.
	if _, err := g.gw.Freeze(ctx, "bob", g.freezeNote(t, "bob", freeze.Statement{ID: id, Time: now, Reason: "replayed"})); freezeCode(err) != "reused" {
		t.Errorf("a reused freeze id: %v", err)
	}
}

// holdingLog is the audit log whose decision entries, once queued, are
// not reported durable until release is closed.
type holdingLog struct {
	*audit.Log
	queued  chan struct{}
	release chan struct{}
}

func (l *holdingLog) Enqueue(ctx context.Context, e *audit.Entry) (audit.Pending, error) {
	p, err := l.Log.Enqueue(ctx, e)
	if err != nil || e.Kind != audit.KindDecision {
		return p, err
	}
	close(l.queued)
	return heldPending{p, l.release}, nil
}

type heldPending struct {
	audit.Pending
	release chan struct{}
}

func (p heldPending) Wait(ctx context.Context) (audit.Receipt, error) {
	<-p.release
	return p.Pending.Wait(ctx)
}

// TestFreezeHoldsAllowedAction: an action allowed before the freeze and
// not yet executed when it begins is not executed: its outcome is an
// error that says so, and the upstream never sees it.
func TestFreezeHoldsAllowedAction(t *testing.T) {
	f := newFixture(t, t.TempDir())
	hl := &holdingLog{Log: f.log, queued: make(chan struct{}), release: make(chan struct{})}
	gw, err := gateway.New(gateway.Config{Policy: f.pol, Log: hl, Approvers: f.reg, Now: f.clock.now, Executors: map[string]gateway.Executor{
		"transfer": &gateway.HTTPExecutor{Method: "POST", URL: f.up.srv.URL + "/pay/{to}", Headers: http.Header{}}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	type answer struct {
		res *gateway.Result
		err error
	}
	done := make(chan answer, 1)
	go func() {
		res, err := gw.Submit(ctx, &gateway.Request{Agent: agent42, Action: action(t, `{"type": "transfer", "amount": 5, "to": "a"}`)}, true)
		done <- answer{res, err}
	}()
	<-hl.queued
	now := f.clock.now().UTC().Truncate(time.Second)
	if _, err := gw.Freeze(ctx, "alice", f.freezeNote(t, "alice", freeze.Statement{ID: freeze.NewID(), Time: now, Reason: "stop"})); err != nil {
		t.Fatal(err)
	}
	close(hl.release)
	a := <-done
	if a.err != nil || a.res.Decision.Decision != policy.Allow || a.res.Outcome == nil || a.res.Outcome.Status != gateway.StatusError {
		t.Fatalf("got %+v, %v; want allowed, outcome error (held)", a.res, a.err)
	}
	if n := f.up.count(); n != 0 {
		t.Errorf("the upstream got %d requests", n)
	}
}
