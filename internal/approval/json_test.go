package approval

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestRequestJSON proves the approval object's encoding: lowercase names,
// the action as sha256:<hex>, no zero times, notes as text, and that it
// reads back as the same request (rulelock approve rebuilds the statement
// from it).
func TestRequestJSON(t *testing.T) {
	clk := &clock{t: t0}
	m := New(testRegistry(t), Options{Now: clk.Now})
	msg := newRequest("req-1")
	msg.Requirements[0].Message = "two treasurers"
	p := mustPark(t, m, msg)
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"req-1","agent":"agent-7","action_hash":"` + ActionHash(testAction) + `","policy":"` + testPolicy + `",` +
		`"requirements":[{"rule":"TwoPersonTreasury","approvers":2,"groups":["treasury"],"message":"two treasurers","within":"4h"}],` +
		`"created":"2026-11-22T10:00:00Z","expires":"2026-11-22T14:00:00Z","state":"pending","approvals":[]}`
	if string(b) != want {
		t.Errorf("pending request:\ngot  %s\nwant %s", b, want)
	}

	clk.Set(t0.Add(time.Minute))
	res, err := m.Approve("req-1", approve(t, "alice", p))
	if err != nil {
		t.Fatal(err)
	}
	r, err := m.Reject("req-1", reject(t, "bob", res.Request, "wrong payee"))
	if err != nil {
		t.Fatal(err)
	}
	b, err = json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`"approvals":[{"approver":"alice","time":"2026-11-22T10:01:00Z","note":"rulelock approval v1\nrequest req-1\n`,
		`"rejection":{"approver":"bob","time":"2026-11-22T10:01:00Z","reason":"wrong payee","note":"rulelock approval v1\n`,
		`"state":"rejected"`, `"ended":"2026-11-22T10:01:00Z"`} {
		if !strings.Contains(string(b), s) {
			t.Errorf("rejected request %s\nlacks %s", b, s)
		}
	}
	for _, s := range []string{`"ID"`, `"Note"`, `0001-01-01`, `"reconcile"`} {
		if strings.Contains(string(b), s) {
			t.Errorf("rejected request %s\nhas %s", b, s)
		}
	}
	var back Request
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(r, back); diff != "" {
		t.Errorf("read back (-encoded +read):\n%s", diff)
	}
	if back.Statement(Approve, "") != r.Statement(Approve, "") {
		t.Error("the statement rebuilt from the JSON differs")
	}
}

func TestParseActionHash(t *testing.T) {
	for _, s := range []string{"", "sha256:", "SHA256:" + strings.Repeat("a", 64), "sha256:" + strings.Repeat("A", 64),
		"sha256:" + strings.Repeat("a", 63), "sha256:" + strings.Repeat("g", 64)} {
		if _, err := ParseActionHash(s); err == nil {
			t.Errorf("ParseActionHash(%q): no error", s)
		}
	}
	if h, err := ParseActionHash(ActionHash(testAction)); err != nil || h != testAction {
		t.Errorf("ParseActionHash(ActionHash(h)) = %x, %v", h, err)
	}
}
