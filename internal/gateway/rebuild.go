package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/ledger"
	"github.com/rulelock/rulelock/policy"
)

// LogReader reads the log back. *audit.Log implements it.
type LogReader interface {
	Size() int64
	// ReadEntries reads entries [lo, hi) at once.
	ReadEntries(lo, hi int64) ([][]byte, error)
	Blob(d audit.Digest) ([]byte, error)
}

// eachChunk is how many entries EachEntry reads at once.
const eachChunk = 1024

// EachEntry calls fn with every entry of the log, raw and decoded, in log
// order, reading the log a chunk of entries at a time (two reads per entry
// made start-up on a long log slow). The first error stops it. Entries are
// decoded with audit.DecodeVerifiedEntry: opening the log checked every
// frame and the hash chain; that each encoding is canonical is the
// verifier's to check (it was 30% of a rebuild).
func EachEntry(lr LogReader, fn func(i int64, raw []byte, e *audit.Entry) error) error {
	size := lr.Size()
	for lo := int64(0); lo < size; lo += eachChunk {
		raws, err := lr.ReadEntries(lo, min(lo+eachChunk, size))
		if err != nil {
			return fmt.Errorf("entries from %d: %w", lo, err)
		}
		for k, raw := range raws {
			i := lo + int64(k)
			e, err := audit.DecodeVerifiedEntry(raw)
			if err != nil {
				return fmt.Errorf("entry %d: %w", i, err)
			}
			if err := fn(i, raw, e); err != nil {
				return err
			}
		}
	}
	return nil
}

// Rebuild derives the gateway's state from the log: the ledger (by its one
// fold, ledger.Apply, over every entry) and the requests it knows within
// the retention window. An allowed decision without an outcome — the
// gateway stopped between deciding and recording what happened — gets an
// `unknown` outcome entry now: it is never executed again, and its effect,
// if any, still counts against limits. Rebuild returns how many such
// decisions it closed.
func (g *Gateway) Rebuild(ctx context.Context, lr LogReader) (int, error) {
	open := map[string]*record{}
	var order []*record
	var events []approval.Event
	var latest time.Time // the latest entry time: the log proves the time is at least this
	g.stateMu.Lock()
	err := walkLog(lr, 0, true, func(it logItem) error {
		i, e, d := it.index, it.e, it.d
		if e.Time.After(latest) {
			latest = e.Time
		}
		g.ledger.Apply(e, d)
		g.folded = true
		switch e.Kind {
		case audit.KindDecision:
			if d.Action == nil {
				return nil // a request refused before decoding (Refuse): nothing to restore
			}
			if len(d.Sealed) > 0 && !e.Time.Before(g.cfg.Now().Add(-g.cfg.Retention)) {
				// Rules may read these values (limits over them, a parked
				// request to execute): without them the state would be
				// wrong, so the gateway does not start on it.
				return fmt.Errorf("entry %d: the salts of its sensitive members %v are gone and it is inside the retention window (%v): the state rules read cannot be rebuilt; restore the salts file", i, d.Sealed, g.cfg.Retention)
			}
			rec := g.restoreDecision(audit.Receipt{Index: i, LeafHash: it.leaf}, e, d)
			switch d.Decision {
			case ledger.Deny:
				if d.State.Reload != "" {
					// A parked request a reload denied (RecheckParked):
					// the approval manager's revoked event.
					events = append(events, approval.Event{Kind: approval.EventRevoked, Time: e.Time, Request: e.RequestID, Reason: e.Message})
				}
				g.settle(rec) // final
			case ledger.Allow, ledger.Approved:
				open[rec.ID] = rec
				order = append(order, rec)
			case ledger.RequireApproval:
				ev, err := parkedEvent(e, d.State)
				if err != nil {
					return fmt.Errorf("entry %d: %w", i, err)
				}
				events = append(events, ev)
				rec.done = make(chan struct{})
			}
		case audit.KindApproval:
			events = append(events, approvalEvent(e))
		case audit.KindNote:
			g.restorePasskey(e)
		case audit.KindPolicyActivation:
			if len(e.Signers) > 0 { // a signed bundle, not development mode
				g.lastBundle = e.BundleDigest
			}
		case audit.KindOutcome:
			if rec, ok := open[e.RequestID]; ok {
				delete(open, e.RequestID)
				out := Outcome{Status: ledger.Status(e.Status)}
				rec.Outcome = &out
				r := audit.Receipt{Index: i, LeafHash: it.leaf}
				rec.OutEntry = &r
				g.settle(rec) // final, unless its quorum is still to be restored
			}
		}
		return nil
	})
	g.ledger.Sweep(g.cfg.Now())
	g.frozen.Store(g.ledger.Freeze()) // a freeze survives a restart
	g.stateMu.Unlock()
	if err != nil {
		return 0, fmt.Errorf("rebuild: %w", err)
	}
	if g.cfg.Replicas != nil {
		return 0, g.rebuilt(lr, events, latest)
	}
	closed := 0
	if err := g.restoreApprovals(ctx, events); err != nil {
		return 0, err
	}
	if g.approvals != nil {
		// A clock set back while the gateway was down gives no parked
		// request back the time the log proves has passed.
		g.approvals.m.NotBefore(latest)
	}
	for _, rec := range order {
		if open[rec.ID] != rec {
			continue
		}
		if g.cfg.Lease > 0 && rec.Time.After(g.cfg.Now().Add(-g.cfg.Lease)) {
			continue // another replica may be executing it (Config.Lease)
		}
		delete(open, rec.ID)
		out := Outcome{Status: StatusUnknown, Error: "the gateway stopped after deciding and before recording the outcome; not re-executed"}
		if _, err := g.recordOutcome(ctx, rec, out); alreadyClosed(err) {
			continue // another replica closed it since the log was read
		} else if err != nil {
			return closed, err
		}
		closed++
	}
	g.mu.Lock()
	g.forgetLocked(nil, false)
	for _, rec := range g.reqs.open {
		g.reqs.settle(rec, g.reader != nil) // the final ones: only where they are
	}
	g.mu.Unlock()
	return closed, nil
}

// alreadyClosed reports an error of a log that replicas share
// (Config.Lease) saying that the request already has an outcome entry.
func alreadyClosed(err error) bool {
	var o interface{ OutcomeRecorded() bool }
	return errors.As(err, &o) && o.OutcomeRecorded()
}

// restoreDecision restores a decision entry's request.
func (g *Gateway) restoreDecision(at audit.Receipt, e *audit.Entry, dd *ledger.Decoded) *record {
	act := *dd.Action
	d := &policy.Decision{Decision: policy.Effect(e.Decision), Reason: e.Message, Rules: []policy.FiredRule{}, Errors: []policy.RuleError{},
		ActionHash: "sha256:" + e.ActionSHA256.String(), Policy: e.BundleDigest}
	for _, r := range e.Rules {
		d.Rules = append(d.Rules, policy.FiredRule{Name: r.Name, Outcome: policy.Outcome(r.Outcome), Message: r.Message, Shadow: r.Shadow})
	}
	if d.Decision == policy.RequireApproval && dd.State.Approval != nil {
		_, d.Approval, _ = dd.State.Approval.Terms() // parkedEvent reports an error in them
	}
	rec := &record{ID: e.RequestID, Agent: e.Agent, Session: e.Session, Action: act, Decision: d, Entry: at, Time: e.Time, agent: dd.Agent}
	if dd.Logged != nil {
		rec.logged = &logged{JSON: dd.Logged, Hash: e.ActionSHA256, Names: dd.State.Sealed}
	}
	if d.Decision == policy.Deny {
		rec.Action, rec.logged = policy.Action{}, nil // as Gateway.decideLocked: nothing reads a denied request's action
	}
	if d.Decision == policy.RequireApproval { // parked: see Gateway.decideLocked
		rec.instruction, rec.reasoning = dd.Instruction, dd.Reasoning
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if prev, _, _ := g.reqs.get(rec.ID); prev != nil {
		rec.done = prev.done // an approved re-decision of a parked request
		rec.instruction, rec.reasoning = prev.instruction, prev.reasoning
	}
	g.reqs.put(rec) // Rebuild forgets what left the retention window once, at the end
	return rec
}

// parkedEvent turns a require_approval decision entry back into the
// approval manager's parked event.
func parkedEvent(e *audit.Entry, ds ledger.DecisionState) (approval.Event, error) {
	if ds.Approval == nil {
		return approval.Event{}, fmt.Errorf("parked request %s: no approval terms in its state", e.RequestID)
	}
	reqs, _, err := ds.Approval.Terms()
	if err != nil {
		return approval.Event{}, fmt.Errorf("parked request %s: %w", e.RequestID, err)
	}
	return approval.Event{Kind: approval.EventParked, Time: e.Time, Request: e.RequestID, Agent: e.Agent,
		Action: e.ActionSHA256, Policy: e.BundleDigest, Requirements: reqs, Expires: ds.Approval.Expires}, nil
}

func approvalEvent(e *audit.Entry) approval.Event {
	ev := approval.Event{Time: e.Time, Request: e.RequestID, Approver: e.Approver, Note: e.Signature}
	switch ledger.Verb(e.Decision) {
	case ledger.Approve:
		ev.Kind = approval.EventApproval
	case ledger.Reject:
		ev.Kind = approval.EventRejection
	case ledger.Expired:
		ev.Kind = approval.EventExpired
	case ledger.Executed:
		ev.Kind = approval.EventExecuted
	}
	return ev
}

// restoreApprovals replays the approval events. A request whose quorum was
// reached but that was never re-decided did not run: it is closed as not
// executed, never run silently after a restart.
func (g *Gateway) restoreApprovals(ctx context.Context, events []approval.Event) error {
	if len(events) == 0 {
		return nil
	}
	if g.approvals == nil {
		return fmt.Errorf("rebuild: the log has approval events and no approvers are configured")
	}
	reconcile, err := g.approvals.m.Restore(events)
	if err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	for _, r := range reconcile {
		g.mu.Lock()
		rec, _, _ := g.reqs.get(r.ID)
		g.mu.Unlock()
		if rec != nil && rec.Decision.Decision == policy.RequireApproval {
			out := Outcome{Status: StatusError, Error: "the quorum was reached but the gateway stopped before executing; not executed"}
			if _, err := g.recordOutcome(ctx, rec, out); err != nil {
				return err
			}
		}
		if err := g.approvals.m.MarkExecuted(r.ID); err != nil {
			return fmt.Errorf("rebuild: %w", err)
		}
	}
	for _, r := range events {
		req, err := g.approvals.m.Get(r.Request)
		switch {
		case err != nil:
		case req.State != approval.Pending:
			g.finish(r.Request)
		case r.Kind == approval.EventParked:
			g.mu.Lock()
			rec, _, _ := g.reqs.get(r.Request)
			g.mu.Unlock()
			if rec != nil {
				g.startRestoredWait(r.Request, rec) // traced again from here
			}
		}
	}
	return nil
}
