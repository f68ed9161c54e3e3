package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/ledger"
	"github.com/rulelock/rulelock/internal/tracing"
	"github.com/rulelock/rulelock/policy"
)

// Revoked is a parked request that RecheckParked denied.
type Revoked struct {
	RequestID string
	Agent     string
	Reason    ledger.Reason // PrincipalRevoked or ApprovalImpossible
}

// RecheckParked re-checks every pending parked request against who may act
// now (SetPrincipals, SetApprovers), at once rather than at its quorum, and
// denies, logged, each one that can no longer be executed:
//
//   - principal_revoked: its agent was removed from the configuration, or
//     no longer has a role it asked with (as at the quorum: currentAgent);
//   - approval_impossible: the approvers configured now, counting those
//     who already approved it, can no longer meet one of its requirements
//     (removed, or moved out of the groups it names).
//
// reload names the reload that changed who may act: the digest its note
// entry records ("sha256:<hex>", ledger.ParseReloadNote), which each
// denial's State names (ledger.DecisionState.Reload), so that `verify
// --replay` accepts the denial only after that note, for a request still
// pending. The denial is a DECISION entry (deny, the rules that parked it,
// under the policy that parked it); whoever waits on the request is
// answered with it; nothing is executed. A request ended meanwhile (an
// approval, a rejection, its expiry) is left as it ended.
//
// On a log that does not take an entry it stops and returns what it denied
// so far with the error: the requests it did not reach stay parked, and
// their quorum still re-checks them (fail closed either way).
func (g *Gateway) RecheckParked(ctx context.Context, reload string) ([]Revoked, error) {
	if g.approvals == nil {
		return nil, nil
	}
	var out []Revoked
	for _, r := range g.approvals.m.Pending("") {
		rv, err := g.recheck(ctx, r.ID, reload)
		if err != nil {
			return out, err
		}
		if rv != nil {
			out = append(out, *rv)
		}
	}
	return out, nil
}

// recheck denies the parked request id if it can no longer be executed
// (RecheckParked). With replicas it holds the request's lock and reads the
// log first, so that a request another replica approved, rejected or
// denied meanwhile is left as it ended (two replicas reloading at once deny
// it once).
func (g *Gateway) recheck(ctx context.Context, id, reload string) (*Revoked, error) {
	h, err := g.holdRequests(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("re-check %s: %w", id, err)
	}
	defer release(h)
	r, err := g.approvals.m.Get(id)
	if err != nil || r.State != approval.Pending {
		return nil, nil // ended meanwhile
	}
	g.mu.Lock()
	rec, _, _ := g.reqs.get(id)
	g.mu.Unlock()
	if rec == nil {
		return nil, nil
	}
	var reason ledger.Reason
	var msg string
	if _, revoked := g.currentAgent(rec.agent); revoked {
		reason, msg = ledger.PrincipalRevoked, "the agent was removed from the configuration or lost a role since it asked"
	} else if !g.approvals.m.Meetable(r) {
		reason, msg = ledger.ApprovalImpossible, "the approvers configured now can no longer meet its requirements"
	} else {
		return nil, nil
	}
	err = g.revoke(ctx, rec, reason, msg, reload)
	if errors.Is(err, approval.ErrClosed) {
		return nil, nil // ended meanwhile
	}
	if err != nil {
		return nil, err
	}
	return &Revoked{RequestID: id, Agent: r.Agent, Reason: reason}, nil
}

// revoke denies the parked request rec for reason, logged by the approval
// manager's revoked event (a DECISION entry), and wakes its waiters.
func (g *Gateway) revoke(ctx context.Context, rec *record, reason ledger.Reason, msg, reload string) error {
	ctx = g.waitContext(ctx, rec.ID)
	if err := g.revokeLocked(ctx, rec, reason, msg, reload); err != nil {
		return err
	}
	g.finish(rec.ID)
	return nil
}

// revokeLocked records the denial under the ledger's scopes of rec, as
// every decision is: the fold adds it to the session's history.
func (g *Gateway) revokeLocked(ctx context.Context, rec *record, reason ledger.Reason, msg, reload string) error {
	g.stateMu.RLock()
	defer g.stateMu.RUnlock()
	var reads policy.ScopeSet
	if a := g.Active(); a != nil {
		reads, _ = a.Policy.ReadsFor(rec.Action.Type)
	}
	tx := g.ledger.Begin(rec.agent, rec.Session, rec.Action.Type, reads)
	defer tx.Unlock()
	g.mu.Lock()
	parked := rec.Decision
	g.mu.Unlock()
	final := gatewayDeny(parked, reason, msg)
	req := &Request{Agent: rec.agent, Session: rec.Session, Action: rec.Action, Instruction: rec.instruction, Reasoning: rec.reasoning, logged: rec.logged}
	ds, err := ledger.DecodeDecisionState(audit.Text(g.decisionState(req)))
	if err != nil {
		return err
	}
	ds.Reload = reload
	b, _ := json.Marshal(ds)
	now := g.cfg.Now().UTC()
	entry := decisionEntry(rec.ID, req, final, now, string(b))
	entry.Salts = nil // the parked decision's entry wrote them

	_, rs := g.span(ctx, tracing.SpanRecordDecision)
	if rs.IsRecording() {
		rs.SetAttributes(decisionAttributes(rec.ID, req, final)...)
	}
	ap := g.approvals
	ap.mu.Lock()
	ap.parking[rec.ID] = &entry
	ap.mu.Unlock()
	_, err = ap.m.Revoke(rec.ID, string(reason))
	ap.mu.Lock()
	delete(ap.parking, rec.ID)
	ap.mu.Unlock()
	r := ap.receipt(rec.ID)
	endRecord(rs, r, err)
	if err != nil {
		if approval.Code(err) != "" {
			return err // not pending any more
		}
		return fmt.Errorf("record the denial of %s: %w: %v", rec.ID, ErrUnavailable, err)
	}
	tx.Decided(rec.ID, &rec.Action, ledger.Deny, string(reason), entry.Time, false)
	g.mu.Lock()
	rec.Decision, rec.Entry = final, r
	g.mu.Unlock()
	return nil
}
