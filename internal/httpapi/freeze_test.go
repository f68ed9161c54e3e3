package httpapi_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/rulelock/rulelock/internal/freeze"
	"github.com/rulelock/rulelock/internal/gateway"
)

// TestOpenAPIFreeze validates the emergency stop's replies against
// docs/openapi.yaml: the freeze, an action refused frozen, /readyz while
// frozen, the votes (one approver twice refused) and the unfreeze.
func TestOpenAPIFreeze(t *testing.T) {
	c := newConformance(t)
	const js = "application/json"
	body := func(who string, st freeze.Statement) string {
		signed, err := freeze.Sign(st, c.signers[who])
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(map[string]string{"note": string(signed)})
		return string(b)
	}
	var st gateway.FreezeState
	decode := func(b []byte) {
		t.Helper()
		st = gateway.FreezeState{}
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatalf("%v: %s", err, b)
		}
	}
	decode(c.call("GET", "/v1/freeze", "alice", "", "", 200, validRequest))
	if st.Freeze != nil || st.UnfreezeQuorum != 2 {
		t.Fatalf("before: %+v", st)
	}
	id := freeze.NewID()
	freezeBody := body("alice", freeze.Statement{ID: id, Time: time.Now().UTC().Truncate(time.Second), Reason: "stop"})
	decode(c.call("POST", "/v1/freeze", "alice", js, freezeBody, 200, validRequest))
	if st.Freeze == nil || st.Freeze.ID != id || st.Freeze.By != "alice" {
		t.Fatalf("freeze: %+v", st)
	}
	c.call("POST", "/v1/freeze", "bob", js, freezeBody, 409, validRequest) // already_frozen
	c.call("POST", "/v1/freeze", "alice", js, `{"note": "not a statement"}`, 400, validRequest)
	c.call("GET", "/v1/freeze", "agent", "", "", 403, validRequest)

	var refusal struct {
		Error     struct{ Code string } `json:"error"`
		RequestID string                `json:"request_id"`
	}
	if err := json.Unmarshal(c.call("POST", "/v1/actions", "agent", js, `{"action": {"type": "transfer", "amount": 5, "to": "acct-1"}}`, 503, validRequest), &refusal); err != nil {
		t.Fatal(err)
	}
	if refusal.Error.Code != "frozen" || refusal.RequestID == "" {
		t.Errorf("an action while frozen: %+v, want frozen naming its logged entry", refusal)
	}
	if n := c.executed.Load(); n != 0 {
		t.Errorf("the upstream was called %d times while frozen", n)
	}
	var ready map[string]any
	for _, token := range []string{"", "auditor"} {
		if err := json.Unmarshal(c.call("GET", "/readyz", token, "", "", 503, validRequest), &ready); err != nil {
			t.Fatal(err)
		}
		if ready["code"] != "frozen" || (token == "") != (ready["frozen"] == nil) {
			t.Errorf("/readyz with token %q: %v", token, ready)
		}
	}

	decode(c.call("POST", "/v1/unfreeze", "alice", js, body("alice", freeze.Statement{Lift: true, ID: id}), 200, validRequest))
	if st.Freeze == nil || len(st.Freeze.Votes) != 1 {
		t.Fatalf("one vote: %+v", st)
	}
	c.call("POST", "/v1/unfreeze", "alice", js, body("alice", freeze.Statement{Lift: true, ID: id}), 409, validRequest) // duplicate_vote
	decode(c.call("POST", "/v1/unfreeze", "bob", js, body("bob", freeze.Statement{Lift: true, ID: id}), 200, validRequest))
	if st.Freeze != nil {
		t.Fatalf("two votes: %+v, want unfrozen", st)
	}
	c.call("POST", "/v1/unfreeze", "bob", js, body("bob", freeze.Statement{Lift: true, ID: id}), 409, validRequest) // not_frozen
	c.call("POST", "/v1/actions", "agent", js, `{"action": {"type": "transfer", "amount": 5, "to": "acct-1"}}`, 200, validRequest)
}

// TestOpenAPIFreezeErrorCodes: the freeze's refusal codes are in the
// spec's ErrorCode enum.
func TestOpenAPIFreezeErrorCodes(t *testing.T) {
	s := loadSpec(t)
	sp, ok := s.model.Components.Schemas.Get("ErrorCode")
	if !ok {
		t.Fatal("no ErrorCode schema")
	}
	enum := map[string]bool{}
	for _, n := range sp.Schema().Enum {
		enum[n.Value] = true
	}
	code, _ := gateway.Refusal(gateway.ErrFrozen)
	for _, c := range append(gateway.FreezeCodes, code) {
		if !enum[c] {
			t.Errorf("docs/openapi.yaml's ErrorCode lacks %s", c)
		}
	}
}
