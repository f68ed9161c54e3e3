package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/ledger"
	"github.com/rulelock/rulelock/internal/tracing"
	"github.com/rulelock/rulelock/policy"
)

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
	case approval.EventRevoked:
		// The gateway's denial, prepared by revoke: the DECISION entry.
		a.mu.Lock()
		e = a.parking[ev.Request]
		delete(a.parking, ev.Request)
		a.mu.Unlock()
		if e == nil {
			return fmt.Errorf("revoke %s: no decision to record", ev.Request)
		}
		e.Time = ev.Time
	case approval.EventParked:
		a.mu.Lock()
		e = a.parking[ev.Request]
		delete(a.parking, ev.Request)
		a.mu.Unlock()
		if e == nil {
			return fmt.Errorf("park %s: no decision to record", ev.Request)
		}
		ds, err := ledger.DecodeDecisionState(e.State)
		if err != nil {
			return fmt.Errorf("park %s: %w", ev.Request, err)
		}
		ps := &ledger.ParkedState{Expires: ev.Expires}
		for _, r := range ev.Requirements {
			rs := ledger.RequirementState{Rule: r.Rule, Approvers: r.Approvers, Groups: r.Groups, Message: r.Message}
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
			e.Decision = string(ledger.Approve)
		case approval.EventRejection:
			e.Decision = string(ledger.Reject)
		case approval.EventExpired:
			e.Decision = string(ledger.Expired)
		case approval.EventExecuted:
			e.Decision = string(ledger.Executed)
		}
	}
	r, err := a.log.Append(context.Background(), e)
	if err == nil && (ev.Kind == approval.EventParked || ev.Kind == approval.EventRevoked) {
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
	_, hash := req.loggedAction() // approvers sign the action as logged
	return a.m.Park(approval.Request{ID: id, Agent: req.Agent.ID, Action: hash, Policy: d.Policy, Requirements: d.Approval.Requirements})
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

// Approve submits a signed approval on behalf of caller, the authenticated
// approver who sent it. The approval that completes the quorum
// re-evaluates the request under the current policy and executes it, once.
// A refused approval (an approval.Error) is logged (see RefusedVote) and
// returned as it is.
func (g *Gateway) Approve(ctx context.Context, caller, id string, signed []byte) (*ApprovalResult, error) {
	if g.approvals == nil {
		return nil, ErrNoApprovals
	}
	// An approval may complete the quorum and execute: refused, not
	// recorded, while the log could not vouch for what follows.
	if err := g.recording(); err != nil {
		return nil, err
	}
	if g.frozenNow() != nil {
		// Parked requests stay parked during a freeze: no quorum, no
		// execution. The refusal is logged as a refused vote is.
		e := &audit.Entry{Kind: audit.KindNote, Time: g.cfg.Now().UTC(), Approver: caller, EngineVersion: EngineVersion,
			Message: fmt.Sprintf("%s %s %s: %s", NoteRefusedVote, ledger.Approve, ledger.Frozen, FrozenMessage), Raw: audit.Field{Text: string(signed)}}
		if approval.ValidID(id) {
			e.RequestID = id
		}
		if _, err := g.cfg.Log.Append(context.WithoutCancel(ctx), e); err != nil {
			return nil, fmt.Errorf("record refused approve: %w: %v", ErrUnavailable, err)
		}
		return nil, ErrFrozen
	}
	// With replicas: the request's lock, and the log read up to it, so
	// that one approval in all the replicas completes the quorum.
	h, err := g.holdRequests(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("approve: %w", err)
	}
	defer release(h)
	res, err := g.approvals.m.Approve(id, signed)
	if err != nil {
		return nil, g.refusedVote(ctx, ledger.Approve, caller, id, signed, err)
	}
	out := &ApprovalResult{Request: res.Request}
	if !res.Ready {
		return out, nil
	}
	r, err := g.executeApproved(ctx, id, h)
	if err != nil {
		return out, err
	}
	out.Result = r
	if now, err := g.approvals.m.Get(id); err == nil {
		out.Request = now // executed: the state the reply reports is the one after it
	}
	return out, nil
}

// Reject submits a signed rejection on behalf of caller, which ends the
// request. A refused rejection is logged as a refused approval is.
func (g *Gateway) Reject(ctx context.Context, caller, id string, signed []byte) (*ApprovalResult, error) {
	if g.approvals == nil {
		return nil, ErrNoApprovals
	}
	h, err := g.holdRequests(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("reject: %w", err)
	}
	defer release(h)
	r, err := g.approvals.m.Reject(id, signed)
	if err != nil {
		return nil, g.refusedVote(ctx, ledger.Reject, caller, id, signed, err)
	}
	g.finish(id)
	return &ApprovalResult{Request: r}, nil
}

// NoteRefusedVote is the first word of the message of the note entry that
// records a refused approval or rejection (RefusedVote).
const NoteRefusedVote = "approval_refused"

// RefusedVote is what the note entry of a refused approval or rejection
// says, in its Message: "approval_refused <verb> <code>: <reason>", where
// verb is approve or reject and code is the refusal's stable code (the
// HTTP API's error code). The entry's Approver is the authenticated
// caller (who sent it, which is not always who signed it: an unknown key,
// another approver's statement), RequestID the request id as the caller
// gave it (when it is a well-formed id), and Raw the submitted statement
// (by its digest and size, the bytes in the blob store).
//
// A note, not an APPROVAL entry: a refused attempt changes no state (no
// vote, no quorum, no parked request), so the fold, the rebuild and
// verify --replay pass over it as over every note, and a verifier that
// knows only the existing kinds still reads the log.
type RefusedVote struct {
	Verb   ledger.Verb
	Code   string
	Reason string
}

// ParseRefusedVote reads the note entry e as a refused vote; ok is false
// when e is not one.
func ParseRefusedVote(e *audit.Entry) (v RefusedVote, ok bool) {
	if e.Kind != audit.KindNote {
		return v, false
	}
	rest, ok := strings.CutPrefix(e.Message, NoteRefusedVote+" ")
	if !ok {
		return v, false
	}
	verb, rest, _ := strings.Cut(rest, " ")
	code, reason, ok := strings.Cut(rest, ": ")
	if !ok || (ledger.Verb(verb) != ledger.Approve && ledger.Verb(verb) != ledger.Reject) {
		return RefusedVote{}, false
	}
	return RefusedVote{Verb: ledger.Verb(verb), Code: code, Reason: reason}, true
}

// refusedVote logs the refusal err of a vote (when it is one: an
// approval.Error) and returns err, or, when the log did not take the
// entry, an ErrUnavailable error: a refusal that is not logged is not
// answered as a refusal.
func (g *Gateway) refusedVote(ctx context.Context, verb ledger.Verb, caller, id string, signed []byte, err error) error {
	code := approval.Code(err)
	if code == "" {
		return err
	}
	e := &audit.Entry{Kind: audit.KindNote, Time: g.cfg.Now().UTC(), Approver: caller, EngineVersion: EngineVersion,
		Message: fmt.Sprintf("%s %s %s: %v", NoteRefusedVote, verb, code, err)}
	if approval.ValidID(id) {
		e.RequestID = id
	}
	if len(signed) > 0 {
		e.Raw = audit.Field{Text: string(signed)}
	}
	if _, lerr := g.cfg.Log.Append(context.WithoutCancel(ctx), e); lerr != nil {
		return fmt.Errorf("record refused %s: %w: %v", verb, ErrUnavailable, lerr)
	}
	return err
}

// executeApproved runs a request whose quorum was just reached: it is
// re-evaluated with the current state under the current policy, for the
// agent as it is configured now; if the policy is the one the approvers
// signed for, the agent may still act and the policy does not deny now, an
// APPROVED decision entry is appended and the action executed.
func (g *Gateway) executeApproved(ctx context.Context, id string, h Hold) (*Result, error) {
	g.mu.Lock()
	rec, _, _ := g.reqs.get(id)
	g.mu.Unlock()
	if rec == nil {
		return nil, ErrNotFound
	}
	ctx = g.waitContext(ctx, id)
	agent, revoked := g.currentAgent(rec.agent)
	var keys []string
	leave := func() {}
	defer func() { leave() }()
	if h != nil {
		// The freeze's share and the scopes' locks across replicas until
		// the approved decision is durable, not during the execution.
		if err := g.share.enter(ctx, g); err != nil {
			return nil, err
		}
		leave = sync.OnceFunc(g.share.leave)
		keys = g.decisionKeys(agent, rec.Action.Type)
		if err := g.lockAndFollow(ctx, h, keys); err != nil {
			return nil, err
		}
	}
	_, ds := g.span(ctx, tracing.SpanDecide)
	g.stateMu.RLock()
	a := g.Active()
	reads, _ := a.Policy.ReadsFor(rec.Action.Type)
	tx := g.ledger.Begin(agent, rec.Session, rec.Action.Type, reads)
	now := g.decisionTime()
	if err := g.attested(now); err != nil {
		// Approve checked it a moment ago; a re-evaluation the attestation
		// does not cover is not made. The request stays approved and not
		// executed (fail closed).
		tx.Unlock()
		g.stateMu.RUnlock()
		ds.End()
		return nil, err
	}
	d := a.Policy.Evaluate(&policy.Request{
		Action: rec.Action, Agent: agent, Session: policy.Session{ID: rec.Session, History: tx.History()},
		Instruction: rec.instruction, Reasoning: rec.reasoning, Now: now, State: tx,
	})
	d.Policy = a.Digest
	if rec.logged != nil {
		d.ActionHash = rec.logged.hashString()
	}
	final := approvedDecision(d, rec.Decision.Policy, revoked)
	if g.frozen.Load() != nil && final.Decision != policy.Deny {
		final = gatewayDeny(d, ledger.Frozen, FrozenMessage) // its quorum was met as the freeze began
	}
	req := &Request{Agent: agent, Session: rec.Session, Action: rec.Action, Instruction: rec.instruction, Reasoning: rec.reasoning, logged: rec.logged}
	entry := decisionEntry(id, req, final, now, g.decisionState(req))
	entry.Salts = nil // the parked decision's entry wrote them
	if ds.IsRecording() {
		ds.SetAttributes(decisionAttributes(id, req, final)...)
	}
	ds.End()
	_, rs := g.span(ctx, tracing.SpanRecordDecision)
	r, err := g.cfg.Log.Append(context.WithoutCancel(ctx), &entry)
	endRecord(rs, r, err)
	if err == nil {
		tx.Decided(id, &rec.Action, ledger.Decision(final.Decision), final.Reason, now, g.executor(rec.Action.Type) != nil)
	}
	tx.Unlock()
	g.stateMu.RUnlock()
	if h != nil {
		if len(keys) > 0 {
			h.Unlock(keys)
		}
		leave()
	}
	if err != nil {
		return nil, fmt.Errorf("record approved decision: %w: %v", ErrUnavailable, err)
	}
	g.mu.Lock()
	rec.Decision, rec.Entry = final, r
	g.mu.Unlock()
	res := &Result{RequestID: id, Decision: final, Receipt: receiptOf(r)}
	if final.Decision == policy.Effect(ledger.Approved) {
		if err := g.run(ctx, rec, res); err != nil {
			return nil, err
		}
	}
	if err := g.approvals.m.MarkExecuted(id); err != nil {
		return res, fmt.Errorf("mark executed: %w", err)
	}
	g.finish(id)
	return res, nil
}

// approvedDecision is the re-decision of a request whose quorum was met: d
// is the current policy's decision, signedFor the policy digest the
// approvers signed, revoked whether the agent was removed or lost a role
// since it asked. The replay (verify --replay) judges recorded
// re-decisions with the same function.
func approvedDecision(d *policy.Decision, signedFor string, revoked bool) *policy.Decision {
	switch {
	case revoked:
		return gatewayDeny(d, ledger.PrincipalRevoked, "the agent was removed from the configuration or lost a role since it asked")
	case d.Policy != signedFor:
		return gatewayDeny(d, ledger.PolicyChanged, "the policy changed since the approvers signed")
	case d.Decision == policy.Deny:
		return d
	}
	return &policy.Decision{Decision: policy.Effect(ledger.Approved), Reason: string(ledger.Approved), Rules: d.Rules, Errors: d.Errors, ActionHash: d.ActionHash, Policy: d.Policy}
}

// currentAgent is the agent as the configuration has it now
// (Config.Principals), and whether it was revoked: removed, or without a
// role it had when it asked. Without Config.Principals the agent is as it
// asked.
func (g *Gateway) currentAgent(asked policy.Agent) (policy.Agent, bool) {
	principals := g.principals()
	if principals == nil {
		return asked, false
	}
	now, ok := principals(asked.ID)
	if !ok {
		return asked, true
	}
	for _, r := range asked.Roles {
		if !slices.Contains(now.Roles, r) {
			return now, true
		}
	}
	return now, false
}

// finish wakes whoever waits on request id, final now.
func (g *Gateway) finish(id string) {
	g.endWait(id)
	g.mu.Lock()
	defer g.mu.Unlock()
	if rec, _, _ := g.reqs.get(id); rec != nil {
		defer g.reqs.settle(rec, g.reader != nil)
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
	_ = g.Follow(context.Background()) // behind when it fails: what this replica knows
	var out []PendingRequest
	for _, r := range g.approvals.m.Pending("") {
		pr := PendingRequest{Request: r, StillNeeded: g.registry().StillNeeded(r), Approve: string(r.Statement(approval.Approve, "").Marshal())}
		g.mu.Lock()
		if rec, _, _ := g.reqs.get(r.ID); rec != nil {
			action, _ := (&Request{Action: rec.Action, logged: rec.logged}).loggedAction()
			pr.Action = json.RawMessage(action)
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
	// StillNeeded is, for each of Request.Requirements in order, how many
	// more eligible approvers it needs (approval.Registry.StillNeeded).
	StillNeeded []int  `json:"still_needed"`
	Approve     string `json:"approve_statement"`
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
		if g.cfg.Replicas != nil {
			g.runExpiryShared(ctx, g.cfg.Now())
			continue
		}
		ended, _ := g.approvals.m.Expire(g.cfg.Now())
		for _, r := range ended {
			g.finish(r.ID)
		}
	}
}

// Wait returns the request once it is final (denied, executed, rejected,
// expired) or ctx is done, whichever is first.
func (g *Gateway) Wait(ctx context.Context, agent, id string) (*Result, error) {
	if g.cfg.Replicas != nil {
		return g.waitShared(ctx, agent, id)
	}
	g.mu.Lock()
	rec, _, _ := g.reqs.get(id)
	var done chan struct{}
	if rec != nil && rec.Agent == agent {
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
