package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/ledger"
	"github.com/rulelock/rulelock/policy"
)

// follower reads the log the replicas share and folds the other replicas'
// entries (Gateway.Follow).
type follower struct {
	mu   sync.Mutex // one catch-up at a time
	next int64      // entries [0, next) are folded

	// refolded: the ledger folded the log's entries below it when a policy
	// needed new indexes (Gateway.install); the catch-up does not fold
	// them into it again. Written under stateMu held for writing.
	refolded atomic.Int64
	// latest is the latest time of an entry folded from another replica
	// (Unix nanoseconds): no decision here is made earlier (decisionTime).
	latest atomic.Int64

	// stuck is why the catch-up cannot fold the next entry (nil when it
	// can): Ready reports it (ownLog.Err) until a catch-up gets past it.
	stuck atomic.Pointer[error]

	ownMu sync.Mutex
	own   map[ownKey]*ownEntry // entries this replica appends or appended
	// doneAt: the indexes of this replica's entries whose append returned
	// and that no catch-up has read yet: a catch-up passes over them
	// without reading them (it would only find them its own).
	doneAt map[int64]ownKey
	wake   chan struct{} // closed and replaced after each catch-up that folded entries
}

// ownKey identifies an entry this replica appended, as it reads back.
type ownKey [32]byte

// ownEntry is where one of this replica's entries is: its append is in
// flight (pending), returned (done), failed, or the catch-up already read
// it in the log before its append returned (seen, at receipt).
type ownEntry struct {
	state   ownState
	receipt audit.Receipt
	since   time.Time
}

type ownState uint8

const (
	ownPending ownState = iota
	ownDone
	ownFailed
	ownSeen
)

func newFollower() *follower {
	return &follower{own: map[ownKey]*ownEntry{}, doneAt: map[int64]ownKey{}, wake: make(chan struct{})}
}

// keyOfEntry identifies e by the fields the gateway sets and the log keeps
// as they are (not the payload: sensitive fields get fresh salts).
func keyOfEntry(e *audit.Entry) ownKey {
	h := sha256.New()
	var b [8]byte
	for _, s := range []string{string(e.Kind), e.RequestID, e.Decision, e.Approver, e.Status, e.Agent, e.Session, e.Message, e.BundleDigest} {
		binary.BigEndian.PutUint64(b[:], uint64(len(s)))
		h.Write(b[:])
		h.Write([]byte(s))
	}
	binary.BigEndian.PutUint64(b[:], uint64(e.Time.UnixNano()))
	h.Write(b[:])
	binary.BigEndian.PutUint64(b[:], uint64(e.Closes))
	h.Write(b[:])
	var k ownKey
	h.Sum(k[:0])
	return k
}

// ownLog is the gateway's Recorder on a shared log: it notes each entry
// this replica appends, so that the catch-up passes over it (the gateway
// folds its own entries live) exactly when the live path folds it.
type ownLog struct {
	Recorder
	f *follower
}

func (o ownLog) Append(ctx context.Context, e *audit.Entry) (audit.Receipt, error) {
	k := keyOfEntry(e)
	oe := &ownEntry{state: ownPending, since: time.Now()}
	o.f.ownMu.Lock()
	if o.f.own[k] != nil {
		o.f.ownMu.Unlock()
		// Two of this replica's entries would read back alike: no catch-up
		// could tell which one it meets.
		return audit.Receipt{}, fmt.Errorf("append: an entry like this one is being appended")
	}
	o.f.own[k] = oe
	o.f.ownMu.Unlock()
	r, err := o.Recorder.Append(ctx, e)
	o.f.ownMu.Lock()
	defer o.f.ownMu.Unlock()
	switch {
	case oe.state == ownSeen:
		// The catch-up read it in the log: it is durable, whatever the
		// append said, and the caller folds it live.
		delete(o.f.own, k)
		return oe.receipt, nil
	case err != nil:
		oe.state = ownFailed // if it is in the log after all, the catch-up folds it
		return r, err
	}
	oe.state, oe.receipt = ownDone, r
	o.f.doneAt[r.Index] = k
	return r, nil
}

// Err reports why the log, or this replica's reading of it, refuses new
// actions (Gateway.Ready): the inner Recorder's Err, or an entry of the
// shared log this replica cannot fold.
func (o ownLog) Err() error {
	if f, ok := o.Recorder.(interface{ Err() error }); ok {
		if err := f.Err(); err != nil {
			return err
		}
	}
	if err := o.f.stuck.Load(); err != nil {
		return *err
	}
	return nil
}

// claim reports whether the entry at index i (e) is this replica's own,
// folded live; one that failed to append, found in the log, is not.
func (f *follower) claim(e *audit.Entry, r audit.Receipt) bool {
	k := keyOfEntry(e)
	f.ownMu.Lock()
	defer f.ownMu.Unlock()
	oe := f.own[k]
	if oe == nil {
		return false
	}
	switch oe.state {
	case ownPending:
		oe.state, oe.receipt = ownSeen, r
		return true
	case ownDone:
		delete(f.own, k)
		delete(f.doneAt, oe.receipt.Index)
		return true
	case ownFailed:
		delete(f.own, k)
		return false
	}
	return true
}

// passOwn reports whether entry i is one of this replica's, appended and
// not read yet, and forgets it: the catch-up passes over it.
func (f *follower) passOwn(i int64) bool {
	f.ownMu.Lock()
	defer f.ownMu.Unlock()
	k, ok := f.doneAt[i]
	if ok {
		delete(f.doneAt, i)
		delete(f.own, k)
	}
	return ok
}

// ownUntil returns the first index in [lo, hi) of an entry passOwn would
// pass over, hi when there is none.
func (f *follower) ownUntil(lo, hi int64) int64 {
	f.ownMu.Lock()
	defer f.ownMu.Unlock()
	if len(f.doneAt) == 0 {
		return hi
	}
	for i := lo; i < hi; i++ {
		if _, ok := f.doneAt[i]; ok {
			return i
		}
	}
	return hi
}

// forgetFailed drops the notes of appends that failed an hour ago: their
// transaction is long over, and what it committed was read.
func (f *follower) forgetFailed(now time.Time) {
	f.ownMu.Lock()
	defer f.ownMu.Unlock()
	for k, oe := range f.own {
		if oe.state == ownFailed && now.Sub(oe.since) > time.Hour {
			delete(f.own, k)
		}
	}
}

// Follow reads the shared log up to its current size and folds the
// entries other replicas appended (Config.Replicas): a listener calls it
// when another replica announces a final request, so that a Wait here
// returns. Without Config.Replicas it does nothing.
func (g *Gateway) Follow(ctx context.Context) error {
	if g.cfg.Replicas == nil {
		return nil
	}
	size, err := g.cfg.Replicas.LogSize(ctx)
	if err != nil {
		return fmt.Errorf("follow the log: %w: %v", ErrUnavailable, err)
	}
	return g.catchUp(size)
}

// catchUp folds the entries [next, size) of the shared log. An entry that
// cannot be folded stops it there: the replica answers nothing from a
// state it knows to be behind (ErrUnavailable) until it can.
func (g *Gateway) catchUp(size int64) error {
	f := g.follow
	f.mu.Lock()
	defer f.mu.Unlock()
	if size <= f.next {
		return nil
	}
	folded := false
	for f.next < size {
		if f.passOwn(f.next) {
			f.next++ // this replica's own, folded live: nothing to read
			continue
		}
		lo := f.next
		raws, err := g.reader.ReadEntries(lo, f.ownUntil(lo+1, min(lo+eachChunk, size)))
		if err != nil {
			return fmt.Errorf("follow the log: %w: %v", ErrUnavailable, err)
		}
		for k, raw := range raws {
			i := lo + int64(k)
			if err := g.foldFollowed(i, raw); err != nil {
				err = fmt.Errorf("follow the log: entry %d: %w: %v", i, ErrUnavailable, err)
				f.stuck.Store(&err)
				return err
			}
			f.next, folded = i+1, true
		}
	}
	f.stuck.Store(nil)
	if folded {
		f.ownMu.Lock()
		close(f.wake)
		f.wake = make(chan struct{})
		f.ownMu.Unlock()
	}
	return nil
}

// followed returns a channel closed at the next catch-up that folds entries.
func (f *follower) followed() <-chan struct{} {
	f.ownMu.Lock()
	defer f.ownMu.Unlock()
	return f.wake
}

// foldFollowed folds entry i of the shared log, raw, unless this replica
// appended it (then it was folded live): into the ledger (ledger.Apply, the
// one fold), the requests and the approvals, as Rebuild does.
func (g *Gateway) foldFollowed(i int64, raw []byte) error {
	e, err := audit.DecodeVerifiedEntry(raw)
	if err != nil {
		return err
	}
	at := audit.Receipt{Index: i, LeafHash: tlog.RecordHash(raw)}
	if g.follow.claim(e, at) {
		return nil
	}
	for t := e.Time.UnixNano(); ; {
		if l := g.follow.latest.Load(); t <= l || g.follow.latest.CompareAndSwap(l, t) {
			break
		}
	}
	var d *ledger.Decoded
	if e.Kind == audit.KindDecision {
		if d, err = ledger.Decode(e, g.reader); err != nil {
			return err
		}
	}
	if d != nil && len(d.Sealed) > 0 && !e.Time.Before(g.cfg.Now().Add(-g.cfg.Retention)) {
		// As in Rebuild: rules may read the values it could not open.
		return fmt.Errorf("the salts of its sensitive members %v are gone and it is inside the retention window: the state rules read cannot be folded", d.Sealed)
	}
	// The requests and approvals first: an entry they refuse leaves the
	// ledger as it was, and the next catch-up tries it again.
	if err := g.followRequests(at, e, d); err != nil {
		return err
	}
	g.stateMu.RLock()
	if i >= g.follow.refolded.Load() { // a new ledger folded those below
		g.ledger.Apply(e, d)
	}
	if e.Kind == audit.KindNote {
		g.frozen.Store(g.ledger.Freeze()) // another replica's freeze or unfreeze
	}
	g.stateMu.RUnlock()
	return nil
}

// followRequests folds another replica's entry into the requests this
// replica knows and its approval manager, as Rebuild does.
func (g *Gateway) followRequests(at audit.Receipt, e *audit.Entry, d *ledger.Decoded) error {
	switch e.Kind {
	case audit.KindDecision:
		return g.followDecision(at, e, d)
	case audit.KindApproval:
		if g.approvals == nil {
			return fmt.Errorf("an approval event and no approvers are configured")
		}
		if err := g.approvals.m.Follow(approvalEvent(e)); err != nil {
			return err
		}
		if r, err := g.approvals.m.Get(e.RequestID); err == nil && r.State != approval.Pending && r.State != approval.Approved {
			g.finish(e.RequestID)
		}
	case audit.KindOutcome:
		g.followOutcome(at, e)
	case audit.KindNote:
		g.restorePasskey(e)
	}
	return nil
}

// followDecision restores another replica's decision as a request this
// replica knows: final when denied, parked (with the approval manager) when
// it needs approval, open when allowed (the replica that decided executes
// it and appends its outcome).
func (g *Gateway) followDecision(at audit.Receipt, e *audit.Entry, d *ledger.Decoded) error {
	if d.Action == nil {
		return nil // a request refused before decoding
	}
	rec := g.restoreDecision(at, e, d)
	switch d.Decision {
	case ledger.Deny:
		if d.State.Reload != "" && g.approvals != nil {
			// A parked request another replica's reload denied
			// (RecheckParked): the approval manager's revoked event.
			if err := g.approvals.m.Follow(approval.Event{Kind: approval.EventRevoked, Time: e.Time, Request: e.RequestID, Reason: e.Message}); err != nil {
				return err
			}
			g.finish(e.RequestID)
		}
		g.settle(rec)
	case ledger.Allow:
		if g.executor(d.Action.Type) == nil {
			// Decide-only: its agent may report the outcome to any replica.
			g.mu.Lock()
			rec.awaiting = true
			g.mu.Unlock()
		}
	case ledger.RequireApproval:
		if g.approvals == nil {
			return fmt.Errorf("a parked request and no approvers are configured")
		}
		ev, err := parkedEvent(e, d.State)
		if err != nil {
			return err
		}
		g.mu.Lock()
		rec.done = make(chan struct{})
		g.mu.Unlock()
		return g.approvals.m.Follow(ev)
	}
	return nil
}

// followOutcome records another replica's outcome on the request it closes.
func (g *Gateway) followOutcome(at audit.Receipt, e *audit.Entry) {
	g.mu.Lock()
	rec, _, _ := g.reqs.get(e.RequestID)
	g.mu.Unlock()
	if rec == nil {
		return
	}
	out := Outcome{Status: ledger.Status(e.Status)}
	_ = json.Unmarshal([]byte(e.Result.Text), &out) // the status above when it does not decode
	var verdicts []policy.Verdict
	for _, v := range e.Postconditions {
		verdicts = append(verdicts, policy.Verdict{Rule: v.Rule, Holds: v.Holds, Message: v.Message, Shadow: v.Shadow, Error: v.Error})
	}
	g.mu.Lock()
	rec.Outcome, rec.OutEntry, rec.awaiting = &out, &at, false
	if len(verdicts) > 0 {
		rec.postconditions = &verdicts
	}
	g.mu.Unlock()
	g.settle(rec)
}
