package approval

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// compareManagers compares every request two managers hold, their pending
// counts, and the order in which they forget finished requests. Reconcile
// is left out: Restore sets it on purpose.
func compareManagers(a, b *Manager) string {
	type state struct {
		Requests  []Request
		Pending   int
		PendingBy map[string]int
		Finished  []string
	}
	get := func(m *Manager) state {
		m.mu.Lock()
		defer m.mu.Unlock()
		s := state{Pending: m.pending, PendingBy: m.pendingBy, Finished: slices.Clone(m.finished)}
		for _, e := range m.reqs {
			s.Requests = append(s.Requests, e.snapshot())
		}
		sortRequests(s.Requests)
		return s
	}
	return cmp.Diff(get(a), get(b), cmpopts.IgnoreFields(Request{}, "Reconcile"), cmpopts.EquateEmpty(), cmp.Comparer(bytes.Equal))
}

// TestRestore drives a Manager through every kind of event, then replays
// its recorded events into a new one: the state must be the same, and the
// request that reached its quorum without being executed must come back
// for reconciliation, not executable.
func TestRestore(t *testing.T) {
	clk := &clock{t: t0}
	var log []Event
	rec := RecorderFunc(func(ev Event) error { log = append(log, ev); return nil })
	reg := testRegistry(t)
	m := New(reg, Options{Now: clk.Now, Recorder: rec, KeepClosed: 4})
	park := func(id string) Request { return mustPark(t, m, newRequest(id)) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	approveBy := func(r Request, who string) Result {
		t.Helper()
		res, err := m.Approve(r.ID, approve(t, who, r))
		must(err)
		return res
	}

	forgotten, executed, approved, rejected, pending, _ := park("forgotten"), park("executed"), park("approved"), park("rejected"), park("pending"), park("expired")
	_, err := m.Reject(forgotten.ID, reject(t, "bob", forgotten, "first to finish, first forgotten"))
	must(err)
	clk.Set(t0.Add(time.Minute))
	approveBy(executed, "alice")
	approveBy(executed, "bob")
	must(m.MarkExecuted(executed.ID))
	approveBy(approved, "carol")
	if !approveBy(approved, "erin").Ready {
		t.Fatal("approved: not Ready")
	}
	approveBy(rejected, "alice")
	_, err = m.Reject(rejected.ID, reject(t, "frank", rejected, SanitizeReason("wrong payee\tsee ticket 7")))
	must(err)
	approveBy(pending, "frank")
	// Refusals are not recorded and change nothing.
	if _, err := m.Approve(pending.ID, approve(t, "frank", pending)); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("duplicate: %v", err)
	}
	clk.Set(t0.Add(4 * time.Hour))
	later := park("later")
	ended, err := m.Expire(t0.Add(4 * time.Hour))
	must(err)
	if len(ended) != 2 || ended[0].ID != "expired" || ended[1].ID != "pending" || ended[0].State != Expired {
		t.Fatalf("Expire ended %v, want expired and pending", ended)
	}
	if _, err := m.Get(forgotten.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the first finished request is still kept: %v", err)
	}

	restored := New(reg, Options{Now: clk.Now, KeepClosed: 4}) // the test clock: real time would expire "later"
	reconcile, err := restored.Restore(log)
	must(err)
	if diff := compareManagers(m, restored); diff != "" {
		t.Errorf("restored state differs (-before +after):\n%s", diff)
	}
	if len(reconcile) != 1 || reconcile[0].ID != approved.ID || !reconcile[0].Reconcile {
		t.Errorf("Restore returned %v for reconciliation, want only %q", reconcile, approved.ID)
	}
	// Not executable again: no approval is accepted, nothing returns Ready.
	if res, err := restored.Approve(approved.ID, approve(t, "frank", approved)); !errors.Is(err, ErrClosed) || res.Ready {
		t.Errorf("approval after restore: Ready %v, %v; want ErrClosed", res.Ready, err)
	}
	must(restored.MarkExecuted(approved.ID))
	if r, _ := restored.Get(approved.ID); r.State != Executed || r.Reconcile {
		t.Errorf("after MarkExecuted: %s, Reconcile %v", r.State, r.Reconcile)
	}
	// The restored manager carries on: the later request can still be approved.
	approveBy2 := func(who string) Result {
		res, err := restored.Approve(later.ID, approve(t, who, later))
		must(err)
		return res
	}
	approveBy2("alice")
	if !approveBy2("bob").Ready {
		t.Errorf("later request: not Ready after restore")
	}
	if err := restored.MarkExecuted(later.ID); err != nil {
		t.Error(err)
	}
	if _, err := restored.Restore(log); err == nil {
		t.Errorf("Restore into a non-empty manager succeeded")
	}
}

// TestRestoreRefuses checks that Restore does not trust events the
// registry cannot vouch for.
func TestRestoreRefuses(t *testing.T) {
	var log []Event
	rec := RecorderFunc(func(ev Event) error { log = append(log, ev); return nil })
	reg := testRegistry(t)
	m := New(reg, Options{Now: func() time.Time { return t0 }, Recorder: rec})
	r := mustPark(t, m, newRequest("req-1"))
	if _, err := m.Approve(r.ID, approve(t, "alice", r)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		edit func([]Event) []Event
		want string
	}{
		{"altered action", func(evs []Event) []Event { evs[0].Action[0] ^= 1; return evs }, "action_mismatch"},
		{"approver renamed", func(evs []Event) []Event { evs[1].Approver = "bob"; return evs }, "signed by"},
		{"tampered note", func(evs []Event) []Event { evs[1].Note = flipSignature(evs[1].Note); return evs }, "bad_signature"},
		{"approval before its request", func(evs []Event) []Event { return evs[1:] }, "no such request"},
		{"approval after expiry", func(evs []Event) []Event { evs[1].Time = evs[0].Expires; return evs }, "expired"},
		{"executed without quorum", func(evs []Event) []Event {
			return append(evs, Event{Kind: EventExecuted, Time: t0, Request: "req-1"})
		}, "not approved"},
		{"expired early", func(evs []Event) []Event {
			return append(evs, Event{Kind: EventExpired, Time: t0, Request: "req-1"})
		}, "before its expiry"},
		{"unknown kind", func(evs []Event) []Event { return append(evs, Event{Kind: "vote"}) }, "unknown event kind"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs := slices.Clone(log)
			for i := range evs {
				evs[i].Note = slices.Clone(evs[i].Note)
			}
			evs = tt.edit(evs)
			_, err := New(reg, Options{}).Restore(evs)
			if err == nil || !(strings.Contains(err.Error(), tt.want) || Code(err) == tt.want) {
				t.Errorf("Restore: %v, want an error with %q", err, tt.want)
			}
		})
	}
}

// TestRestoreRemovedApprover: the log holds votes of an approver the
// registry no longer has (removed by a reload). Restore does not fail on
// them and does not trust them: their approval no longer counts, their
// rejection still ends its request, and a request executed with their
// vote stays executed.
func TestRestoreRemovedApprover(t *testing.T) {
	var log []Event
	rec := RecorderFunc(func(ev Event) error { log = append(log, ev); return nil })
	m := New(testRegistry(t), Options{Now: func() time.Time { return t0 }, Recorder: rec})
	pending, executed, rejected := mustPark(t, m, newRequest("pending")), mustPark(t, m, newRequest("executed")), mustPark(t, m, newRequest("rejected"))
	for _, v := range []struct {
		r   Request
		who string
	}{{pending, "alice"}, {executed, "alice"}, {executed, "bob"}} {
		if _, err := m.Approve(v.r.ID, approve(t, v.who, v.r)); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.MarkExecuted(executed.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Reject(rejected.ID, reject(t, "alice", rejected, "no")); err != nil {
		t.Fatal(err)
	}

	var as []Approver
	for _, c := range cast {
		if c.id != "alice" {
			as = append(as, Approver{ID: c.id, Groups: c.groups, Key: keys()[c.id].vkey})
		}
	}
	withoutAlice, err := NewRegistry(as)
	if err != nil {
		t.Fatal(err)
	}
	restored := New(withoutAlice, Options{Now: func() time.Time { return t0 }})
	if _, err := restored.Restore(log); err != nil {
		t.Fatalf("Restore without alice: %v", err)
	}
	for id, want := range map[string]State{"pending": Pending, "executed": Executed, "rejected": Rejected} {
		if r, err := restored.Get(id); err != nil || r.State != want {
			t.Errorf("%s: %s, %v; want %s", id, r.State, err, want)
		}
	}
	r, _ := restored.Get(pending.ID)
	if got := withoutAlice.StillNeeded(r); got[0] != 2 {
		t.Errorf("pending still needs %v, want 2: alice's approval must not count", got)
	}
	if res, err := restored.Approve(pending.ID, approve(t, "bob", pending)); err != nil || res.Ready {
		t.Fatalf("bob: %+v %v, want one vote of two", res, err)
	}
	if res, err := restored.Approve(pending.ID, approve(t, "erin", pending)); err != nil || !res.Ready {
		t.Errorf("erin: %+v %v, want the quorum", res, err)
	}
	// A tampered note by a configured approver still fails Restore.
	evs := slices.Clone(log)
	evs[3].Note = flipSignature(slices.Clone(evs[3].Note)) // an approval of alice's
	if _, err := New(testRegistry(t), Options{}).Restore(evs); err == nil {
		t.Error("Restore accepted a tampered note of a configured approver")
	}
}
