package approval

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/rulelock/rulelock/policy"
)

// An EventKind names a change to the Manager's state.
type EventKind string

const (
	EventParked    EventKind = "parked"    // Park
	EventApproval  EventKind = "approval"  // Approve accepted
	EventRejection EventKind = "rejection" // Reject accepted
	EventExpired   EventKind = "expired"   // Expire
	EventExecuted  EventKind = "executed"  // MarkExecuted
	EventRevoked   EventKind = "revoked"   // Revoke
)

func (k EventKind) op() string {
	switch k {
	case EventParked:
		return "park"
	case EventApproval:
		return "approve"
	case EventRejection:
		return "reject"
	case EventExpired:
		return "expire"
	case EventExecuted:
		return "mark executed"
	case EventRevoked:
		return "revoke"
	}
	return string(k)
}

// An Event is one change to the Manager's state, given to the Recorder
// before it takes effect. The gateway logs it (a parked event with the
// require_approval decision, an approval or rejection as an APPROVAL entry
// with its signed note, an expiry as a deny, executed with the outcome, a
// revocation as its own deny DECISION entry) and replays the logged events
// with Restore after a restart.
type Event struct {
	Kind    EventKind
	Time    time.Time // when it took effect, UTC
	Request string    // request id

	// Parked events.
	Agent        string
	Action       [32]byte
	Policy       string
	Requirements []policy.Requirement
	Expires      time.Time

	// Approval and rejection events.
	Approver string // approver id, the note's key name
	Note     []byte // the signed statement, exactly as submitted

	// Revoked events: the caller's reason code (Revoke).
	Reason string
}

// Restore rebuilds the state of an empty Manager from the events it (or
// an earlier Manager) recorded, in order. Each event is checked as when it
// first happened, at its recorded time: signatures against the Manager's
// registry, statements against their requests, approvers against the
// requirements' groups. Only the queue limits are not applied again. An
// event that does not fit fails Restore with its position, so a registry
// that no longer vouches for the log is noticed rather than trusted. The
// one exception is a vote by an approver the registry no longer has
// (removed since): it is restored without being trusted (replayRemoved).
//
// A request that reached its quorum but was never marked executed may
// have been executed, or not, before the restart. Restore does not make
// it executable again: it stays Approved with Reconcile set, and Restore
// returns these requests. The caller finds out what happened (the
// gateway records an unknown outcome) and calls MarkExecuted.
func (m *Manager) Restore(events []Event) ([]Request, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.reqs) != 0 {
		return nil, fmt.Errorf("restore: manager is not empty")
	}
	var latest time.Time // the latest time the events prove
	for i, ev := range events {
		if err := m.replay(ev); err != nil {
			m.reset()
			return nil, fmt.Errorf("restore: event %d (%s %s): %w", i+1, ev.Kind, ev.Request, err)
		}
		if ev.Time.After(latest) {
			latest = ev.Time
		}
	}
	// A restored request has as much time left as the wall clock gives it,
	// and never more than the events prove: a clock set back while the
	// gateway was down does not give it back the time that passed.
	now, elapsed := m.now(), m.opts.Elapsed()
	for _, e := range m.reqs {
		if e.r.State == Pending {
			e.deadline = elapsed + e.r.Expires.Sub(now)
		}
	}
	m.notBefore(latest)
	var reconcile []Request
	for _, e := range m.reqs {
		if e.r.State == Approved {
			e.r.Reconcile = true
			reconcile = append(reconcile, e.snapshot())
		}
	}
	sortRequests(reconcile)
	return reconcile, nil
}

func (m *Manager) replay(ev Event) error {
	ev.Time = ev.Time.UTC()
	switch ev.Kind {
	case EventParked:
		ev.Expires = ev.Expires.UTC()
		if err := m.checkPark(ev, false); err != nil {
			return err
		}
		m.applyPark(ev)
	case EventApproval, EventRejection:
		e := m.reqs[ev.Request]
		if e == nil {
			return refuse(ev.Kind.op(), ev.Request, ev.Approver, ErrNotFound, "")
		}
		approver, st, err := m.reg.Open(ev.Note)
		if errors.Is(err, ErrUnknownApprover) && m.reg.byID[ev.Approver] == nil {
			m.replayRemoved(e, ev)
			return nil
		}
		if err != nil {
			return err
		}
		if approver != ev.Approver {
			return fmt.Errorf("note is signed by %q, event names %q", approver, ev.Approver)
		}
		if err := m.checkVote(e, ev, st); err != nil {
			return err
		}
		m.applyVote(e, ev, st)
	case EventExpired:
		e := m.reqs[ev.Request]
		switch {
		case e == nil:
			return refuse("expire", ev.Request, "", ErrNotFound, "")
		case e.r.State != Pending:
			return refuse("expire", ev.Request, "", ErrClosed, "request is %s", e.r.State)
		case ev.Time.Before(e.r.Expires):
			return fmt.Errorf("expired at %v, before its expiry %v", ev.Time, e.r.Expires)
		}
		m.applyExpired(e, ev)
	case EventRevoked:
		e := m.reqs[ev.Request]
		switch {
		case e == nil:
			return refuse("revoke", ev.Request, "", ErrNotFound, "")
		case e.r.State != Pending:
			return refuse("revoke", ev.Request, "", ErrClosed, "request is %s", e.r.State)
		}
		m.end(e, Revoked, ev.Time)
	case EventExecuted:
		if e := m.reqs[ev.Request]; e != nil && e.r.State == Pending && e.removed {
			// Its quorum counted an approver no longer configured: the
			// log says it was executed, and it is final.
			m.end(e, Approved, ev.Time)
		}
		e, err := m.checkExecuted(ev)
		if err != nil {
			return err
		}
		m.applyExecuted(e, ev)
	default:
		return fmt.Errorf("unknown event kind %q", ev.Kind)
	}
	return nil
}

// replayRemoved restores the vote of an approver who is no longer
// configured (removed by a reload or an edit of the configuration): their
// key is gone, so the vote cannot be verified, and it is not trusted. An
// approval no longer counts towards the quorum; a rejection still ends the
// request (it only ever stops one). Either way nothing becomes executable
// that the configured approvers have not approved.
func (m *Manager) replayRemoved(e *entry, ev Event) {
	e.removed = true
	if ev.Kind != EventRejection || e.r.State != Pending {
		return
	}
	e.r.Rejection = &Vote{Approver: ev.Approver, Time: ev.Time, Note: bytes.Clone(ev.Note)}
	m.end(e, Rejected, ev.Time)
}

func (m *Manager) reset() {
	m.reqs = make(map[string]*entry)
	m.pending = 0
	m.pendingBy = make(map[string]int)
	m.finished = nil
}

// Follow applies one event that another Manager recorded in the log this
// one shares (a replica of the gateway), checked as Restore checks it. A
// request it parks gets the time left that Restore would give it. Queue
// limits are not applied: they held where the event was recorded.
func (m *Manager) Follow(ev Event) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.replay(ev); err != nil {
		return fmt.Errorf("follow %s %s: %w", ev.Kind, ev.Request, err)
	}
	if e := m.reqs[ev.Request]; ev.Kind == EventParked && e != nil {
		elapsed := m.opts.Elapsed()
		e.deadline = min(elapsed+e.r.Expires.Sub(m.now()), elapsed+e.r.Expires.Sub(ev.Time.UTC()))
	}
	return nil
}
