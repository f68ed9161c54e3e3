package ledger

import "github.com/rulelock/rulelock/policy"

// Decision is what a DECISION entry records (audit.Entry.Decision): the
// policy's effect, or Approved for the re-decision that executes a parked
// request once its quorum is met.
type Decision string

// Decisions.
const (
	Allow                    = Decision(policy.Allow)
	Deny                     = Decision(policy.Deny)
	RequireApproval          = Decision(policy.RequireApproval)
	Approved        Decision = "approved"
)

// Allowed reports whether d lets the action through: it then counts against
// the limits from the moment it is decided.
func (d Decision) Allowed() bool { return d == Allow || d == Approved }

// Verb is what an APPROVAL entry records (audit.Entry.Decision): one event
// of a parked request.
type Verb string

// Approval events.
const (
	Approve  Verb = "approve"
	Reject   Verb = "reject"
	Expired  Verb = "expired"
	Executed Verb = "executed"
)

// Status is what became of an execution (audit.Entry.Status of an OUTCOME).
type Status string

// Outcome statuses.
const (
	OK      Status = "ok"      // the upstream did it
	Error   Status = "error"   // the upstream refused or failed, or it was never reached
	Unknown Status = "unknown" // it may or may not have happened (timeout after sending, crash)
)

// Reason is the gateway's own reason for a denial the policy did not make
// (audit.Entry.Message of a deny decision): the request was evaluated, then
// refused by the gateway. A replay accepts these denials whatever the
// policy decides, and only these.
type Reason string

// The gateway's reasons.
const (
	NoApprovers        Reason = "no_approvers"        // require_approval and no approvers configured
	ApprovalQueueFull  Reason = "approval_queue_full" // the agent has too many parked requests
	ApprovalImpossible Reason = "approval_impossible" // no set of approvers can meet the requirement
	PolicyChanged      Reason = "policy_changed"      // approved under a policy that is no longer active
	PrincipalRevoked   Reason = "principal_revoked"   // the agent was removed or lost its roles while parked
	OverBudget         Reason = "memory_budget"       // the ledger is at its memory budget
	HistoryLimit       Reason = "history_limit"       // logs of rulelock 0.1: the history count cap
)

// The reasons of a parked request's final decision when no DECISION entry
// made it: its approvers rejected it, or its time ran out (an APPROVAL
// entry records either). The API reports such a request as denied with
// one of these. They are not gateway reasons: no deny decision entry
// holds them.
const (
	ApprovalRejected Reason = "approval_rejected"
	ApprovalExpired  Reason = "approval_expired"
)

// GatewayReason reports whether msg, a deny decision's message, is one of
// the gateway's reasons.
func GatewayReason(msg string) (Reason, bool) {
	switch r := Reason(msg); r {
	case NoApprovers, ApprovalQueueFull, ApprovalImpossible, PolicyChanged, PrincipalRevoked, OverBudget, HistoryLimit, Frozen:
		return r, true
	}
	return "", false
}

// Consequence is what an outcome changes in the ledger; the OUTCOME entry
// records it (its State) so that the fold reads it rather than re-deriving it.
type Consequence struct {
	// Counts: the action still counts against limits. Only an execution the
	// gateway itself saw fail is released; whatever an agent reports of a
	// decide-only action, and an unknown outcome, counts.
	Counts bool `json:"counts"`
	// Succeeded: the action counts for succeeded(): the execution was ok
	// and no enforced postcondition was violated.
	Succeeded bool `json:"succeeded"`
}

// ConsequenceOf is the consequence of an outcome: its status, whether the
// agent reported it (decide-only action types), and whether an enforced
// postcondition was violated.
func ConsequenceOf(status Status, reported, violated bool) Consequence {
	return Consequence{Counts: status != Error || reported, Succeeded: status == OK && !violated}
}

// The encodings of the four consequences, as OUTCOME entries record them.
var consequenceText = map[Consequence]string{
	{Counts: true, Succeeded: true}:   `{"counts":true,"succeeded":true}`,
	{Counts: true, Succeeded: false}:  `{"counts":true,"succeeded":false}`,
	{Counts: false, Succeeded: true}:  `{"counts":false,"succeeded":true}`,
	{Counts: false, Succeeded: false}: `{"counts":false,"succeeded":false}`,
}

// String is the JSON text an OUTCOME entry's State holds.
func (c Consequence) String() string { return consequenceText[c] }

// ParseConsequence reads an OUTCOME entry's State.
func ParseConsequence(s string) (Consequence, bool) {
	for c, t := range consequenceText {
		if t == s {
			return c, true
		}
	}
	return Consequence{}, false
}
