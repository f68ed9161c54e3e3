package pglog

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/pgtest"
)

// TestReconcile: an allowed decision whose outcome is missing after its
// lease gets exactly one unknown outcome, though three replicas'
// reconcilers notice it at once; one still within its lease, or already
// closed, or denied, gets none; a replica's real outcome that arrives
// after the unknown is refused (ErrOutcomeRecorded), so the request has
// one outcome in the log.
func TestReconcile(t *testing.T) {
	c := pgtest.New(t)
	ctx := context.Background()
	lease := time.Minute
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	decision := func(id, d string, at time.Time) *audit.Entry {
		return &audit.Entry{Kind: audit.KindDecision, Time: at, Agent: "agent-1", RequestID: id, Decision: d}
	}
	one := newReplica(t, c.DSN())
	for _, e := range []*audit.Entry{
		decision("r-expired", "allow", now.Add(-2*lease)),
		decision("r-approved", "approved", now.Add(-2*lease)),
		decision("r-fresh", "allow", now.Add(-lease/2)),
		decision("r-closed", "allow", now.Add(-2*lease)),
		decision("r-denied", "deny", now.Add(-2*lease)),
		{Kind: audit.KindOutcome, Time: now.Add(-2 * lease), Agent: "agent-1", RequestID: "r-closed", Closes: 3, Status: "ok"},
	} {
		if _, err := one.log.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	clock := func() time.Time { return now }
	var total int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 3 {
		rc := NewReconciler(newReplica(t, c.DSN()).log, lease, clock)
		wg.Go(func() {
			n, err := rc.Step(ctx)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			total += n
			mu.Unlock()
		})
	}
	wg.Wait()
	if total != 2 {
		t.Errorf("the reconcilers recorded %d outcomes, want 2 (r-expired, r-approved)", total)
	}
	outcomes := func() map[string][]string {
		snap, err := NewReader(one.pool).Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		raws, err := snap.ReadEntries(0, snap.Size())
		if err != nil {
			t.Fatal(err)
		}
		out := map[string][]string{}
		for _, raw := range raws {
			e, err := audit.DecodeEntry(raw)
			if err != nil {
				t.Fatal(err)
			}
			if e.Kind == audit.KindOutcome {
				out[e.RequestID] = append(out[e.RequestID], e.Status)
			}
		}
		return out
	}
	got := outcomes()
	for id, want := range map[string]int{"r-expired": 1, "r-approved": 1, "r-closed": 1, "r-fresh": 0, "r-denied": 0} {
		if len(got[id]) != want {
			t.Errorf("%s: outcomes %v, want %d", id, got[id], want)
		}
	}
	if s := got["r-expired"]; len(s) == 1 && s[0] != "unknown" {
		t.Errorf("r-expired: outcome %q, want unknown", s[0])
	}
	// The replica that decided r-expired comes back with its outcome.
	_, err := one.log.Append(ctx, &audit.Entry{Kind: audit.KindOutcome, Time: now, Agent: "agent-1", RequestID: "r-expired", Status: "ok"})
	if !errors.Is(err, ErrOutcomeRecorded) {
		t.Errorf("a late outcome: %v, want ErrOutcomeRecorded", err)
	}
	// Once its lease has expired too, r-fresh is closed.
	later := NewReconciler(one.log, lease, func() time.Time { return now.Add(lease) })
	if n, err := later.Step(ctx); err != nil || n != 1 {
		t.Errorf("after r-fresh's lease: %d closed, %v; want 1", n, err)
	}
	if got := outcomes(); len(got["r-fresh"]) != 1 || len(got["r-expired"]) != 1 {
		t.Errorf("outcomes %v", got)
	}
}
