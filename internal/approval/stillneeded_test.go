package approval

import (
	"slices"
	"testing"
	"time"

	"github.com/rulelock/rulelock/policy"
)

// TestStillNeeded: after each accepted approval, StillNeeded says how many
// more each requirement needs, an approver in two groups counting toward
// both, and it reaches all zeros exactly when the request is approved.
func TestStillNeeded(t *testing.T) {
	reg := testRegistry(t)
	m := New(reg, Options{Now: func() time.Time { return t0 }})
	reqs := []policy.Requirement{
		{Rule: "TwoTreasury", Approvers: 2, Groups: []string{"treasury"}},
		{Rule: "OneRisk", Approvers: 1, Groups: []string{"risk"}},
		{Rule: "Anyone", Approvers: 1},
	}
	r := mustPark(t, m, newRequest("req-1", reqs...))
	if got, want := reg.StillNeeded(r), []int{2, 1, 1}; !slices.Equal(got, want) {
		t.Fatalf("parked: got %v, want %v", got, want)
	}
	// Who may still count: never the requester (agent-7 is in treasury).
	wanted := [][]string{{"alice", "bob", "carol", "erin", "frank"}, {"carol", "dave"}, {"alice", "bob", "carol", "dave", "erin", "frank"}}
	if got := reg.StillWanted(r); !slices.EqualFunc(got, wanted, slices.Equal) {
		t.Fatalf("parked: StillWanted %q, want %q", got, wanted)
	}
	for _, step := range []struct {
		who    string
		want   []int
		wanted [][]string
	}{
		{"dave", []int{2, 0, 0}, [][]string{{"alice", "bob", "carol", "erin", "frank"}, nil, nil}}, // risk only
		{"carol", []int{1, 0, 0}, [][]string{{"alice", "bob", "erin", "frank"}, nil, nil}},         // treasury and risk: counts toward both, risk already met
		{"alice", []int{0, 0, 0}, [][]string{nil, nil, nil}},
	} {
		res, err := m.Approve("req-1", approve(t, step.who, r))
		if err != nil {
			t.Fatal(err)
		}
		got := reg.StillNeeded(res.Request)
		if !slices.Equal(got, step.want) {
			t.Errorf("after %s: got %v, want %v", step.who, got, step.want)
		}
		if w := reg.StillWanted(res.Request); !slices.EqualFunc(w, step.wanted, slices.Equal) {
			t.Errorf("after %s: StillWanted %q, want %q", step.who, w, step.wanted)
		}
		if quorate := slices.Max(got) == 0; quorate != res.Ready {
			t.Errorf("after %s: StillNeeded %v but Ready %v", step.who, got, res.Ready)
		}
	}
}
