package ledger

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
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
	// Sealed names the members of the logged action that hold an
	// audit.Commitment in place of a sensitive value, sorted. Only these
	// are opened: a value an agent sent that looks like a commitment is
	// data like any other.
	Sealed []string `json:"sealed,omitempty"`
	Tool   *ToolRef `json:"tool,omitempty"`
	// Reload is set on the denial of a parked request that a reload of
	// the configuration ended (Reason PrincipalRevoked or
	// ApprovalImpossible, no quorum met): the config digest
	// ("sha256:<hex>") the reload's note names (ParseReloadNote).
	Reload string `json:"reload,omitempty"`
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

// Terms returns the parked request's requirements as the policy stated
// them, and the decision's approval terms (policy.Approval) they make.
func (ps *ParkedState) Terms() ([]policy.Requirement, *policy.Approval, error) {
	a := &policy.Approval{}
	for _, r := range ps.Requirements {
		q := policy.Requirement{Rule: r.Rule, Approvers: r.Approvers, Groups: r.Groups, Message: r.Message}
		if r.Within != "" {
			d, err := time.ParseDuration(r.Within)
			if err != nil {
				return nil, nil, fmt.Errorf("requirement %q: within: %w", r.Rule, err)
			}
			q.Within = d
		}
		a.Add(q)
	}
	return slices.Clone(a.Requirements), a, nil
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
	// Instruction and Reasoning are the entry's, read from the blob store
	// when they were stored by digest.
	Instruction, Reasoning string
	// Logged is the action as the log holds it when it has sensitive
	// members (audit.Commitment objects in their place); Action has them
	// opened, except those named in Sealed, whose salts are gone: there
	// the commitment object stands in Action too.
	Logged []byte
	Sealed []string
}

// BlobReader reads a large field stored by digest.
type BlobReader interface {
	Blob(d audit.Digest) ([]byte, error)
}

// Unsealer opens a sensitive value of the log (audit.Log.Unseal): a
// BlobReader that is one too lets Decode give the action as it was
// evaluated. It returns an error wrapping audit.ErrShredded when the value's
// salt is gone.
type Unsealer interface {
	Unseal(c audit.Commitment) ([]byte, error)
}

// Decode reads a DECISION entry: its state and its action, decoded
// strictly; a refusal's raw text decodes to a nil Action. The action (inline
// or from the blob store) must be its own canonical form and hash to the
// entry's action_sha256, or Decode fails with audit.ErrActionMismatch: what the
// fold, a restart and a replay use is exactly what the log's hash names.
func Decode(e *audit.Entry, blobs BlobReader) (*Decoded, error) {
	var texts [3]string
	for i, f := range [...]struct {
		name  string
		field audit.Field
	}{{"state", e.State}, {"instruction", e.Instruction}, {"reasoning", e.Reasoning}} {
		t, err := FieldText(f.field, blobs)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
		texts[i] = t
	}
	st, err := DecodeDecisionState(audit.Text(texts[0]))
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	d := &Decoded{State: st, Decision: Decision(e.Decision), Instruction: texts[1], Reasoning: texts[2],
		Agent: policy.Agent{ID: e.Agent, Roles: st.AgentRoles, Principal: st.Principal}}
	if e.State.IsZero() {
		// Only a refusal (gateway.Refuse: malformed, oversized, of an
		// unknown shape) has no decision state: its action text is what the
		// agent sent, never evaluated, and folds to nothing, even when it
		// happens to parse as an action.
		return d, nil
	}
	text, err := FieldText(e.Action, blobs)
	if err != nil {
		return nil, fmt.Errorf("action: %w", err)
	}
	v, err := strictjson.Decode([]byte(text), strictjson.Limits{})
	if err != nil {
		return nil, fmt.Errorf("action: %w", err)
	}
	act, err := policy.NewAction(v)
	if err != nil {
		return nil, err
	}
	if err := checkLogged(text, act, e.ActionSHA256); err != nil {
		return nil, fmt.Errorf("action: %w", err)
	}
	d.Action = &act
	if len(st.Sealed) > 0 {
		// act is the action as logged, whose hash is the entry's; the
		// policy evaluated it opened.
		u, _ := blobs.(Unsealer)
		if err := d.unseal(text, u); err != nil {
			return nil, fmt.Errorf("action: %w", err)
		}
	}
	return d, nil
}

// checkLogged checks the action text as the log holds it against act, its
// strict decoding: the text is act's canonical (RFC 8785) form, so it is
// what act.Hash hashes, and that is the entry's action_sha256; or the
// error wraps audit.ErrActionMismatch. (NewAction canonicalises anyway:
// comparing its bytes costs nothing more.)
func checkLogged(text string, act policy.Action, sum audit.Digest) error {
	switch {
	case string(act.JSON) != text:
		return fmt.Errorf("%w: the text is not in canonical form", audit.ErrActionMismatch)
	case act.Hash != sum:
		return fmt.Errorf("%w: it hashes to %x, action_sha256 is %v", audit.ErrActionMismatch, act.Hash, sum)
	}
	return nil
}

// FieldText returns the text of a field: inline, or for one stored by
// digest its blob, which must have the recorded size and SHA-256 (whatever
// the BlobReader checks). A commitment, or an absent field, is "".
func FieldText(f audit.Field, blobs BlobReader) (string, error) {
	if f.Digest.IsZero() {
		return f.Text, nil
	}
	b, err := blobs.Blob(f.Digest)
	if err != nil {
		return "", err
	}
	if int64(len(b)) != f.Size || audit.Digest(sha256.Sum256(b)) != f.Digest {
		return "", fmt.Errorf("blob %v: %d bytes that do not match the recorded digest and size %d", f.Digest, len(b), f.Size)
	}
	return string(b), nil
}

// unseal replaces d.Action, the action as logged, by the action with the
// commitments of the members d.State.Sealed names opened with u, keeping
// the text as logged and the names of the members it could not open.
func (d *Decoded) unseal(text string, u Unsealer) error {
	m := maps.Clone(d.Action.Fields)
	d.Logged = []byte(text)
	for _, name := range d.State.Sealed {
		c, ok, err := audit.ParseCommitment(m[name])
		if err == nil && !ok {
			err = errors.New("not a commitment")
		}
		if err != nil {
			return fmt.Errorf("sealed member %q: %w", name, err)
		}
		if u == nil {
			d.Sealed = append(d.Sealed, name)
			continue
		}
		b, err := u.Unseal(c)
		if errors.Is(err, audit.ErrShredded) {
			d.Sealed = append(d.Sealed, name)
			continue
		}
		if err != nil {
			return fmt.Errorf("member %q: %w", name, err)
		}
		if m[name], err = strictjson.Decode(b, strictjson.Limits{}); err != nil {
			return fmt.Errorf("member %q: sealed value: %w", name, err)
		}
	}
	act, err := policy.NewAction(m)
	if err != nil {
		return err
	}
	d.Action = &act
	return nil
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
	case audit.KindNote:
		l.freeze.apply(e)
	}
}
