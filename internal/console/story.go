package console

import (
	"fmt"
	"strings"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/ledger"
	"github.com/rulelock/rulelock/internal/review"
	"github.com/rulelock/rulelock/internal/search"
	"github.com/rulelock/rulelock/policy"
)

// A story is everything the log holds about one request, in log order:
// its decisions, the approvals, rejections and refused votes, the expiry,
// the outcome.
type story struct {
	Decision      *audit.Entry // the request's first decision
	DecisionIndex int64
	Items         []storyItem
	Approvals     []approval.Vote // the accepted approvals
	State         string          // what became of it, as the log says (escaped)
}

// A storyItem is one entry of a story, every string escaped.
type storyItem struct {
	Index                         int64
	Time, Kind, What, Who, Detail string
	Held                          string // how the log holds the detail when not inline (heldNote), or ""
	Refused                       bool   // a refused vote
}

// maxStory caps the entries a story reads: a request has a handful.
const maxStory = 1000

// readStory reads the story of request id from the log; nil when the log
// holds nothing about it.
func (s *Server) readStory(id string) (*story, error) {
	if id == "" {
		return nil, nil
	}
	hits, _, err := s.find(search.Query{RequestID: id}, 0, maxStory)
	if len(hits) == 0 {
		return nil, err
	}
	st := &story{DecisionIndex: -1}
	var decision, verb, status string
	for _, h := range hits {
		e := h.Entry
		it := storyItem{Index: h.Index, Time: e.Time.UTC().Format(time.RFC3339Nano), Kind: review.Escape(string(e.Kind)), What: review.Escape(e.Decision)}
		switch e.Kind {
		case audit.KindDecision:
			if st.Decision == nil {
				st.Decision, st.DecisionIndex = e, h.Index
			}
			decision = e.Decision
			it.Who, it.Detail = "agent "+review.Escape(e.Agent), review.Escape(e.Message)
		case audit.KindApproval:
			verb = e.Decision
			it.Who = review.Escape(e.Approver)
			if e.Approver == "" {
				it.Who = "rulelock"
			}
			switch ledger.Verb(e.Decision) {
			case ledger.Approve:
				st.Approvals = append(st.Approvals, approval.Vote{Approver: e.Approver, Time: e.Time})
			case ledger.Reject:
				it.Detail = "reason: " + review.Quote(rejectReason(e.Signature))
			}
		case audit.KindOutcome:
			status = e.Status
			it.What = "outcome " + review.Escape(e.Status)
			it.Who, it.Detail, it.Held = "agent "+review.Escape(e.Agent), review.Escape(e.Result.Text), heldNote("result", e.Result)
		case audit.KindNote:
			it.Who, it.Detail = review.Escape(e.Approver), review.Escape(e.Message)
			if v, ok := gateway.ParseRefusedVote(e); ok {
				it.What, it.Refused = "refused "+review.Escape(string(v.Verb)), true
				it.Detail = review.Escape(v.Code) + ": " + review.Escape(v.Reason)
			}
		}
		st.Items = append(st.Items, it)
	}
	st.State = review.Escape(finalState(decision, verb, status))
	return st, err
}

// finalState says what became of a request from its last decision, its
// last approval event and its outcome's status.
func finalState(decision, verb, status string) string {
	var parts []string
	switch ledger.Verb(verb) {
	case ledger.Reject:
		parts = append(parts, "rejected")
	case ledger.Expired:
		parts = append(parts, "expired")
	default:
		if decision == string(ledger.RequireApproval) {
			parts = append(parts, "parked for approval")
		} else {
			parts = append(parts, decision)
		}
	}
	if status != "" {
		parts = append(parts, "outcome "+status)
	}
	return strings.Join(parts, ", ")
}

// rejectReason is the reason in a signed rejection statement, or "" when
// the note does not hold one this console can read.
func rejectReason(signed []byte) string {
	text, _, ok := strings.Cut(string(signed), "\n\n")
	if !ok {
		return ""
	}
	st, err := approval.ParseStatement([]byte(text + "\n"))
	if err != nil {
		return ""
	}
	return st.Reason
}

// review is the review of a finished request, made from its first
// decision entry and its approvals, with notes for the fields the log holds
// other than inline (by digest, or as a commitment): the action's, and the
// agent's claims'.
func (st *story) review(now time.Time) (v *review.Review, actionNote, claimNote string) {
	e := st.Decision
	ar := approval.Request{ID: e.RequestID, Agent: e.Agent, Action: e.ActionSHA256, Created: e.Time, Approvals: st.Approvals}
	if ds, err := ledger.DecodeDecisionState(e.State); err == nil && ds.Approval != nil {
		ar.Expires = ds.Approval.Expires
		for _, q := range ds.Approval.Requirements {
			ar.Requirements = append(ar.Requirements, policy.Requirement{Rule: q.Rule, Approvers: q.Approvers, Groups: q.Groups, Message: q.Message})
		}
	}
	var rules []policy.FiredRule
	for _, r := range e.Rules {
		rules = append(rules, policy.FiredRule{Name: r.Name, Outcome: policy.Outcome(r.Outcome), Message: r.Message, Shadow: r.Shadow})
	}
	v = review.New(review.Request{Parked: ar, Action: []byte(e.Action.Text), Instruction: e.Instruction.Text, Reasoning: e.Reasoning.Text, Rules: rules}, now)
	v.State = st.State
	var claims []string
	for _, c := range []struct {
		name string
		f    audit.Field
	}{{"instruction", e.Instruction}, {"reasoning", e.Reasoning}} {
		if n := heldNote(c.name, c.f); n != "" {
			claims = append(claims, n)
		}
	}
	return v, heldNote("action", e.Action), strings.Join(claims, "; ")
}

// heldNote says how the log holds field name when it is not inline, or "":
// a large value by its digest (its bytes in the log's blob store), a
// sensitive one as a commitment. Such a field is shown as this note,
// never as an empty value.
func heldNote(name string, f audit.Field) string {
	switch {
	case !f.Digest.IsZero():
		return fmt.Sprintf("the log holds the %s by its digest (sha256:%s, %d bytes), not inline", name, f.Digest, f.Size)
	case !f.Commitment.IsZero():
		return fmt.Sprintf("the %s is sensitive: the log holds a commitment to it (hmac:%s), not the value", name, f.Commitment)
	}
	return ""
}

// A heldField is a field of an entry the log holds other than inline.
type heldField struct{ Name, Note string }

// heldFields lists e's fields held by digest or as a commitment, in the
// entry's order.
func heldFields(e *audit.Entry) []heldField {
	var out []heldField
	for _, f := range []struct {
		name string
		f    audit.Field
	}{{"action", e.Action}, {"instruction", e.Instruction}, {"reasoning", e.Reasoning}, {"result", e.Result}, {"state", e.State}, {"raw", e.Raw}} {
		if n := heldNote(f.name, f.f); n != "" {
			out = append(out, heldField{f.name, n})
		}
	}
	return out
}
