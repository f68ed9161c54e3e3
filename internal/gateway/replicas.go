package gateway

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/policy"
)

// Replicas is what a gateway needs to be one of several replicas of one
// log (internal/pgstate implements it on PostgreSQL). With Config.Replicas
// set, Config.Log must also be a LogReader of the shared log, and the
// gateway keeps its state as the fold of that log, read up to date under
// locks shared by every replica:
//
//   - before a decision it locks the scopes the decision holds
//     (ledger.Ledger.Scopes: all agents, the principal, the agent, whose
//     sessions are the agent's), reads and folds every entry the other
//     replicas appended since it last read (Follow), decides, and releases
//     the locks once its decision entry is durable, so that decisions that
//     share a scope are atomic across replicas as they are within one;
//   - an approval, a rejection or an expiry locks its request first, so
//     that of two final approvals on two replicas one completes the quorum
//     and executes, and the other finds the request already decided;
//   - a read (Get, Wait, Pending) folds what was appended first, so that
//     any replica answers for a request any other one decided.
//
// The log stays the only source of truth and ledger.Apply the only fold:
// a replica folds its own entries live, as a single gateway does, and the
// other replicas' entries when it reads them.
type Replicas interface {
	// Hold returns a holder of locks shared by every replica (one
	// connection). It takes none yet.
	Hold(ctx context.Context) (Hold, error)
	// LogSize returns the number of entries in the shared log now.
	LogSize(ctx context.Context) (int64, error)
}

// Hold is one holder of locks shared by the replicas. It is not safe for
// concurrent use.
type Hold interface {
	// Lock takes the locks named by keys, in order, waiting for them, and
	// returns the log's size once they are held: every entry appended
	// under one of them by a holder that released it is below size. A
	// name "shared:X" takes lock X in shared mode: any number of holders
	// hold it shared at once, none while one holds X.
	Lock(ctx context.Context, keys []string) (size int64, err error)
	// Unlock releases the locks named by keys.
	Unlock(keys []string)
	// Release releases every lock and the holder. A lock whose release
	// cannot be confirmed is released by ending the holder's session.
	Release()
}

// Lock keys of the state replicas share (Hold.Lock).
const (
	lockGlobal = "global"
	lockPrefix = "request:"
	// A freeze or an unfreeze holds lockFreeze; every decision holds it
	// shared (lockFreezeShared, through freezeShare), so that a freeze
	// recorded by one replica comes, in the log, after every decision
	// another replica was making and before every decision it makes next
	// (it folds the freeze first).
	lockFreeze       = "freeze"
	lockFreezeShared = "shared:" + lockFreeze
)

// scopeKeys names the locks of the scopes a decision by agent holds, in the
// ledger's lock order (global, principal, agent): none when no rule reads
// or counts its action type.
func scopeKeys(agent policy.Agent, scopes policy.ScopeSet) []string {
	if scopes == 0 {
		return nil // no state to keep atomic: the freeze's share alone
	}
	keys := make([]string, 0, 3)
	if scopes.Has(policy.ScopeGlobal) {
		keys = append(keys, lockGlobal)
	}
	if scopes.Has(policy.ScopePrincipal) {
		keys = append(keys, "principal:"+agent.PrincipalID())
	}
	return append(keys, "agent:"+agent.ID) // sessions are the agent's
}

// holdScopes takes, across replicas, the freeze's lock shared and the
// locks of the scopes a decision of req holds under the active policy, and
// folds the log up to them. done releases them, once the decision is
// durable; it is a no-op without replicas.
func (g *Gateway) holdScopes(ctx context.Context, req *Request) (keys []string, done func(), err error) {
	if g.cfg.Replicas == nil {
		return nil, func() {}, nil
	}
	if err := g.share.enter(ctx, g); err != nil {
		return nil, nil, fmt.Errorf("decide: %w", err)
	}
	keys = g.decisionKeys(req.Agent, req.Action.Type)
	if len(keys) == 0 {
		return keys, g.share.leave, nil
	}
	h, err := g.cfg.Replicas.Hold(ctx)
	if err != nil {
		g.share.leave()
		return nil, nil, fmt.Errorf("decide: %w: %v", ErrUnavailable, err)
	}
	if err := g.lockAndFollow(ctx, h, keys); err != nil {
		h.Release()
		g.share.leave()
		return nil, nil, err
	}
	return keys, func() { h.Release(); g.share.leave() }, nil
}

// freezeEpoch is how long one connection holds the freeze's lock shared
// for the decisions that join it before it lets a waiting freeze in.
const freezeEpoch = 50 * time.Millisecond

// freezeShare holds the freeze's lock in shared mode, on one connection,
// for every decision in flight on this replica: a decision joins the hold
// (no round trip) instead of taking the lock itself. A hold lasts one
// epoch (freezeEpoch) from when it was taken: then it takes no new
// decision and is released as soon as no decision is in flight, so a
// freeze another replica waits to record gets the lock (PostgreSQL queues
// the next shared request behind the waiting exclusive one) within an
// epoch and the decisions in flight. A new hold folds the log first, so
// the decisions that join it know of every freeze recorded before.
type freezeShare struct {
	mu       sync.Mutex
	cond     *sync.Cond
	h        Hold // holds lockFreezeShared; nil: not held
	since    time.Time
	inflight int
	draining bool        // h takes no new decision
	taking   bool        // a hold is being taken or released
	timer    *time.Timer // ends an idle hold at the end of its epoch
}

func newFreezeShare() *freezeShare {
	s := &freezeShare{}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// enter returns once the freeze's lock is held shared for one more
// decision, and the log folded up to the hold.
func (s *freezeShare) enter(ctx context.Context, g *Gateway) error {
	s.mu.Lock()
	for {
		if s.h != nil && !s.draining {
			if time.Since(s.since) < freezeEpoch {
				s.inflight++
				s.mu.Unlock()
				return nil
			}
			s.draining = true
			if s.inflight == 0 {
				s.releaseLocked()
				continue
			}
		}
		if s.h == nil && !s.taking {
			break
		}
		s.cond.Wait()
	}
	s.taking = true
	s.mu.Unlock()
	h, err := g.cfg.Replicas.Hold(ctx)
	if err == nil {
		if err = g.lockAndFollow(ctx, h, []string{lockFreezeShared}); err != nil {
			h.Release()
		}
	} else {
		err = fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	s.mu.Lock()
	s.taking = false
	if err == nil {
		s.h, s.since, s.draining, s.inflight = h, time.Now(), false, 1
	}
	s.cond.Broadcast()
	s.mu.Unlock()
	return err
}

// leave ends one decision's share. The last one out of a hold whose epoch
// is over releases it; within the epoch an idle hold is kept for the next
// decisions, and released when the epoch ends (expire).
func (s *freezeShare) leave() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inflight--
	if s.inflight > 0 {
		return
	}
	if s.draining || time.Since(s.since) >= freezeEpoch {
		s.releaseLocked()
		return
	}
	if s.timer == nil {
		s.timer = time.AfterFunc(time.Until(s.since.Add(freezeEpoch)), s.expire)
	}
}

// expire ends the epoch of the hold: released now when idle, by the last
// decision in flight otherwise.
func (s *freezeShare) expire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.timer = nil
	switch {
	case s.h == nil || s.taking:
	case s.inflight == 0:
		s.releaseLocked()
	default:
		s.draining = true
	}
}

// releaseLocked releases the hold; s.mu is held, and released meanwhile.
func (s *freezeShare) releaseLocked() {
	h := s.h
	s.h, s.taking = nil, true // no new hold until this one is released
	s.mu.Unlock()
	h.Release()
	s.mu.Lock()
	s.taking, s.draining = false, false
	s.cond.Broadcast()
}

// decisionKeys names the locks of the scopes a decision of actionType by
// agent holds under the active policy.
func (g *Gateway) decisionKeys(agent policy.Agent, actionType string) []string {
	g.stateMu.RLock()
	defer g.stateMu.RUnlock()
	reads, _ := g.Active().Policy.ReadsFor(actionType)
	return scopeKeys(agent, g.ledger.Scopes(actionType, reads))
}

// covers reports whether held names every lock of want.
func covers(held, want []string) bool {
	for _, k := range want {
		if !slices.Contains(held, k) {
			return false
		}
	}
	return true
}

// lockAndFollow takes keys on h and folds the log up to the size they
// guard.
func (g *Gateway) lockAndFollow(ctx context.Context, h Hold, keys []string) error {
	size, err := h.Lock(ctx, keys)
	if err != nil {
		return fmt.Errorf("lock %v across replicas: %w: %v", keys, ErrUnavailable, err)
	}
	return g.catchUp(size)
}

// holdFreeze locks, across replicas, the freeze's lock exclusively, and
// folds the log up to it (nil without replicas).
func (g *Gateway) holdFreeze(ctx context.Context) (Hold, error) {
	if g.cfg.Replicas == nil {
		return nil, nil
	}
	h, err := g.cfg.Replicas.Hold(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if err := g.lockAndFollow(ctx, h, []string{lockFreeze}); err != nil {
		h.Release()
		return nil, err
	}
	return h, nil
}

// holdRequests locks requests ids across replicas (sorted, so that two
// holders never wait on each other) and folds the log up to them.
func (g *Gateway) holdRequests(ctx context.Context, ids ...string) (Hold, error) {
	if g.cfg.Replicas == nil {
		return nil, nil
	}
	h, err := g.cfg.Replicas.Hold(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = lockPrefix + id
	}
	slices.Sort(keys)
	if err := g.lockAndFollow(ctx, h, keys); err != nil {
		h.Release()
		return nil, err
	}
	return h, nil
}

// release releases h, if any.
func release(h Hold) {
	if h != nil {
		h.Release()
	}
}

// pollInterval is how often a Wait on a replica reads the log when no
// listener wakes it (a lost notification, a listener reconnecting).
const pollInterval = time.Second

// runExpiryShared ends the parked requests due at now, each under its lock
// once the log is read up to it: a request another replica approved, or
// expired, in the meantime is not expired again.
func (g *Gateway) runExpiryShared(ctx context.Context, now time.Time) {
	var due []string
	for _, r := range g.approvals.m.Pending("") {
		if !now.Before(r.Expires) {
			due = append(due, r.ID)
		}
	}
	if len(due) == 0 {
		return
	}
	h, err := g.holdRequests(ctx, due...)
	if err != nil {
		return // the next round tries again
	}
	defer h.Release()
	ended, _ := g.approvals.m.ExpireOnly(now, func(id string) bool { return slices.Contains(due, id) })
	for _, r := range ended {
		g.finish(r.ID)
	}
	g.follow.forgetFailed(time.Now())
}

// waitShared is Wait on a replica: the request may be approved, rejected or
// expired on any replica, and this one learns it by reading the log, when a
// listener calls Follow or every pollInterval.
func (g *Gateway) waitShared(ctx context.Context, agent, id string) (*Result, error) {
	for {
		wake := g.follow.followed() // taken before reading: no catch-up is missed
		if err := g.Follow(ctx); err != nil {
			if ctx.Err() != nil {
				return g.get(agent, id)
			}
			return nil, err
		}
		g.mu.Lock()
		rec, _, _ := g.reqs.get(id)
		var done chan struct{}
		if rec != nil && rec.Agent == agent {
			done = rec.done
		}
		g.mu.Unlock()
		if done == nil {
			return g.get(agent, id)
		}
		t := time.NewTimer(pollInterval)
		select {
		case <-done:
			t.Stop()
			return g.get(agent, id)
		case <-ctx.Done():
			t.Stop()
			return g.get(agent, id)
		case <-wake:
			t.Stop()
		case <-t.C:
		}
	}
}

// rebuilt ends Rebuild on a replica: the parked requests and their votes
// are restored; a decision without its outcome, or a quorum without its
// execution, may be another replica's work in flight, and is left to it (or
// to the reconciliation of a replica that stopped, which knows whose work
// it was), not closed here. The log is folded up to lr's size.
func (g *Gateway) rebuilt(lr LogReader, events []approval.Event, latest time.Time) error {
	if len(events) > 0 {
		if g.approvals == nil {
			return fmt.Errorf("rebuild: the log has approval events and no approvers are configured")
		}
		if _, err := g.approvals.m.Restore(events); err != nil {
			return fmt.Errorf("rebuild: %w", err)
		}
		for _, r := range events {
			if req, err := g.approvals.m.Get(r.Request); err == nil && req.State != approval.Pending && req.State != approval.Approved {
				g.finish(r.Request)
			}
		}
		g.approvals.m.NotBefore(latest)
	}
	g.mu.Lock()
	g.forgetLocked(nil, false)
	for _, rec := range g.reqs.open {
		g.reqs.settle(rec, g.reader != nil)
	}
	g.mu.Unlock()
	g.follow.mu.Lock()
	g.follow.next = max(g.follow.next, lr.Size())
	g.follow.ownMu.Lock()
	for i, k := range g.follow.doneAt {
		if i < g.follow.next { // in the rebuilt log: never read again
			delete(g.follow.doneAt, i)
			delete(g.follow.own, k)
		}
	}
	g.follow.ownMu.Unlock()
	g.follow.mu.Unlock()
	if t := latest.UnixNano(); !latest.IsZero() && t > g.follow.latest.Load() {
		g.follow.latest.Store(t)
	}
	return nil
}

// decisionTime is the time of a decision made now: the clock's, and on a
// replica never earlier than an entry it folded from another one. A window
// counts the points up to its decision's time, so a replica whose clock is
// behind another's would otherwise not count that one's latest decisions.
func (g *Gateway) decisionTime() time.Time {
	now := g.cfg.Now().UTC()
	if g.follow != nil {
		if l := time.Unix(0, g.follow.latest.Load()).UTC(); l.After(now) {
			return l
		}
	}
	return now
}

// sized is a LogReader of the log's first size entries.
type sized struct {
	LogReader
	size int64
}

func (s sized) Size() int64 { return s.size }
