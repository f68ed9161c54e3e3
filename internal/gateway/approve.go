package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/policy"
)

// Approval entries in the log: an APPROVAL entry's Decision says which
// event of a parked request it records.
const (
	approvalApprove  = "approve"
	approvalReject   = "reject"
	approvalExpired  = "expired"
	approvalExecuted = "executed"
)

// decisionState is what a decision entry keeps in its State field besides
// the entry's own fields: the inputs a replay or a restarted gateway needs
// (the agent's roles, which come from authentication) and, for a parked
// request, its approval terms.
type decisionState struct {
	AgentRoles []string     `json:"agent_roles"`
	Approval   *parkedState `json:"approval,omitempty"`
}

func decodeDecisionState(f audit.Field) (decisionState, error) {
	var st decisionState
	if f.Text == "" {
		return st, nil // refusals and older entries
	}
	err := json.Unmarshal([]byte(f.Text), &st)
	return st, err
}

// parkedState is the approval terms of a parked request, so that a
// restarted gateway can park it again.
type parkedState struct {
	Requirements []requirementState `json:"requirements"`
	Expires      time.Time          `json:"expires"`
}

type requirementState struct {
	Rule      string   `json:"rule"`
	Approvers int      `json:"approvers"`
	Groups    []string `json:"groups,omitempty"`
	Within    string   `json:"within,omitempty"`
}

// approvals wires the approval manager to the log.
type approvals struct {
	m *approval.Manager

	mu       sync.Mutex
	parking  map[string]*audit.Entry  // decision entries waiting for their parked event
	receipts map[string]audit.Receipt // where each parked decision went
	log      Recorder
}

// receipt returns (and forgets) where the parked decision of id was logged.
func (a *approvals) receipt(id string) audit.Receipt {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.receipts[id]
	delete(a.receipts, id)
	return r
}

// record is the approval manager's Recorder: each event becomes a durable
// log entry before it takes effect.
func (a *approvals) record(ev approval.Event) error {
	var e *audit.Entry
	switch ev.Kind {
	case approval.EventParked:
		a.mu.Lock()
		e = a.parking[ev.Request]
		delete(a.parking, ev.Request)
		a.mu.Unlock()
		if e == nil {
			return fmt.Errorf("park %s: no decision to record", ev.Request)
		}
		ds, err := decodeDecisionState(e.State)
		if err != nil {
			return fmt.Errorf("park %s: %w", ev.Request, err)
		}
		ps := &parkedState{Expires: ev.Expires}
		for _, r := range ev.Requirements {
			rs := requirementState{Rule: r.Rule, Approvers: r.Approvers, Groups: r.Groups}
			if r.Within > 0 {
				rs.Within = r.Within.String()
			}
			ps.Requirements = append(ps.Requirements, rs)
		}
		ds.Approval = ps
		b, _ := json.Marshal(ds)
		e.State = audit.Text(string(b))
		e.Time = ev.Time
	default:
		e = &audit.Entry{Kind: audit.KindApproval, Time: ev.Time, RequestID: ev.Request, Approver: ev.Approver, Signature: ev.Note}
		switch ev.Kind {
		case approval.EventApproval:
			e.Decision = approvalApprove
		case approval.EventRejection:
			e.Decision = approvalReject
		case approval.EventExpired:
			e.Decision = approvalExpired
		case approval.EventExecuted:
			e.Decision = approvalExecuted
		}
	}
	r, err := a.log.Append(context.Background(), e)
	if err == nil && ev.Kind == approval.EventParked {
		a.mu.Lock()
		a.receipts[ev.Request] = r
		a.mu.Unlock()
	}
	return err
}

// park records a require_approval decision through the approval manager,
// which logs it as the parked event. It returns the parked request, or the
// refusal (queue full, no approvers could ever meet it).
func (g *Gateway) park(id string, req *Request, d *policy.Decision, entry *audit.Entry) (approval.Request, error) {
	a := g.approvals
	a.mu.Lock()
	a.parking[id] = entry
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.parking, id)
		a.mu.Unlock()
	}()
	return a.m.Park(approval.Request{ID: id, Agent: req.Agent.ID, Action: req.Action.Hash, Policy: d.Policy, Requirements: d.Approval.Requirements})
}

// ApprovalResult is the answer to an approval or rejection.
type ApprovalResult struct {
	Request approval.Request `json:"request"`
	// Result is set when this approval completed the quorum: the request
	// was re-evaluated and, unless that denied it, executed.
	Result *Result `json:"result,omitempty"`
}

// ErrNoApprovals is returned when the gateway has no approvers configured.
var ErrNoApprovals = errors.New("no approvers are configured")

// Approve submits a signed approval. The approval that completes the quorum
// re-evaluates the request under the current policy and executes it, once.
func (g *Gateway) Approve(ctx context.Context, id string, signed []byte) (*ApprovalResult, error) {
	if g.approvals == nil {
		return nil, ErrNoApprovals
	}
	res, err := g.approvals.m.Approve(id, signed)
	if err != nil {
		return nil, err
	}
	out := &ApprovalResult{Request: res.Request}
	if !res.Ready {
		return out, nil
	}
	r, err := g.executeApproved(ctx, id)
	if err != nil {
		return out, err
	}
	out.Result = r
	return out, nil
}

// Reject submits a signed rejection, which ends the request.
func (g *Gateway) Reject(ctx context.Context, id string, signed []byte) (*ApprovalResult, error) {
	if g.approvals == nil {
		return nil, ErrNoApprovals
	}
	r, err := g.approvals.m.Reject(id, signed)
	if err != nil {
		return nil, err
	}
	g.finish(id, "rejected")
	return &ApprovalResult{Request: r}, nil
}

// executeApproved runs a request whose quorum was just reached: it is
// re-evaluated with the agent's current history under the current policy;
// if the policy is the one the approvers signed for and it does not deny
// now, an APPROVED decision entry is appended and the action executed.
func (g *Gateway) executeApproved(ctx context.Context, id string) (*Result, error) {
	g.mu.Lock()
	rec, ok := g.requests[id]
	g.mu.Unlock()
	if !ok {
		return nil, ErrNotFound
	}
	st := g.agent(rec.Agent)
	st.mu.Lock()
	now := g.cfg.Now().UTC()
	d := g.evaluate(&policy.Request{
		Action: rec.Action, Agent: rec.agent, Session: policy.Session{ID: rec.Session, History: st.history},
		Instruction: rec.instruction, Reasoning: rec.reasoning, Now: now,
	})
	final := d
	switch {
	case d.Policy != rec.Decision.Policy:
		final = &policy.Decision{Decision: policy.Deny, Reason: "policy_changed", Rules: d.Rules,
			Errors: []policy.RuleError{{Code: "policy_changed", Message: "the policy changed since the approvers signed"}}, ActionHash: d.ActionHash, Policy: d.Policy}
	case d.Decision == policy.Deny:
	default:
		final = &policy.Decision{Decision: "approved", Reason: "approved", Rules: d.Rules, Errors: d.Errors, ActionHash: d.ActionHash, Policy: d.Policy}
	}
	entry := decisionEntry(id, &Request{Agent: rec.agent, Session: rec.Session, Action: rec.Action, Instruction: rec.instruction, Reasoning: rec.reasoning}, final, now, "")
	r, err := g.cfg.Log.Append(context.WithoutCancel(ctx), &entry)
	if err != nil {
		st.mu.Unlock()
		return nil, fmt.Errorf("record approved decision: %w: %v", ErrUnavailable, err)
	}
	if final.Decision == "approved" {
		st.history = append(st.history, policy.HistoryEntry{Action: rec.Action.Fields, Type: rec.Action.Type, Decision: "approved", Time: now})
		st.ids = append(st.ids, id)
	}
	st.mu.Unlock()
	g.mu.Lock()
	rec.Decision, rec.Entry = final, r
	g.mu.Unlock()
	res := &Result{RequestID: id, Decision: final, Receipt: receiptOf(r)}
	if final.Decision == "approved" {
		if err := g.run(ctx, rec, res); err != nil {
			return nil, err
		}
	}
	if err := g.approvals.m.MarkExecuted(id); err != nil {
		return res, fmt.Errorf("mark executed: %w", err)
	}
	g.finish(id, "")
	return res, nil
}

// finish wakes whoever waits on request id.
func (g *Gateway) finish(id, state string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if rec, ok := g.requests[id]; ok {
		if state != "" {
			rec.approvalState = state
		}
		if rec.done != nil {
			select {
			case <-rec.done:
			default:
				close(rec.done)
			}
		}
	}
}

// Pending lists the requests waiting for approval, oldest first.
func (g *Gateway) Pending() []PendingRequest {
	if g.approvals == nil {
		return nil
	}
	var out []PendingRequest
	for _, r := range g.approvals.m.Pending("") {
		pr := PendingRequest{Request: r, Approve: string(r.Statement(approval.Approve, "").Marshal())}
		g.mu.Lock()
		if rec, ok := g.requests[r.ID]; ok {
			pr.Action = json.RawMessage(rec.Action.JSON)
			pr.Instruction, pr.Reasoning = rec.instruction, rec.reasoning
			pr.Rules = rec.Decision.Rules
		}
		g.mu.Unlock()
		out = append(out, pr)
	}
	return out
}

// PendingRequest is what an approver needs to decide: the canonical action
// (whose SHA-256 the statement names), why it was parked, and the exact
// statement to sign.
type PendingRequest struct {
	Request     approval.Request   `json:"request"`
	Action      json.RawMessage    `json:"action"`
	Instruction string             `json:"instruction,omitempty"`
	Reasoning   string             `json:"reasoning,omitempty"`
	Rules       []policy.FiredRule `json:"rules"`
	Approve     string             `json:"approve_statement"`
}

// RunExpiry ends parked requests at their expiry (logged) until ctx is done.
func (g *Gateway) RunExpiry(ctx context.Context) {
	if g.approvals == nil {
		return
	}
	for {
		wait := time.Second
		if t, ok := g.approvals.m.NextExpiry(); ok {
			if d := t.Sub(g.cfg.Now()); d < wait {
				wait = max(d, time.Millisecond)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		ended, _ := g.approvals.m.Expire(g.cfg.Now())
		for _, r := range ended {
			g.finish(r.ID, "expired")
		}
	}
}

// Wait returns the request once it is final (denied, executed, rejected,
// expired) or ctx is done, whichever is first.
func (g *Gateway) Wait(ctx context.Context, agent, id string) (*Result, error) {
	g.mu.Lock()
	rec, ok := g.requests[id]
	var done chan struct{}
	if ok && rec.Agent == agent {
		done = rec.done
	}
	g.mu.Unlock()
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
	return g.Get(agent, id)
}
