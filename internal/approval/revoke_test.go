package approval

import (
	"errors"
	"testing"
)

// TestRevoke: a pending request is revoked once, recorded before it takes
// effect; it is then final (no vote, no second revocation), Restore gives
// the same state, and a revoked event for a request that is not pending
// does not restore. Meetable says whether the approvers configured now can
// still meet a request, counting the approvals of those still configured.
func TestRevoke(t *testing.T) {
	var log []Event
	rec := RecorderFunc(func(ev Event) error { log = append(log, ev); return nil })
	reg := testRegistry(t)
	m := New(reg, Options{Now: (&clock{t: t0}).Now, Recorder: rec})
	r := mustPark(t, m, newRequest("req-1"))
	other := mustPark(t, m, newRequest("req-2"))
	if _, err := m.Approve(other.ID, approve(t, "alice", other)); err != nil {
		t.Fatal(err)
	}
	got, err := m.Revoke(r.ID, "principal_revoked")
	if err != nil || got.State != Revoked {
		t.Fatalf("Revoke: %v %v, want revoked", got.State, err)
	}
	if last := log[len(log)-1]; last.Kind != EventRevoked || last.Request != r.ID || last.Reason != "principal_revoked" {
		t.Errorf("recorded %+v, want the revoked event", last)
	}
	if _, err := m.Revoke(r.ID, "principal_revoked"); !errors.Is(err, ErrClosed) {
		t.Errorf("second Revoke: %v, want ErrClosed", err)
	}
	if _, err := m.Approve(r.ID, approve(t, "bob", r)); !errors.Is(err, ErrClosed) {
		t.Errorf("approval after Revoke: %v, want ErrClosed", err)
	}
	if len(m.Pending("")) != 1 {
		t.Errorf("pending: %v, want req-2 only", m.Pending(""))
	}
	restored := New(reg, Options{Now: (&clock{t: t0}).Now})
	if _, err := restored.Restore(log); err != nil {
		t.Fatal(err)
	}
	if diff := compareManagers(m, restored); diff != "" {
		t.Errorf("restored state differs (-before +after):\n%s", diff)
	}
	if _, err := New(reg, Options{}).Restore(append(append([]Event{}, log...), Event{Kind: EventRevoked, Time: t0, Request: r.ID})); !errors.Is(err, ErrClosed) {
		t.Errorf("a second revoked event restored: %v", err)
	}

	// Meetable: req-2 needs two of treasury and has alice's approval.
	if !m.Meetable(other) {
		t.Errorf("Meetable with every approver configured: false")
	}
	for _, tt := range []struct {
		name string
		ids  []string
		want bool
	}{
		{"alice and one more", []string{"alice", "bob"}, true},
		{"alice alone", []string{"alice", "dave"}, false},
		{"another two", []string{"bob", "erin"}, true},
		{"one of treasury and the requester", []string{"bob", "agent-7"}, false},
	} {
		var as []Approver
		for _, id := range tt.ids {
			for _, c := range cast {
				if c.id == id {
					as = append(as, Approver{ID: c.id, Groups: c.groups, Key: keys()[c.id].vkey})
				}
			}
		}
		next, err := NewRegistry(as)
		if err != nil {
			t.Fatal(err)
		}
		m.SetRegistry(next)
		now, _ := m.Get(other.ID)
		if got := m.Meetable(now); got != tt.want {
			t.Errorf("%s: Meetable %v, want %v", tt.name, got, tt.want)
		}
	}
}
