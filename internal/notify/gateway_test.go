package notify_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/notify"
	"github.com/rulelock/rulelock/internal/strictjson"
	"github.com/rulelock/rulelock/policy"
)

const tradePolicy = `policy "t" {
  default: deny
}
rule "BigTrades" {
  precondition: action.type == "trade"
  condition: action.amount <= 100
  require_approval {
    approvers: 2
    groups: ["treasury"]
  }
}
rule "AllowTrades" {
  precondition: action.type == "trade"
  allow
}
`

// newGateway is a gateway on a real log whose trades over 100 park for
// two treasury approvers, wired to n as main wires it.
func newGateway(t *testing.T, n *notify.Notifier) *gateway.Gateway {
	t.Helper()
	l, err := audit.Open(t.TempDir(), audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	p, err := policy.FromSources([]policy.Source{{Name: "t.rules", Data: []byte(tradePolicy)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var approvers []approval.Approver
	for _, id := range []string{"alice", "bob"} {
		_, vkey, err := note.GenerateKey(nil, id)
		if err != nil {
			t.Fatal(err)
		}
		approvers = append(approvers, approval.Approver{ID: id, Groups: []string{"treasury"}, Key: vkey})
	}
	reg, err := approval.NewRegistry(approvers)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{Policy: p, Log: l, Approvers: reg, MaxPendingPerAgent: 100,
		Notify: gateway.NotifierFunc(func(p gateway.Parked) {
			n.Parked(notify.Request{ID: p.ID, Agent: p.Agent, ActionType: p.ActionType, Requirements: p.Requirements, Expires: p.Expires})
		})})
	if err != nil {
		t.Fatal(err)
	}
	return gw
}

func trade(t *testing.T, amount int) policy.Action {
	t.Helper()
	v, err := strictjson.Decode(fmt.Appendf(nil, `{"type": "trade", "amount": %d}`, amount), strictjson.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := policy.NewAction(v)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestHangingReceiverDoesNotBlockDecisions: while the webhook holds the
// first notification and never answers, twenty more requests are decided
// and parked, more than the queue holds; then the receiver answers and
// gets the rest in one message.
func TestHangingReceiverDoesNotBlockDecisions(t *testing.T) {
	rc := newReceiver(t)
	rc.hold = make(chan struct{})
	n := start(t, notify.Options{Targets: map[string]notify.Target{"treasury": target(rc, notify.FormatJSON)},
		Queue: 8, Logger: slog.New(slog.DiscardHandler)})
	gw := newGateway(t, n)
	agent := policy.Agent{ID: "agent-42"}
	ctx := context.Background()
	res, err := gw.Submit(ctx, &gateway.Request{Agent: agent, Session: "s", Action: trade(t, 5000)}, true)
	if err != nil || res.Decision.Decision != policy.RequireApproval {
		t.Fatalf("got %+v, %v, want parked", res, err)
	}
	if got := decodeJSON(t, rc.next(t)).ids(); len(got) != 1 || got[0] != res.RequestID {
		t.Fatalf("got %v, want %s", got, res.RequestID)
	}
	// The receiver now holds that post and answers nothing.
	var ids []string
	for i := range 20 {
		res, err := gw.Submit(ctx, &gateway.Request{Agent: agent, Session: "s", Action: trade(t, 5000+i)}, true)
		if err != nil || res.Decision.Decision != policy.RequireApproval {
			t.Fatalf("request %d: got %+v, %v, want parked", i, res, err)
		}
		ids = append(ids, res.RequestID)
		small, err := gw.Submit(ctx, &gateway.Request{Agent: agent, Session: "s", Action: trade(t, 50)}, true)
		if err != nil || small.Decision.Decision != policy.Allow {
			t.Fatalf("request %d: got %+v, %v, want allowed", i, small, err)
		}
	}
	rc.mu.Lock()
	posts := rc.posts
	rc.mu.Unlock()
	if posts != 1 {
		t.Fatalf("the receiver got %d posts, want 1 (still held)", posts)
	}
	if s := n.Stats()[0]; s.Queued != 8 || s.Dropped != 12 {
		t.Errorf("got %+v, want 8 queued, 12 dropped", s)
	}
	rc.mu.Lock()
	close(rc.hold)
	rc.hold = nil
	rc.mu.Unlock()
	b := decodeJSON(t, rc.next(t))
	if got := b.ids(); fmt.Sprint(got) != fmt.Sprint(ids[:8]) || b.Unlisted != 12 {
		t.Errorf("got %v and %d unlisted, want %v and 12", got, b.Unlisted, ids[:8])
	}
}

// TestRefusedReceiverDoesNotBlockDecisions: with the webhook down, every
// request is decided while the sender waits to retry, and the failure ends
// in a note.
func TestRefusedReceiverDoesNotBlockDecisions(t *testing.T) {
	rc := newReceiver(t)
	rc.srv.Close()
	release := make(chan struct{})
	var w waits
	l := newNotes()
	n := start(t, notify.Options{Targets: map[string]notify.Target{"treasury": target(rc, notify.FormatSlack)},
		Attempts: 3, Log: l, Logger: slog.New(slog.DiscardHandler),
		After: func(d time.Duration) <-chan time.Time { <-release; return w.after(d) }})
	gw := newGateway(t, n)
	for i := range 10 {
		res, err := gw.Submit(context.Background(), &gateway.Request{Agent: policy.Agent{ID: "agent-42"}, Session: "s", Action: trade(t, 5000+i)}, true)
		if err != nil || res.Decision.Decision != policy.RequireApproval {
			t.Fatalf("request %d: got %+v, %v, want parked", i, res, err)
		}
	}
	close(release) // the sender was stuck in its first backoff all along
	if msg := l.next(t); !strings.Contains(msg, "connection refused") {
		t.Errorf("got note %q", msg)
	}
}
