package approval

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/rulelock/rulelock/policy"
)

// The JSON encoding of a Request is the `approval` object of the HTTP API
// (docs/http-api.md, docs/openapi.yaml): lowercase snake_case names, the
// action as "sha256:<hex>" (the hash a statement names), times in RFC 3339
// and absent while they have not happened, each signed statement as its
// text, exactly as the approver submitted it:
//
//	{"id": "req-42", "agent": "agent-7",
//	 "action_hash": "sha256:9f86d081…", "policy": "sha256:2c26b46b…",
//	 "requirements": [{"rule": "Large", "approvers": 2, "groups": ["treasury"], "within": "4h",
//	                   "message": "two treasurers"}],
//	 "created": "2026-11-22T10:00:00Z", "expires": "2026-11-22T14:00:00Z",
//	 "state": "pending",
//	 "approvals": [{"approver": "alice@example.com", "time": "2026-11-22T10:05:00Z",
//	                "note": "rulelock approval v1\nrequest req-42\n…"}]}
//
// A rejection is in "rejection" (with the approver's "reason"), the time it
// left pending in "ended", and "reconcile" is present (true) only for a
// request restored as approved but not executed. UnmarshalJSON reads this
// encoding back, strictly enough that a client (rulelock approve) can
// rebuild the statement to sign from it.

// requestJSON is the JSON encoding of a Request.
type requestJSON struct {
	ID           string               `json:"id"`
	Agent        string               `json:"agent"`
	ActionHash   string               `json:"action_hash"`
	Policy       string               `json:"policy"`
	Requirements []policy.Requirement `json:"requirements"`
	Created      time.Time            `json:"created,omitzero"`
	Expires      time.Time            `json:"expires,omitzero"`
	State        State                `json:"state"`
	Approvals    []voteJSON           `json:"approvals"`
	Rejection    *voteJSON            `json:"rejection,omitempty"`
	Ended        time.Time            `json:"ended,omitzero"`
	Reconcile    bool                 `json:"reconcile,omitempty"`
}

// voteJSON is the JSON encoding of a Vote.
type voteJSON struct {
	Approver string    `json:"approver"`
	Time     time.Time `json:"time,omitzero"`
	Reason   string    `json:"reason,omitempty"`
	Note     string    `json:"note"`
}

// MarshalJSON encodes r as the API's approval object.
func (r Request) MarshalJSON() ([]byte, error) {
	w := requestJSON{
		ID: r.ID, Agent: r.Agent, ActionHash: ActionHash(r.Action), Policy: r.Policy,
		Requirements: r.Requirements,
		Created:      r.Created, Expires: r.Expires, State: r.State,
		Approvals: make([]voteJSON, len(r.Approvals)),
		Ended:     r.Ended, Reconcile: r.Reconcile,
	}
	if w.Requirements == nil {
		w.Requirements = []policy.Requirement{}
	}
	for i, v := range r.Approvals {
		w.Approvals[i] = v.json()
	}
	if r.Rejection != nil {
		v := r.Rejection.json()
		w.Rejection = &v
	}
	return json.Marshal(w)
}

// MarshalJSON encodes v as an entry of the approval object's "approvals".
func (v Vote) MarshalJSON() ([]byte, error) { return json.Marshal(v.json()) }

func (v Vote) json() voteJSON {
	return voteJSON{Approver: v.Approver, Time: v.Time, Reason: v.Reason, Note: string(v.Note)}
}

// UnmarshalJSON reads the API's approval object. The action hash must be
// "sha256:" and 64 lowercase hex digits.
func (r *Request) UnmarshalJSON(b []byte) error {
	var w requestJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	action, err := ParseActionHash(w.ActionHash)
	if err != nil {
		return err
	}
	out := Request{ID: w.ID, Agent: w.Agent, Action: action, Policy: w.Policy, Requirements: w.Requirements,
		Created: w.Created, Expires: w.Expires, State: w.State, Ended: w.Ended, Reconcile: w.Reconcile}
	for _, v := range w.Approvals {
		out.Approvals = append(out.Approvals, v.vote())
	}
	if w.Rejection != nil {
		v := w.Rejection.vote()
		out.Rejection = &v
	}
	*r = out
	return nil
}

// UnmarshalJSON reads an entry of the approval object's "approvals".
func (v *Vote) UnmarshalJSON(b []byte) error {
	var w voteJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*v = w.vote()
	return nil
}

func (w voteJSON) vote() Vote {
	v := Vote{Approver: w.Approver, Time: w.Time, Reason: w.Reason}
	if w.Note != "" {
		v.Note = []byte(w.Note)
	}
	return v
}

// ActionHash formats the SHA-256 of a canonical action as the API and the
// statements write it: "sha256:" and 64 lowercase hex digits.
func ActionHash(h [32]byte) string { return "sha256:" + hex.EncodeToString(h[:]) }

// ParseActionHash reads a hash written by ActionHash.
func ParseActionHash(s string) ([32]byte, error) {
	var h [32]byte
	x, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(x) != 64 || strings.ToLower(x) != x {
		return h, fmt.Errorf("action hash %q: want sha256:<64 lowercase hex digits>", s)
	}
	if _, err := hex.Decode(h[:], []byte(x)); err != nil {
		return h, fmt.Errorf("action hash %q: %w", s, err)
	}
	return h, nil
}
