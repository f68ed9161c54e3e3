package approval

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/rulelock/rulelock/policy"
)

// A State is where a parked request is in its life.
type State string

const (
	Pending  State = "pending"  // waiting for its quorum
	Approved State = "approved" // quorum reached: one caller was told to execute it
	Executed State = "executed" // the caller has executed it (MarkExecuted)
	Rejected State = "rejected" // an eligible approver rejected it
	Expired  State = "expired"  // its time ran out before the quorum
	// Revoked: the gateway denied it while it was pending, because who
	// may act changed (Revoke): its agent was removed or lost a role, or
	// the approvers configured now can no longer meet a requirement.
	Revoked State = "revoked"
)

// A Request is a parked request, as Park takes it and Get returns it. The
// Manager owns its own copy: changing a returned Request changes nothing.
type Request struct {
	// Set by the caller of Park.
	ID           string   // unique; see Statement.Request for the alphabet
	Agent        string   // the requesting agent, who may not approve it
	Action       [32]byte // SHA-256 of the canonical action
	Policy       string   // digest of the policy that parked it
	Requirements []policy.Requirement

	// Set by the Manager.
	Created   time.Time
	Expires   time.Time // Created plus the shortest Within, in whole seconds
	State     State
	Approvals []Vote    // accepted approvals, in order
	Rejection *Vote     // the rejection that ended it, if any
	Ended     time.Time // when it left Pending
	Reconcile bool      // restored as Approved but not Executed: the caller must find out what happened
}

// A Vote is one accepted approval or rejection.
type Vote struct {
	Approver string
	Time     time.Time
	Reason   string // rejections only
	Note     []byte // the signed statement, as submitted
}

// Statement returns the statement an approver signs to give verdict v on r.
func (r *Request) Statement(v Verdict, reason string) Statement {
	return Statement{Request: r.ID, Action: r.Action, Policy: r.Policy, Expires: r.Expires, Verdict: v, Reason: reason}
}

// A Recorder makes an event durable, typically by appending it to the
// audit log. The Manager records each event before it takes effect, under
// its lock, so the recorded order is the order of effect and replaying the
// events with Restore gives the same state. When Record fails the event
// has no effect. Record must not call the Manager.
type Recorder interface {
	Record(Event) error
}

// RecorderFunc adapts a function to a Recorder.
type RecorderFunc func(Event) error

func (f RecorderFunc) Record(ev Event) error { return f(ev) }

// Options configure a Manager. The zero value works.
type Options struct {
	Now                func() time.Time // the wall clock; time.Now when nil
	Recorder           Recorder         // nil: events are not recorded
	DefaultWithin      time.Duration    // time limit when no requirement sets one; 1h when zero
	MaxPendingPerAgent int              // pending requests per agent; 16 when zero
	MaxPending         int              // pending requests in all; 4096 when zero
	KeepClosed         int              // finished requests kept for Get and Wait; 1024 when zero

	// Elapsed is the monotonic clock: the time since some fixed instant,
	// which never goes back whatever the wall clock does. Expiry is judged
	// on both clocks, and a request has expired when either says so, so
	// that a wall clock set back never revives one. Nil: Go's monotonic
	// clock (time.Since a reading of time.Now taken by New).
	Elapsed func() time.Duration
}

// A Manager holds the parked requests and decides when each has its quorum.
// It is safe for concurrent use.
type Manager struct {
	reg  *Registry
	opts Options

	mu        sync.Mutex
	reqs      map[string]*entry
	pending   int
	pendingBy map[string]int
	finished  []string // ids of finished requests, oldest first
}

type entry struct {
	r  Request
	by map[string]bool // approvers who approved
	// removed: a vote by an approver no longer configured was restored
	// without being counted (replayRemoved).
	removed bool
	done    chan struct{} // closed when r leaves Pending
	// deadline is when r expires on the monotonic clock (Options.Elapsed):
	// Expires less the time already passed when it was parked or restored.
	deadline time.Duration
}

// New returns a Manager for the approvers in reg.
func New(reg *Registry, opts Options) *Manager {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Elapsed == nil {
		start := time.Now()
		opts.Elapsed = func() time.Duration { return time.Since(start) }
	}
	if opts.DefaultWithin <= 0 {
		opts.DefaultWithin = time.Hour
	}
	if opts.MaxPendingPerAgent <= 0 {
		opts.MaxPendingPerAgent = 16
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = 4096
	}
	if opts.KeepClosed <= 0 {
		opts.KeepClosed = 1024
	}
	return &Manager{reg: reg, opts: opts, reqs: make(map[string]*entry), pendingBy: make(map[string]int)}
}

// Park parks a request that needs approval. It reads ID, Agent, Action,
// Policy and Requirements from req and returns the parked request. It
// fails with ErrQueueFull when the agent, or the Manager, has too many
// pending requests; with ErrDuplicateID when the id is in use; and with
// ErrInvalidRequest when req is malformed or no set of configured approvers
// could meet a requirement.
func (m *Manager) Park(req Request) (Request, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	ev := Event{
		Kind: EventParked, Time: now, Request: req.ID, Agent: req.Agent, Action: req.Action,
		Policy: req.Policy, Requirements: cloneRequirements(req.Requirements),
		Expires: expiry(now, req.Requirements, m.opts.DefaultWithin),
	}
	if err := m.checkPark(ev, true); err != nil {
		return Request{}, err
	}
	if err := m.record(ev); err != nil {
		return Request{}, fmt.Errorf("park %s: %w", ev.Request, err)
	}
	e := m.applyPark(ev)
	e.deadline = m.opts.Elapsed() + ev.Expires.Sub(ev.Time)
	return e.snapshot(), nil
}

// A Result is the outcome of an accepted approval.
type Result struct {
	Request Request // the request after the approval
	// Ready is true for exactly one approval of a request: the one that
	// completed its quorum. Its caller, and no other, must execute the
	// request and then call MarkExecuted.
	Ready bool
}

// Approve submits a signed approval statement for request id. Refusals
// are *RefusalError values wrapping one of the sentinels.
func (m *Manager) Approve(id string, signed []byte) (Result, error) {
	r, ready, err := m.vote(Approve, id, signed)
	return Result{Request: r, Ready: ready}, err
}

// Reject submits a signed rejection statement for request id. An accepted
// rejection ends the request.
func (m *Manager) Reject(id string, signed []byte) (Request, error) {
	r, _, err := m.vote(Reject, id, signed)
	return r, err
}

func (m *Manager) vote(v Verdict, id string, signed []byte) (Request, bool, error) {
	kind := EventApproval
	if v == Reject {
		kind = EventRejection
	}
	// Verify outside the lock: it is the costly part and needs no state.
	approver, st, err := m.registry().Open(signed)
	if err != nil {
		var oe *openError
		errors.As(err, &oe)
		return Request{}, false, refuse(kind.op(), id, approver, oe.err, "%s", oe.detail)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.reqs[id]
	if e == nil {
		return Request{}, false, refuse(kind.op(), id, approver, ErrNotFound, "")
	}
	ev := Event{Kind: kind, Time: m.now(), Request: id, Approver: approver, Note: bytes.Clone(signed)}
	if err := m.checkVote(e, ev, st); err != nil {
		return e.snapshot(), false, err
	}
	if m.overdue(e) {
		return e.snapshot(), false, refuse(kind.op(), id, approver, ErrExpired,
			"expired at %s by the monotonic clock (the wall clock reads %s: it was set back)", e.r.Expires.Format(time.RFC3339), ev.Time.Format(time.RFC3339))
	}
	if err := m.record(ev); err != nil {
		return e.snapshot(), false, fmt.Errorf("%s %s: %w", kind.op(), id, err)
	}
	ready := m.applyVote(e, ev, st)
	return e.snapshot(), ready, nil
}

// SetRegistry replaces the approvers (a reload of the configuration). An
// approval already given by an approver who is no longer in reg no longer
// counts towards a quorum, and a removed approver's key verifies nothing
// more; a request whose quorum was met stays met.
func (m *Manager) SetRegistry(reg *Registry) {
	m.mu.Lock()
	m.reg = reg
	m.mu.Unlock()
}

// registry returns the approvers in force.
func (m *Manager) registry() *Registry {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reg
}

// MarkExecuted records that the caller told to execute request id (by a
// Ready result, or by Restore for reconciliation) has done so, whatever
// the execution's outcome.
func (m *Manager) MarkExecuted(id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	ev := Event{Kind: EventExecuted, Time: m.now(), Request: id}
	e, err := m.checkExecuted(ev)
	if err != nil {
		return err
	}
	if err := m.record(ev); err != nil {
		return fmt.Errorf("mark executed %s: %w", id, err)
	}
	m.applyExecuted(e, ev)
	return nil
}

// Revoke ends pending request id, which the caller denies because who may
// act changed (a reload of the configuration): its agent was removed, or
// its approvers can no longer meet it. reason is the caller's reason code,
// given to the Recorder with the revoked event. It fails with ErrNotFound,
// or ErrClosed when id is no longer pending.
func (m *Manager) Revoke(id, reason string) (Request, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.reqs[id]
	switch {
	case e == nil:
		return Request{}, refuse("revoke", id, "", ErrNotFound, "")
	case e.r.State != Pending:
		return e.snapshot(), refuse("revoke", id, "", ErrClosed, "request is %s", e.r.State)
	}
	ev := Event{Kind: EventRevoked, Time: m.now(), Request: id, Reason: reason}
	if err := m.record(ev); err != nil {
		return e.snapshot(), fmt.Errorf("revoke %s: %w", id, err)
	}
	m.end(e, Revoked, ev.Time)
	return e.snapshot(), nil
}

// Meetable reports whether the approvers configured now could still meet
// every requirement of req: for each, the eligible approvers who approved
// it and those who still could (not the requester) are enough.
func (m *Manager) Meetable(req Request) bool {
	reg := m.registry()
	still, wanted := reg.StillNeeded(req), reg.StillWanted(req)
	for i := range still {
		if len(wanted[i]) < still[i] {
			return false
		}
	}
	return true
}

// Expire ends every pending request whose expiry is not after now, or
// whose time ran out on the monotonic clock (the wall clock was set back),
// and returns them, earliest expiry first. The gateway calls it
// periodically and logs each expiry (an APPROVAL entry). An expiry is recorded at now, or
// at the request's expiry when now is earlier (a clock set back). On a
// Recorder failure it returns the requests expired so far and the error.
func (m *Manager) Expire(now time.Time) ([]Request, error) {
	return m.ExpireOnly(now, nil)
}

// ExpireOnly is Expire for the requests only accepts (every request when
// only is nil): replicas sharing a log expire a request only under its
// lock, once they have read the log up to it (gateway.Replicas).
func (m *Manager) ExpireOnly(now time.Time, only func(id string) bool) ([]Request, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now = now.UTC()
	var due []*entry
	for _, e := range m.reqs {
		if only != nil && !only(e.r.ID) {
			continue
		}
		if e.r.State == Pending && (!now.Before(e.r.Expires) || m.overdue(e)) {
			due = append(due, e)
		}
	}
	slices.SortFunc(due, func(a, b *entry) int {
		return cmp.Or(a.r.Expires.Compare(b.r.Expires), cmp.Compare(a.r.ID, b.r.ID))
	})
	var ended []Request
	for _, e := range due {
		ev := Event{Kind: EventExpired, Time: now, Request: e.r.ID}
		if now.Before(e.r.Expires) {
			ev.Time = e.r.Expires // as Restore checks: never before the expiry
		}
		if err := m.record(ev); err != nil {
			return ended, fmt.Errorf("expire %s: %w", e.r.ID, err)
		}
		m.applyExpired(e, ev)
		ended = append(ended, e.snapshot())
	}
	return ended, nil
}

// NextExpiry returns the earliest expiry of a pending request on the wall
// clock, earlier when the monotonic clock runs out first (the wall clock
// was set back), so that the caller's sweeper can sleep until then; ok is
// false when none is pending.
func (m *Manager) NextExpiry() (t time.Time, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now, elapsed := m.now(), m.opts.Elapsed()
	for _, e := range m.reqs {
		if e.r.State != Pending {
			continue
		}
		next := e.r.Expires
		if mono := now.Add(e.deadline - elapsed); mono.Before(next) {
			next = mono
		}
		if !ok || next.Before(t) {
			t, ok = next, true
		}
	}
	return t, ok
}

// NotBefore tells the Manager that the time is at least t, whatever the
// wall clock says: t is a time the log proves, such as its latest entry's.
// From now on no pending request has more time left than its expiry less
// t. Restore applies it with the latest time among the events; a gateway
// that restarted applies it with its log's latest entry. A wall clock set
// back across a restart thus never extends a window.
func (m *Manager) NotBefore(t time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.notBefore(t)
}

func (m *Manager) notBefore(t time.Time) {
	elapsed := m.opts.Elapsed()
	for _, e := range m.reqs {
		if e.r.State == Pending {
			e.deadline = min(e.deadline, elapsed+e.r.Expires.Sub(t))
		}
	}
}

// overdue reports whether e's time ran out on the monotonic clock.
func (m *Manager) overdue(e *entry) bool { return m.opts.Elapsed() >= e.deadline }

// Get returns request id.
func (m *Manager) Get(id string) (Request, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.reqs[id]
	if e == nil {
		return Request{}, refuse("get", id, "", ErrNotFound, "")
	}
	return e.snapshot(), nil
}

// Pending returns the pending requests of agent, or of every agent when
// agent is "", oldest first.
func (m *Manager) Pending(agent string) []Request {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Request
	for _, e := range m.reqs {
		if e.r.State == Pending && (agent == "" || e.r.Agent == agent) {
			out = append(out, e.snapshot())
		}
	}
	sortRequests(out)
	return out
}

// Wait returns request id once it is no longer pending, or its current
// state and ctx's error when ctx is done first. Expiry needs a call to
// Expire to take effect.
func (m *Manager) Wait(ctx context.Context, id string) (Request, error) {
	m.mu.Lock()
	e := m.reqs[id]
	m.mu.Unlock()
	if e == nil {
		return Request{}, refuse("wait", id, "", ErrNotFound, "")
	}
	select {
	case <-e.done:
	case <-ctx.Done():
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e.r.State == Pending {
		return e.snapshot(), ctx.Err()
	}
	return e.snapshot(), nil
}

func (m *Manager) now() time.Time { return m.opts.Now().UTC() }

func (m *Manager) record(ev Event) error {
	if m.opts.Recorder == nil {
		return nil
	}
	return m.opts.Recorder.Record(ev)
}

// expiry is created plus the shortest positive time limit, or plus def
// when there is none, cut to whole seconds.
func expiry(created time.Time, reqs []policy.Requirement, def time.Duration) time.Time {
	within := time.Duration(0)
	for _, q := range reqs {
		if q.Within > 0 && (within == 0 || q.Within < within) {
			within = q.Within
		}
	}
	if within == 0 {
		within = def
	}
	return created.Add(within).Truncate(time.Second).UTC()
}

// checkPark validates a parked event. caps is false when restoring: the
// limits held when the event was recorded.
func (m *Manager) checkPark(ev Event, caps bool) error {
	bad := func(format string, args ...any) error {
		return refuse("park", ev.Request, "", ErrInvalidRequest, format, args...)
	}
	switch {
	case !validID(ev.Request):
		return bad("request id %q: want 1 to %d bytes of A-Z a-z 0-9 . _ : -", ev.Request, MaxIDSize)
	case ev.Agent == "" || len(ev.Agent) > 256 || !utf8.ValidString(ev.Agent):
		return bad("agent id %q: want 1 to 256 bytes of UTF-8", ev.Agent)
	case !validDigest(ev.Policy):
		return bad("policy digest %q: want sha256:<64 lowercase hex>", ev.Policy)
	case len(ev.Requirements) == 0 || len(ev.Requirements) > 64:
		return bad("%d requirements, want 1 to 64", len(ev.Requirements))
	case !ev.Time.Before(ev.Expires) || ev.Expires.Nanosecond() != 0:
		return bad("expiry %v is not a whole second after creation %v", ev.Expires, ev.Time)
	case m.reqs[ev.Request] != nil:
		return refuse("park", ev.Request, "", ErrDuplicateID, "")
	}
	for _, q := range ev.Requirements {
		if q.Approvers < 1 || q.Approvers > 100 || q.Within < 0 {
			return bad("rule %q: %d approvers within %v", q.Rule, q.Approvers, q.Within)
		}
		if caps && m.eligibleCount(ev.Agent, q.Groups) < q.Approvers {
			return bad("rule %q needs %d approvers from %q; only %d are configured", q.Rule, q.Approvers, q.Groups, m.eligibleCount(ev.Agent, q.Groups))
		}
	}
	switch {
	case caps && m.pendingBy[ev.Agent] >= m.opts.MaxPendingPerAgent:
		return refuse("park", ev.Request, "", ErrQueueFull, "agent %q has %d pending requests", ev.Agent, m.pendingBy[ev.Agent])
	case caps && m.pending >= m.opts.MaxPending:
		return refuse("park", ev.Request, "", ErrQueueFull, "%d pending requests", m.pending)
	}
	return nil
}

// eligibleCount is the number of approvers other than agent who may count
// toward a requirement naming groups.
func (m *Manager) eligibleCount(agent string, groups []string) int {
	n := 0
	for id, a := range m.reg.byID {
		if id != agent && a.eligible(groups) {
			n++
		}
	}
	return n
}

// checkVote validates an approval or rejection of e by ev.Approver, whose
// verified statement is st.
func (m *Manager) checkVote(e *entry, ev Event, st Statement) error {
	r := &e.r
	no := func(err *Error, format string, args ...any) error {
		return refuse(ev.Kind.op(), r.ID, ev.Approver, err, format, args...)
	}
	want := Approve
	if ev.Kind == EventRejection {
		want = Reject
	}
	a := m.reg.byID[ev.Approver]
	switch {
	case a == nil:
		return no(ErrUnknownApprover, "")
	case r.State != Pending:
		return no(ErrClosed, "request is %s", r.State)
	case !ev.Time.Before(r.Expires):
		return no(ErrExpired, "expired at %s", r.Expires.Format(time.RFC3339))
	case st.Request != r.ID:
		return no(ErrRequestMismatch, "statement names request %q", st.Request)
	case st.Action != r.Action:
		return no(ErrActionMismatch, "statement names action sha256:%x, request has sha256:%x", st.Action, r.Action)
	case st.Policy != r.Policy:
		return no(ErrPolicyMismatch, "statement names policy %s, request has %s", st.Policy, r.Policy)
	case !st.Expires.Equal(r.Expires):
		return no(ErrExpiryMismatch, "statement names expiry %s, request has %s", st.Expires.Format(time.RFC3339), r.Expires.Format(time.RFC3339))
	case st.Verdict != want:
		return no(ErrVerdictMismatch, "statement says %s", st.Verdict)
	case ev.Approver == r.Agent:
		return no(ErrSelfApproval, "")
	case !slices.ContainsFunc(r.Requirements, func(q policy.Requirement) bool { return a.eligible(q.Groups) }):
		return no(ErrNotInGroup, "approver groups %q", a.Groups)
	case ev.Kind == EventApproval && e.by[ev.Approver]:
		return no(ErrDuplicate, "")
	}
	return nil
}

func (m *Manager) checkExecuted(ev Event) (*entry, error) {
	e := m.reqs[ev.Request]
	switch {
	case e == nil:
		return nil, refuse("mark executed", ev.Request, "", ErrNotFound, "")
	case e.r.State != Approved:
		return nil, refuse("mark executed", ev.Request, "", ErrClosed, "request is %s, not approved", e.r.State)
	}
	return e, nil
}

func (m *Manager) applyPark(ev Event) *entry {
	e := &entry{
		r: Request{
			ID: ev.Request, Agent: ev.Agent, Action: ev.Action, Policy: ev.Policy,
			Requirements: cloneRequirements(ev.Requirements), Created: ev.Time, Expires: ev.Expires, State: Pending,
		},
		by:   make(map[string]bool),
		done: make(chan struct{}),
	}
	m.reqs[e.r.ID] = e
	m.pending++
	m.pendingBy[e.r.Agent]++
	return e
}

// applyVote applies an accepted approval or rejection and reports whether
// it completed the quorum. Only this transition from Pending to Approved
// ever reports true.
func (m *Manager) applyVote(e *entry, ev Event, st Statement) bool {
	v := Vote{Approver: ev.Approver, Time: ev.Time, Reason: st.Reason, Note: bytes.Clone(ev.Note)}
	if ev.Kind == EventRejection {
		e.r.Rejection = &v
		m.end(e, Rejected, ev.Time)
		return false
	}
	e.r.Approvals = append(e.r.Approvals, v)
	e.by[ev.Approver] = true
	if !m.quorum(e) {
		return false
	}
	m.end(e, Approved, ev.Time)
	return true
}

func (m *Manager) applyExpired(e *entry, ev Event) { m.end(e, Expired, ev.Time) }

func (m *Manager) applyExecuted(e *entry, ev Event) {
	e.r.State = Executed
	e.r.Reconcile = false
	m.finish(e)
}

// quorum reports whether every requirement of e is met by its distinct
// approvers. One approver may count toward several requirements.
func (m *Manager) quorum(e *entry) bool {
	for _, n := range m.reg.StillNeeded(e.r) {
		if n > 0 {
			return false
		}
	}
	return true
}

// end moves e out of Pending.
func (m *Manager) end(e *entry, s State, t time.Time) {
	if e.r.State != Pending {
		panic("approval: ending a request that is " + string(e.r.State))
	}
	e.r.State = s
	e.r.Ended = t
	m.pending--
	if m.pendingBy[e.r.Agent]--; m.pendingBy[e.r.Agent] == 0 {
		delete(m.pendingBy, e.r.Agent)
	}
	close(e.done)
	if s != Approved {
		m.finish(e)
	}
}

// finish notes that e will change no more, and forgets the oldest finished
// requests beyond KeepClosed.
func (m *Manager) finish(e *entry) {
	m.finished = append(m.finished, e.r.ID)
	if len(m.finished) > m.opts.KeepClosed {
		delete(m.reqs, m.finished[0])
		m.finished = m.finished[1:]
	}
}

func (e *entry) snapshot() Request {
	r := e.r
	r.Requirements = cloneRequirements(r.Requirements)
	r.Approvals = slices.Clone(r.Approvals)
	for i := range r.Approvals {
		r.Approvals[i].Note = bytes.Clone(r.Approvals[i].Note)
	}
	if r.Rejection != nil {
		v := *r.Rejection
		v.Note = bytes.Clone(v.Note)
		r.Rejection = &v
	}
	return r
}

func cloneRequirements(qs []policy.Requirement) []policy.Requirement {
	qs = slices.Clone(qs)
	for i := range qs {
		qs[i].Groups = slices.Clone(qs[i].Groups)
	}
	return qs
}

func sortRequests(rs []Request) {
	slices.SortFunc(rs, func(a, b Request) int {
		return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID))
	})
}
