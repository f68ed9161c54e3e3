package approval

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/policy"
)

// TestVotes submits one approval or rejection to a request requiring two
// treasury members, after some accepted approvals, and checks the refusal
// code (or acceptance), the request's state and Ready.
func TestVotes(t *testing.T) {
	altered := func(st *Statement) { st.Action[0] ^= 1 }
	tests := []struct {
		name      string
		before    []string // approvers who approved first
		by        string   // who signs
		verdict   Verdict
		edit      func(*Statement) // changes the statement before signing
		tamper    func([]byte) []byte
		reject    bool          // submit with Reject rather than Approve
		at        time.Duration // submission time after parking
		id        string        // request to submit to; req-1 when empty
		wantCode  string
		wantState State
		wantReady bool
	}{
		{name: "first of two", by: "alice", wantState: Pending},
		{name: "two distinct treasury members", before: []string{"alice"}, by: "bob", wantState: Approved, wantReady: true},
		{name: "member of two groups", before: []string{"alice"}, by: "carol", wantState: Approved, wantReady: true},
		{name: "self approval", by: "agent-7", wantCode: "self_approval", wantState: Pending},
		{name: "self rejection", by: "agent-7", verdict: Reject, reject: true, wantCode: "self_approval", wantState: Pending},
		{name: "approving twice", before: []string{"alice"}, by: "alice", wantCode: "duplicate_approver", wantState: Pending},
		{name: "outside the group", by: "dave", wantCode: "not_in_group", wantState: Pending},
		{name: "rejection from outside the group", by: "dave", verdict: Reject, reject: true, wantCode: "not_in_group", wantState: Pending},
		{name: "expired approval", by: "alice", at: 4 * time.Hour, wantCode: "expired", wantState: Pending},
		{name: "last second", before: []string{"alice"}, by: "bob", at: 4*time.Hour - time.Nanosecond, wantState: Approved, wantReady: true},
		{name: "altered action", by: "alice", edit: altered, wantCode: "action_mismatch", wantState: Pending},
		{name: "other policy", by: "alice", edit: func(st *Statement) { st.Policy = "sha256:" + strings.Repeat("0", 64) }, wantCode: "policy_mismatch", wantState: Pending},
		{name: "other request", by: "alice", edit: func(st *Statement) { st.Request = "req-2" }, wantCode: "request_mismatch", wantState: Pending},
		{name: "other expiry", by: "alice", edit: func(st *Statement) { st.Expires = st.Expires.Add(time.Hour) }, wantCode: "expiry_mismatch", wantState: Pending},
		{name: "rejection sent as approval", by: "alice", verdict: Reject, wantCode: "verdict_mismatch", wantState: Pending},
		{name: "approval sent as rejection", by: "alice", reject: true, wantCode: "verdict_mismatch", wantState: Pending},
		{name: "unknown key", by: "mallory", wantCode: "unknown_approver", wantState: Pending},
		{name: "tampered signature", by: "alice", tamper: flipSignature, wantCode: "bad_signature", wantState: Pending},
		{name: "tampered text", by: "alice", tamper: func(b []byte) []byte {
			return bytes.Replace(b, []byte("verdict approve"), []byte("verdict reject\nreason x"), 1)
		}, wantCode: "bad_signature", wantState: Pending},
		{name: "not a note", by: "alice", tamper: func([]byte) []byte { return []byte("approve please\n") }, wantCode: "bad_statement", wantState: Pending},
		{name: "oversized note", by: "alice", tamper: func(b []byte) []byte { return append(bytes.Repeat([]byte("x"), MaxNoteSize), b...) }, wantCode: "bad_statement", wantState: Pending},
		{name: "extra signature line", by: "alice", tamper: func(b []byte) []byte {
			return append(b, b[bytes.LastIndex(b, []byte("\n\n"))+2:]...)
		}, wantCode: "bad_statement", wantState: Pending},
		{name: "co-signed by an unknown key", by: "alice", tamper: func(b []byte) []byte {
			n, _ := note.Open(b, note.VerifierList(mustVerifier(keys()["alice"].vkey)))
			out, _ := note.Sign(n, keys()["mallory"].signer)
			return out
		}, wantCode: "bad_statement", wantState: Pending},
		{name: "no such request", by: "alice", id: "req-9", edit: func(st *Statement) { st.Request = "req-9" }, wantCode: "not_found", wantState: Pending},
		{name: "rejection ends it", before: []string{"alice"}, by: "bob", verdict: Reject, reject: true, wantState: Rejected},
		{name: "approver changes their mind", before: []string{"alice"}, by: "alice", verdict: Reject, reject: true, wantState: Rejected},
		{name: "after the quorum", before: []string{"alice", "bob"}, by: "erin", wantCode: "closed", wantState: Approved},
		{name: "rejection after the quorum", before: []string{"alice", "bob"}, by: "erin", verdict: Reject, reject: true, wantCode: "closed", wantState: Approved},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &clock{t: t0}
			m := New(testRegistry(t), Options{Now: clk.Now})
			r := mustPark(t, m, newRequest("req-1"))
			mustPark(t, m, newRequest("req-2"))
			for _, a := range tt.before {
				if _, err := m.Approve(r.ID, approve(t, a, r)); err != nil {
					t.Fatalf("approval by %s: %v", a, err)
				}
			}
			verdict, reason := Approve, ""
			if tt.verdict == Reject {
				verdict, reason = Reject, "payee not on the list"
			}
			st := r.Statement(verdict, reason)
			if tt.edit != nil {
				tt.edit(&st)
			}
			signed := sign(t, tt.by, st)
			if tt.tamper != nil {
				signed = tt.tamper(signed)
			}
			id := r.ID
			if tt.id != "" {
				id = tt.id
			}
			clk.Set(t0.Add(tt.at))
			var err error
			var ready bool
			if tt.reject {
				_, err = m.Reject(id, signed)
			} else {
				var res Result
				res, err = m.Approve(id, signed)
				ready = res.Ready
			}
			if got := Code(err); got != tt.wantCode {
				t.Errorf("code %q (%v), want %q", got, err, tt.wantCode)
			}
			if err != nil && tt.wantCode != "" {
				var re *RefusalError
				if !errors.As(err, &re) {
					t.Errorf("error %T is not a *RefusalError", err)
				}
			}
			if ready != tt.wantReady {
				t.Errorf("Ready %v, want %v", ready, tt.wantReady)
			}
			got, _ := m.Get(r.ID)
			if got.State != tt.wantState {
				t.Errorf("state %s, want %s", got.State, tt.wantState)
			}
		})
	}
}

func flipSignature(b []byte) []byte {
	b = bytes.Clone(b)
	i := bytes.LastIndexByte(b, ' ') + 10
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return b
}

func mustVerifier(vkey string) note.Verifier {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		panic(err)
	}
	return v
}

// TestConsumedApprovalReuse replays an approval that helped reach a
// quorum: on its own request, after execution, and on another request.
func TestConsumedApprovalReuse(t *testing.T) {
	m := New(testRegistry(t), Options{Now: func() time.Time { return t0 }})
	r1 := mustPark(t, m, newRequest("req-1"))
	r2 := mustPark(t, m, newRequest("req-2"))
	alice := approve(t, "alice", r1)
	if _, err := m.Approve(r1.ID, alice); err != nil {
		t.Fatal(err)
	}
	if res, err := m.Approve(r1.ID, approve(t, "bob", r1)); err != nil || !res.Ready {
		t.Fatalf("final approval: Ready %v, %v", res.Ready, err)
	}
	if _, err := m.Approve(r1.ID, alice); !errors.Is(err, ErrClosed) {
		t.Errorf("replay on the approved request: %v, want ErrClosed", err)
	}
	if err := m.MarkExecuted(r1.ID); err != nil {
		t.Fatal(err)
	}
	if err := m.MarkExecuted(r1.ID); !errors.Is(err, ErrClosed) {
		t.Errorf("second MarkExecuted: %v, want ErrClosed", err)
	}
	if _, err := m.Approve(r1.ID, alice); !errors.Is(err, ErrClosed) {
		t.Errorf("replay on the executed request: %v, want ErrClosed", err)
	}
	if _, err := m.Approve(r2.ID, alice); !errors.Is(err, ErrRequestMismatch) {
		t.Errorf("reuse on another request: %v, want ErrRequestMismatch", err)
	}
	if got, _ := m.Get(r2.ID); len(got.Approvals) != 0 {
		t.Errorf("req-2 has approvals %v, want none", got.Approvals)
	}
}

// TestQuorumRules checks which sets of approvers meet which requirements.
func TestQuorumRules(t *testing.T) {
	risk := policy.Requirement{Rule: "RiskSignoff", Approvers: 1, Groups: []string{"risk"}}
	anyone := policy.Requirement{Rule: "AnyThree", Approvers: 3}
	tests := []struct {
		name    string
		reqs    []policy.Requirement
		by      []string
		wantAt  int            // index in by of the approval that returns Ready; -1 for none
		refused map[int]string // approval index to refusal code
	}{
		{name: "two-person rule: two treasury members", reqs: twoTreasury, by: []string{"alice", "bob"}, wantAt: 1},
		{name: "two-person rule: treasury and risk", reqs: twoTreasury, by: []string{"alice", "dave"}, wantAt: -1, refused: map[int]string{1: "not_in_group"}},
		{name: "two-person rule: one member twice", reqs: twoTreasury, by: []string{"alice", "alice"}, wantAt: -1, refused: map[int]string{1: "duplicate_approver"}},
		{name: "two-person rule: the agent and one member", reqs: twoTreasury, by: []string{"agent-7", "alice"}, wantAt: -1, refused: map[int]string{0: "self_approval"}},
		{name: "two rules: treasury pair still needs risk", reqs: []policy.Requirement{twoTreasury[0], risk}, by: []string{"alice", "bob", "dave"}, wantAt: 2},
		{name: "two rules: one approver counts for both", reqs: []policy.Requirement{twoTreasury[0], risk}, by: []string{"alice", "carol"}, wantAt: 1},
		{name: "no groups: any three", reqs: []policy.Requirement{anyone}, by: []string{"dave", "alice", "carol"}, wantAt: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(testRegistry(t), Options{Now: func() time.Time { return t0 }})
			r := mustPark(t, m, newRequest("req-1", tt.reqs...))
			readyAt := -1
			for i, a := range tt.by {
				res, err := m.Approve(r.ID, approve(t, a, r))
				if got, want := Code(err), tt.refused[i]; got != want {
					t.Errorf("approval %d by %s: code %q (%v), want %q", i, a, got, err, want)
				}
				if res.Ready {
					if readyAt >= 0 {
						t.Fatalf("approval %d is Ready too, after %d", i, readyAt)
					}
					readyAt = i
				}
			}
			if readyAt != tt.wantAt {
				t.Errorf("Ready at approval %d, want %d", readyAt, tt.wantAt)
			}
		})
	}
}

func TestPark(t *testing.T) {
	tests := []struct {
		name     string
		edit     func(*Request)
		wantCode string
	}{
		{name: "valid"},
		{name: "bad id", edit: func(r *Request) { r.ID = "req 1" }, wantCode: "invalid_request"},
		{name: "long id", edit: func(r *Request) { r.ID = strings.Repeat("a", MaxIDSize+1) }, wantCode: "invalid_request"},
		{name: "no agent", edit: func(r *Request) { r.Agent = "" }, wantCode: "invalid_request"},
		{name: "bad policy digest", edit: func(r *Request) { r.Policy = "sha256:ABC" }, wantCode: "invalid_request"},
		{name: "no requirements", edit: func(r *Request) { r.Requirements = nil }, wantCode: "invalid_request"},
		{name: "zero approvers", edit: func(r *Request) { r.Requirements = []policy.Requirement{{Rule: "x"}} }, wantCode: "invalid_request"},
		{name: "impossible quorum", edit: func(r *Request) {
			r.Requirements = []policy.Requirement{{Rule: "x", Approvers: 3, Groups: []string{"risk"}}}
		}, wantCode: "invalid_request"},
		{name: "the agent cannot count", edit: func(r *Request) {
			r.Requirements = []policy.Requirement{{Rule: "x", Approvers: 6, Groups: []string{"treasury"}}}
		}, wantCode: "invalid_request"},
		{name: "duplicate id", edit: func(r *Request) { r.ID = "taken" }, wantCode: "duplicate_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(testRegistry(t), Options{Now: func() time.Time { return t0 }})
			mustPark(t, m, newRequest("taken"))
			r := newRequest("req-1")
			if tt.edit != nil {
				tt.edit(&r)
			}
			_, err := m.Park(r)
			if got := Code(err); got != tt.wantCode {
				t.Errorf("code %q (%v), want %q", got, err, tt.wantCode)
			}
		})
	}
}

func TestExpiryTime(t *testing.T) {
	created := time.Date(2026, 11, 22, 10, 0, 0, 750_000_000, time.UTC)
	tests := []struct {
		name string
		reqs []policy.Requirement
		want time.Time
	}{
		{"default", []policy.Requirement{{Rule: "a", Approvers: 1}}, time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)},
		{"shortest", []policy.Requirement{{Rule: "a", Approvers: 1, Within: 4 * time.Hour}, {Rule: "b", Approvers: 1, Within: 30 * time.Minute}, {Rule: "c", Approvers: 1}}, time.Date(2026, 11, 22, 10, 30, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		m := New(testRegistry(t), Options{Now: func() time.Time { return created }, DefaultWithin: 2 * time.Hour})
		r := mustPark(t, m, newRequest("req-1", tt.reqs...))
		if !r.Expires.Equal(tt.want) {
			t.Errorf("%s: expires %v, want %v", tt.name, r.Expires, tt.want)
		}
	}
}

func TestQueueCaps(t *testing.T) {
	clk := &clock{t: t0}
	m := New(testRegistry(t), Options{Now: clk.Now, MaxPendingPerAgent: 2, MaxPending: 3})
	park := func(id, agent string) error {
		r := newRequest(id)
		r.Agent = agent
		_, err := m.Park(r)
		return err
	}
	steps := []struct {
		id, agent string
		wantCode  string
	}{
		{"a1", "agent-a", ""},
		{"a2", "agent-a", ""},
		{"a3", "agent-a", "queue_full"},
		{"b1", "agent-b", ""},
		{"c1", "agent-c", "queue_full"}, // three pending in all
	}
	for _, s := range steps {
		if got := Code(park(s.id, s.agent)); got != s.wantCode {
			t.Errorf("Park(%s, %s): code %q, want %q", s.id, s.agent, got, s.wantCode)
		}
	}
	// A finished request frees its place.
	a1, _ := m.Get("a1")
	if _, err := m.Reject("a1", reject(t, "alice", a1, "no")); err != nil {
		t.Fatal(err)
	}
	if err := park("a3", "agent-a"); err != nil {
		t.Errorf("Park after a rejection: %v", err)
	}
	if got := len(m.Pending("agent-a")); got != 2 {
		t.Errorf("agent-a has %d pending, want 2", got)
	}
	if got := len(m.Pending("")); got != 3 {
		t.Errorf("%d pending in all, want 3", got)
	}
}

func TestKeepClosed(t *testing.T) {
	m := New(testRegistry(t), Options{Now: func() time.Time { return t0 }, KeepClosed: 2})
	for _, id := range []string{"r1", "r2", "r3"} {
		r := mustPark(t, m, newRequest(id))
		if _, err := m.Reject(id, reject(t, "alice", r, "no")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Get("r1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(r1): %v, want ErrNotFound", err)
	}
	for _, id := range []string{"r2", "r3"} {
		if r, err := m.Get(id); err != nil || r.State != Rejected {
			t.Errorf("Get(%s): %v, %v, want rejected", id, r.State, err)
		}
	}
}

// TestRecorderFailure: an event the Recorder refuses has no effect.
func TestRecorderFailure(t *testing.T) {
	fail := false
	var log []Event
	rec := RecorderFunc(func(ev Event) error {
		if fail {
			return errors.New("disk full")
		}
		log = append(log, ev)
		return nil
	})
	m := New(testRegistry(t), Options{Now: func() time.Time { return t0 }, Recorder: rec})
	r := mustPark(t, m, newRequest("req-1"))
	if _, err := m.Approve(r.ID, approve(t, "alice", r)); err != nil {
		t.Fatal(err)
	}
	fail = true
	res, err := m.Approve(r.ID, approve(t, "bob", r))
	if err == nil || res.Ready || Code(err) != "" {
		t.Fatalf("Approve with a failing recorder: Ready %v, code %q, %v", res.Ready, Code(err), err)
	}
	if _, err := m.Park(newRequest("req-2")); err == nil {
		t.Errorf("Park with a failing recorder succeeded")
	}
	fail = false
	if res, err := m.Approve(r.ID, approve(t, "bob", r)); err != nil || !res.Ready {
		t.Fatalf("Approve after recovery: Ready %v, %v", res.Ready, err)
	}
	var kinds []EventKind
	for _, ev := range log {
		kinds = append(kinds, ev.Kind)
	}
	if got, want := len(kinds), 3; got != want {
		t.Errorf("recorded %v, want parked, approval, approval", kinds)
	}
}

func TestSnapshotsAreCopies(t *testing.T) {
	m := New(testRegistry(t), Options{Now: func() time.Time { return t0 }})
	r := mustPark(t, m, newRequest("req-1"))
	signed := approve(t, "alice", r)
	if _, err := m.Approve(r.ID, signed); err != nil {
		t.Fatal(err)
	}
	signed[0] = 'X'
	got, _ := m.Get(r.ID)
	got.Requirements[0].Groups[0] = "risk"
	got.Approvals[0].Note[1] = 'X'
	again, _ := m.Get(r.ID)
	if again.Requirements[0].Groups[0] != "treasury" || !bytes.HasPrefix(again.Approvals[0].Note, []byte("rulelock")) {
		t.Errorf("changing a returned request or a submitted note changed the Manager's state")
	}
}
