package pglog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/ledger"
)

// Reconciler closes the requests a vanished replica left open: an allowed
// decision (allow, or approved after a quorum) whose outcome entry is
// still missing when its lease, Lease after the decision's time, has
// expired gets an outcome entry with status unknown. It is never executed
// again: the replica that decided it may have reached the upstream before
// it died, and the log says so.
//
// The lease bounds the execution: it must be longer than the longest
// execution (an executor's timeout) plus the time to record its outcome
// (Options.Timeout), so that a live replica records its own outcome first.
// Several reconcilers, on several replicas, may notice the same request:
// the outcome entry is appended through Log, which claims the request in
// rulelock_outcomes in the appending transaction, so exactly one outcome
// entry is written, whoever wins; the others get ErrOutcomeRecorded. A
// replica whose real outcome arrives after its lease expired gets
// ErrOutcomeRecorded too: the log keeps the unknown.
type Reconciler struct {
	log   *Log
	r     *Reader
	lease time.Duration
	now   func() time.Time

	next int64                   // the entries read so far
	open map[string]openDecision // by request id
}

type openDecision struct {
	index   int64
	agent   string
	session string
	time    time.Time
}

// NewReconciler returns a reconciler appending to l, reading the log that
// l appends to, with leases of lease; now is its clock (nil: time.Now).
func NewReconciler(l *Log, lease time.Duration, now func() time.Time) *Reconciler {
	if now == nil {
		now = time.Now
	}
	return &Reconciler{log: l, r: NewReader(l.pool), lease: lease, now: now, open: map[string]openDecision{}}
}

// UnknownMessage is the error of the outcome a Reconciler records.
const UnknownMessage = "the replica that decided this request stopped before recording its outcome (lease expired); not re-executed"

// Step reads the entries appended since the last step and records unknown
// for each open decision whose lease has expired. It returns how many it
// recorded.
func (rc *Reconciler) Step(ctx context.Context) (int, error) {
	snap, err := rc.r.Snapshot(ctx)
	if err != nil {
		return 0, fmt.Errorf("reconcile: %w", err)
	}
	for rc.next < snap.Size() {
		hi := min(rc.next+eachChunk, snap.Size())
		raws, err := snap.ReadEntries(rc.next, hi)
		if err != nil {
			return 0, fmt.Errorf("reconcile: %w", err)
		}
		for k, raw := range raws {
			rc.fold(rc.next+int64(k), raw)
		}
		rc.next = hi
	}
	closed := 0
	now := rc.now()
	for id, d := range rc.open {
		if now.Before(d.time.Add(rc.lease)) {
			continue
		}
		_, err := rc.log.Append(ctx, unknownOutcome(id, d, now))
		switch {
		case errors.Is(err, ErrOutcomeRecorded):
		case err != nil:
			return closed, fmt.Errorf("reconcile %s: %w", id, err)
		default:
			closed++
		}
		delete(rc.open, id)
	}
	return closed, nil
}

// eachChunk is how many entries Step reads at once.
const eachChunk = 1024

// fold notes an allowed decision as open and an outcome as closing it.
func (rc *Reconciler) fold(i int64, raw []byte) {
	e, err := audit.DecodeEntry(raw)
	if err != nil {
		return // the verifier reports it; it opens nothing
	}
	switch e.Kind {
	case audit.KindDecision:
		if ledger.Decision(e.Decision).Allowed() {
			rc.open[e.RequestID] = openDecision{index: i, agent: e.Agent, session: e.Session, time: e.Time}
		}
	case audit.KindOutcome:
		delete(rc.open, e.RequestID)
	}
}

// unknownOutcome is the outcome entry of an expired lease, as the gateway
// writes one (gateway.Outcome's JSON in Result, the consequence in State).
func unknownOutcome(id string, d openDecision, now time.Time) *audit.Entry {
	result, _ := json.Marshal(struct {
		Status ledger.Status `json:"status"`
		Error  string        `json:"error"`
	}{ledger.Unknown, UnknownMessage})
	return &audit.Entry{
		Kind:      audit.KindOutcome,
		Time:      now.UTC(),
		Agent:     d.agent,
		Session:   d.session,
		RequestID: id,
		Closes:    d.index,
		Result:    audit.Text(string(result)),
		Status:    string(ledger.Unknown),
		State:     audit.Text(ledger.ConsequenceOf(ledger.Unknown, false, false).String()),
	}
}
