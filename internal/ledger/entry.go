package ledger

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/strictjson"
	"github.com/rulelock/rulelock/policy"
)

// DecisionState is what a DECISION entry keeps in its State field besides
// the entry's own fields: the inputs a replay or a restarted gateway needs
// (the agent's roles and principal, which come from authentication and the
// configuration), for a parked request its approval terms, and for a call
// through the MCP proxy the tool definition it was decided against.
type DecisionState struct {
	AgentRoles []string     `json:"agent_roles"`
	Principal  string       `json:"principal,omitempty"`
	Approval   *ParkedState `json:"approval,omitempty"`
	Tool       *ToolRef     `json:"tool,omitempty"`
}

// ToolRef names an MCP tool definition: the upstream server, the tool's
// name there, and the SHA-256 of its canonical definition (the hash that
// pins accept). It is a record, not a policy input.
type ToolRef struct {
	Server           string `json:"server"`
	Name             string `json:"name"`
	DefinitionSHA256 string `json:"definition_sha256"`
}

// DecodeDecisionState reads a DECISION entry's State.
func DecodeDecisionState(f audit.Field) (DecisionState, error) {
	var st DecisionState
	if f.Text == "" {
		return st, nil // refusals and older entries
	}
	err := json.Unmarshal([]byte(f.Text), &st)
	return st, err
}

// ParkedState is the approval terms of a parked request, so that a
// restarted gateway can park it again.
type ParkedState struct {
	Requirements []RequirementState `json:"requirements"`
	Expires      time.Time          `json:"expires"`
}

// RequirementState is one requirement of ParkedState.
type RequirementState struct {
	Rule      string   `json:"rule"`
	Approvers int      `json:"approvers"`
	Groups    []string `json:"groups,omitempty"`
	Within    string   `json:"within,omitempty"`
	Message   string   `json:"message,omitempty"`
}

// Decoded is a DECISION entry read back: the request as the gateway
// evaluated it. Action is nil for a request refused before decoding
// (malformed, oversized; recorded without a decision state): nothing was
// evaluated and nothing is folded.
type Decoded struct {
	Action   *policy.Action
	Agent    policy.Agent
	State    DecisionState
	Decision Decision
}

// BlobReader reads a large field stored by digest.
type BlobReader interface {
	Blob(d audit.Digest) ([]byte, error)
}

// Decode reads a DECISION entry: its state and its action, decoded
// strictly and canonicalised; a refusal's raw text decodes to a nil Action.
// It does not compare the action with the entry's action_sha256 (the
// verifier's job; not done yet).
func Decode(e *audit.Entry, blobs BlobReader) (*Decoded, error) {
	st, err := DecodeDecisionState(e.State)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	d := &Decoded{State: st, Decision: Decision(e.Decision),
		Agent: policy.Agent{ID: e.Agent, Roles: st.AgentRoles, Principal: st.Principal}}
	if e.State.IsZero() {
		// Only a refusal (gateway.Refuse: malformed, oversized, of an
		// unknown shape) has no decision state: its action text is what the
		// agent sent, never evaluated, and folds to nothing, even when it
		// happens to parse as an action.
		return d, nil
	}
	text := e.Action.Text
	if text == "" && !e.Action.Digest.IsZero() {
		b, err := blobs.Blob(e.Action.Digest)
		if err != nil {
			return nil, fmt.Errorf("action: %w", err)
		}
		text = string(b)
	}
	v, err := strictjson.Decode([]byte(text), strictjson.Limits{})
	if err != nil {
		return nil, fmt.Errorf("action: %w", err)
	}
	act, err := policy.NewAction(v)
	if err != nil {
		return nil, err
	}
	d.Action = &act
	return d, nil
}

// OutcomeOf reads an OUTCOME entry: its status and consequence. Entries
// without a recorded consequence (rulelock 0.1) get the one ConsequenceOf
// gives, with the reported flag from the result.
func OutcomeOf(e *audit.Entry) (Status, Consequence) {
	st := Status(e.Status)
	if c, ok := ParseConsequence(e.State.Text); ok {
		return st, c
	}
	var r struct {
		Reported bool `json:"reported"`
	}
	_ = json.Unmarshal([]byte(e.Result.Text), &r)
	violated := false
	for _, v := range e.Postconditions {
		violated = violated || !v.Holds && !v.Shadow
	}
	return st, ConsequenceOf(st, r.Reported, violated)
}

// Apply folds one log entry: the one fold that a restart and a replay run
// over the log, and that the gateway runs live through Txn.Decided and
// Outcome. d is the entry's Decode for a decision (nil otherwise).
func (l *Ledger) Apply(e *audit.Entry, d *Decoded) {
	switch e.Kind {
	case audit.KindDecision:
		if d == nil || d.Action == nil {
			return
		}
		tx := l.Begin(d.Agent, e.Session, d.Action.Type, 0)
		tx.Decided(e.RequestID, d.Action, d.Decision, e.Message, e.Time, true)
		tx.Unlock()
	case audit.KindOutcome:
		st, c := OutcomeOf(e)
		l.Outcome(e.Agent, e.RequestID, st, c)
	}
}
