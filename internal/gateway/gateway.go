// Package gateway is rulelock's pipeline: authenticate (done by the caller),
// decide, record, execute, record — the Trusted Remote Execution loop.
//
// For every request the gateway evaluates the active policy against the
// agent's history, appends a DECISION entry to the audit log and waits for it
// to be durable, and only then acts: a denial is answered, an allowed action
// is executed by the gateway's own executor (the agent never holds the
// upstream credentials), and the OUTCOME entry is durable before the reply.
// No upstream side effect happens without a durable ALLOW decision for exactly
// those canonical bytes, and one decision leads to at most one execution.
//
// Stateful limits hold under concurrency: the ledger (internal/ledger) holds
// the scopes a decision reads and writes from its evaluation until its
// entry is queued in the log, so decisions that share a scope are made one
// at a time, and an allowed action counts against the limits from the
// moment it is decided, before its outcome is known.
package gateway

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/trace"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/ledger"
	"github.com/rulelock/rulelock/internal/tracing"
	"github.com/rulelock/rulelock/policy"
)

// EngineVersion names the decision engine in every decision entry. 0.2 is
// the ledger's: scoped helpers (session.* counts this session only, where
// 0.1 counted the agent's whole history), no history cap, conservative
// limits. 0.3: a window never ends before the latest action it counted (a
// decision timed earlier, by a clock set back, counts it all the same). A
// replay re-runs a decision with this engine's semantics.
const EngineVersion = "rulelock/0.3"

// Recorder is what the gateway needs of the audit log: durable appends.
type Recorder interface {
	Append(ctx context.Context, e *audit.Entry) (audit.Receipt, error)
}

// QueueRecorder is a Recorder that can also queue an entry and wait for it
// separately, as *audit.Log does (audit.Log.Enqueue): entries are recorded
// in the order they were queued, and once one is queued it is recorded
// unless the recorder fails, and then none queued after it is. With one,
// the gateway holds an agent's lock until the agent's decision is queued
// rather than until it is durable.
type QueueRecorder interface {
	Recorder
	Enqueue(ctx context.Context, e *audit.Entry) (audit.Pending, error)
}

var _ QueueRecorder = (*audit.Log)(nil)

// Attestor attests each bundle activation and says whether the platform's
// attestation covers a decision made now (Config.Attest).
type Attestor interface {
	// Activated measures a bundle whose activation entry is durable and
	// logs an attestation entry naming it. Until that entry is logged
	// (now, or by a later retry), Attested must refuse.
	Activated(ctx context.Context, bundleDigest string) error
	// Attested returns nil when a decision made at now falls within the
	// attestation policy: the last attestation entry attested the state in
	// force, no attestation failed since, and now is within the longest
	// allowed gap after it. Otherwise it says why; nothing is decided.
	// It is called on every decision's path: it must be cheap.
	Attested(now time.Time) error
}

// Executor performs an allowed action upstream.
type Executor interface {
	Execute(ctx context.Context, x Execution) Outcome
}

// ExecutorFunc adapts a function to Executor.
type ExecutorFunc func(ctx context.Context, x Execution) Outcome

// Execute calls f.
func (f ExecutorFunc) Execute(ctx context.Context, x Execution) Outcome { return f(ctx, x) }

// Execution is one allowed action to perform. RequestID is the idempotency
// key: an upstream that honours it executes a request at most once.
type Execution struct {
	RequestID string
	Action    policy.Action
}

// Outcome statuses (ledger.Status).
const (
	StatusOK      = ledger.OK      // the upstream did it
	StatusError   = ledger.Error   // the upstream refused or failed, or it was never reached
	StatusUnknown = ledger.Unknown // it may or may not have happened (timeout after sending, crash)
)

// Outcome is what became of an execution.
type Outcome struct {
	Status     ledger.Status   `json:"status"`
	HTTPStatus int             `json:"http_status,omitempty"`
	Body       json.RawMessage `json:"body,omitempty"` // the upstream's JSON reply, when small enough
	BodySHA256 string          `json:"body_sha256,omitempty"`
	Error      string          `json:"error,omitempty"`
	Reported   bool            `json:"reported,omitempty"` // reported by the agent (decide-only action types)
}

// Config configures a Gateway.
type Config struct {
	Policy    *policy.Policy
	Log       Recorder
	Executors map[string]Executor // by action type; a type without one is decide-only
	// Sensitive, when set, names the members of an action type kept out
	// of the log besides those the policy's schema declares sensitive
	// (sensitive.go): an MCP tool's arguments the configuration marks
	// (mcpproxy.Proxy.Sensitive). Nil adds none.
	Sensitive func(actionType string) []string
	// ExecutorFor, when set, is asked for an action type Executors lacks
	// (the MCP proxy's tools, which appear at run time); nil means none.
	ExecutorFor func(actionType string) Executor
	Now         func() time.Time // default time.Now
	// Retention is how far back the ledger keeps actions for the policy's
	// windows (default 7 days); a policy reading a longer window is refused.
	Retention time.Duration
	// Budget caps the ledger's memory in bytes (default 512 MiB): over it,
	// new actions are denied (memory_budget) and counted in the metrics.
	Budget int64
	// ExecTimeout bounds one execution (default 30s).
	ExecTimeout time.Duration
	// Approvers are the humans who approve parked requests; with none, a
	// require_approval decision becomes deny (no_approvers).
	Approvers *approval.Registry
	// MaxPendingPerAgent caps parked requests per agent (default 16).
	MaxPendingPerAgent int
	// Principals, when set, says who an agent is now (its roles and
	// principal from the current configuration; false when it was
	// removed): a parked request is re-checked against it when its quorum is
	// met, and denied principal_revoked when the agent is gone or lost a
	// role. Nil trusts the agent as it was when it asked.
	Principals func(agentID string) (policy.Agent, bool)
	// Attest, when set, is called right after each activation entry is
	// durable, with decisions held off: it measures the bundle and logs an
	// attestation entry naming it (internal/attest). And it gates every
	// decision: while Attest.Attested refuses, nothing is decided, approved
	// into execution or executed (ErrUnattested), and actions are accepted
	// again once an attestation succeeds, without a restart.
	Attest Attestor
	// Checkpoints, when set, says how long entries have waited for a
	// signed checkpoint; past MaxUnsigned (default DefaultMaxUnsigned)
	// the gateway refuses new actions with ErrUnsigned (see Ready).
	Checkpoints Checkpoints
	MaxUnsigned time.Duration
	// UnfreezeQuorum is how many distinct approvers must each sign for
	// lifting a freeze (default 2; freeze.go).
	UnfreezeQuorum int
	// Lease, when set, says that other replicas append to the same log
	// and may be executing what they decided (a log in PostgreSQL):
	// Rebuild leaves an allowed decision without an outcome open while it
	// is younger than Lease (its replica records the outcome, or once the
	// lease has expired a reconciler records unknown: pglog.Reconciler),
	// and closes only older ones as unknown. Zero: this gateway is the
	// log's only writer, and Rebuild closes every one.
	Lease time.Duration
	// Replicas, when set, makes the gateway one of several replicas of
	// one shared log (replicas.go); Log must then read that log back
	// (LogReader). Nil: the gateway is alone on its log.
	Replicas Replicas
	// Notify, when set, is told of each request parked for approval, once
	// its decision is durable. It is called on the decision's path, with
	// the request's scopes held: it must return at once (queue, never
	// send). Nothing it does changes or delays the decision. Requests
	// restored at Rebuild are not notified again.
	Notify Notifier
	// Tracer, when set, records the spans of each request (decide,
	// record_decision, approval_wait, execute, record_outcome: see
	// internal/tracing) and annotates the caller's span with the request
	// id, decision and rules. Nil is off, at no cost.
	Tracer trace.Tracer
}

// Notifier is told of parked requests (Config.Notify).
type Notifier interface {
	Parked(Parked)
}

// NotifierFunc adapts a function to a Notifier.
type NotifierFunc func(Parked)

// Parked calls f(p).
func (f NotifierFunc) Parked(p Parked) { f(p) }

// Parked is what a Notifier learns of a parked request: who asked, for
// which action type, and who must approve by when. It carries none of the
// action's fields, the instruction or the reasoning (they may be sensitive,
// and they are the agent's words: approvers read them in the console).
type Parked struct {
	ID           string
	Agent        string
	ActionType   string
	Requirements []policy.Requirement
	Expires      time.Time
}

// Errors callers branch on.
var (
	ErrNotFound    = errors.New("no such request")
	ErrForbidden   = errors.New("request belongs to another agent")
	ErrConflict    = errors.New("request is not awaiting an outcome")
	ErrUnavailable = errors.New("gateway unavailable")
	// ErrNoPolicy: no policy is active yet (no valid bundle): nothing is
	// decided or executed.
	ErrNoPolicy = errors.New("no policy is active")
)

// NoPolicyMessage tells an agent why its action was refused while no policy
// is active.
const NoPolicyMessage = "no valid policy bundle is active: nothing was decided or executed"

// Gateway mediates actions. It is safe for concurrent use.
type Gateway struct {
	cfg Config
	// alog is cfg.Log when it is the audit log itself, called directly so
	// that a decision's entry can stay on the stack (a call through an
	// interface makes it escape: ~0.9 KB and an allocation per decision).
	alog *audit.Log

	approvals *approvals
	active    atomic.Pointer[Active]

	// The last signed bundle whose activation Rebuild found in the log.
	lastBundle string

	// ledger is the state folded from the log. Decisions hold stateMu for
	// reading; an activation that needs indexes the ledger lacks holds it
	// for writing while it folds the log again into a new ledger.
	stateMu    sync.RWMutex
	ledger     *ledger.Ledger
	installed  []*policy.Policy // every policy the ledger keeps indexes for
	decided    atomic.Int64     // decisions made live (a log that cannot be read back is not empty then)
	folded     bool             // Rebuild folded entries into the ledger (under stateMu)
	none       *policy.Policy   // the deny-everything policy of a gateway with none active
	overBudget atomic.Int64     // decisions denied for the memory budget

	// Who may act, replaced whole by a reload (reload.go); and the freeze
	// in force, nil when none (freeze.go), from the ledger's fold.
	approvers   atomic.Pointer[approval.Registry]
	principalFn atomic.Pointer[func(string) (policy.Agent, bool)]
	frozen      atomic.Pointer[ledger.Freeze]

	mu     sync.Mutex
	reqs   requests
	reader LogReader // cfg.Log, when it can be read back (Get of final requests)
	// Encoded decision states by roles and principal (stateJSON).
	states  sync.Map
	nstates atomic.Int64
	// The approval_wait span of each parked request, by id, when tracing.
	waits sync.Map

	follow *follower    // with Config.Replicas: how far the shared log is folded
	share  *freezeShare // with Config.Replicas: the freeze's lock held shared for decisions
}

// record is what the gateway remembers of a request.
type record struct {
	ID       string
	Agent    string
	Session  string
	Action   policy.Action
	Decision *policy.Decision
	Entry    audit.Receipt // the decision entry
	Outcome  *Outcome
	OutEntry *audit.Receipt
	Time     time.Time
	awaiting bool // allowed, decide-only, waiting for the agent's report

	// postconditions are the verdicts on the outcome in OutEntry, nil for
	// none: a pointer, so that a decision without an outcome keeps 8 bytes
	// for them, not a slice's 24 (BenchmarkRetained).
	postconditions *[]policy.Verdict

	agent                  policy.Agent
	instruction, reasoning string
	logged                 *logged       // the action as logged, when it has sensitive members
	done                   chan struct{} // closed when a parked request is final
}

// New returns a gateway over an open log. Use Rebuild to load the log's
// history first when the log is not empty. Without Config.Policy the
// gateway is not ready: it decides and executes nothing until Activate.
func New(cfg Config) (*Gateway, error) {
	if cfg.Log == nil {
		return nil, fmt.Errorf("new gateway: %w: a log is required", ErrUnavailable)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Retention <= 0 {
		cfg.Retention = 7 * 24 * time.Hour
	}
	if cfg.ExecTimeout <= 0 {
		cfg.ExecTimeout = 30 * time.Second
	}
	if cfg.UnfreezeQuorum <= 0 {
		cfg.UnfreezeQuorum = 2
	}
	g := &Gateway{cfg: cfg, reqs: newRequests()}
	g.approvers.Store(cfg.Approvers)
	if cfg.Principals != nil {
		g.principalFn.Store(&cfg.Principals)
	}
	g.reader, _ = cfg.Log.(LogReader)
	if cfg.Replicas != nil {
		if g.reader == nil {
			return nil, fmt.Errorf("new gateway: %w: a replica's log must be readable (LogReader)", ErrUnavailable)
		}
		g.follow, g.share = newFollower(), newFreezeShare()
		cfg.Log = ownLog{Recorder: cfg.Log, f: g.follow}
		g.cfg.Log = cfg.Log
	}
	g.ledger = ledger.New(ledger.Options{Retention: cfg.Retention, Budget: cfg.Budget})
	g.alog, _ = cfg.Log.(*audit.Log)
	none, err := nonePolicy()
	if err != nil {
		return nil, fmt.Errorf("new gateway: %w", err)
	}
	g.none = none
	if cfg.Policy != nil {
		if err := g.ledger.CheckRetention(cfg.Policy); err != nil {
			return nil, fmt.Errorf("new gateway: %w", err)
		}
		g.ledger.Install(cfg.Policy)
		g.installed = append(g.installed, cfg.Policy)
		g.active.Store(&Active{Policy: cfg.Policy, Digest: cfg.Policy.Digest(), Dev: true})
	} else {
		g.active.Store(&Active{Policy: none, None: true})
	}
	if cfg.Approvers != nil {
		g.approvals = &approvals{parking: map[string]*audit.Entry{}, receipts: map[string]audit.Receipt{}, log: cfg.Log}
		g.approvals.m = approval.New(cfg.Approvers, approval.Options{
			Now: cfg.Now, Recorder: approval.RecorderFunc(g.approvals.record), MaxPendingPerAgent: cfg.MaxPendingPerAgent,
		})
	}
	return g, nil
}

// nonePolicy is the deny-everything policy of a gateway with none active,
// compiled once.
var nonePolicy = sync.OnceValues(func() (*policy.Policy, error) {
	return policy.FromSources([]policy.Source{{Name: "none.rules", Data: []byte("policy \"none\" {\n  default: deny\n}\n")}}, policy.Options{})
})

// Request is one authenticated action request.
type Request struct {
	Agent       policy.Agent // from authentication, never from the body
	Session     string
	Action      policy.Action
	Instruction string
	Reasoning   string
	// Tool, for a call through the MCP proxy, names the tool definition
	// the call was decided against; the decision entry records it.
	Tool *ledger.ToolRef

	logged *logged // set by decide: the action as logged (sensitive.go)
}

// Result is the gateway's answer.
type Result struct {
	RequestID string           `json:"request_id"`
	Decision  *policy.Decision `json:"decision"`
	Receipt   Receipt          `json:"receipt"`
	Outcome   *Outcome         `json:"outcome,omitempty"`
	// OutcomeReceipt is the outcome entry's receipt, once there is one.
	OutcomeReceipt *Receipt `json:"outcome_receipt,omitempty"`
	// Postconditions are the policy's verdicts on the outcome, as its
	// entry records them: one for each postcondition that applies, checked
	// when the outcome's status is ok.
	Postconditions []policy.Verdict `json:"postconditions,omitempty"`
	// Approval is the parked request's state, for require_approval decisions.
	Approval *approval.Request `json:"approval,omitempty"`
}

// Receipt locates an entry in the log. CoveredBySize is the tree size from
// which a signed checkpoint covers the entry: GET /v1/log/proof/{index}
// returns its inclusion proof once the latest checkpoint is at least that big.
type Receipt struct {
	Index         int64  `json:"index"`
	LeafHash      string `json:"leaf_hash"`
	CoveredBySize int64  `json:"covered_by_size"`
}

func receiptOf(r audit.Receipt) Receipt {
	return Receipt{Index: r.Index, LeafHash: r.LeafHash.String(), CoveredBySize: r.Index + 1}
}

// Submit decides req and, when the decision is allow and the action type has
// an executor, executes it. With execute false it only decides and records.
//
// Until a policy is active (Config.Policy nil and no Activate yet) it
// decides nothing and returns ErrNoPolicy; while Ready fails it decides
// nothing and returns that error.
func (g *Gateway) Submit(ctx context.Context, req *Request, execute bool) (*Result, error) {
	if err := g.Ready(); err != nil {
		return nil, err
	}
	rec, err := g.decide(ctx, req, execute && g.executor(req.Action.Type) != nil)
	if err != nil {
		return nil, err
	}
	g.annotate(ctx, rec.ID, req, rec.Decision)
	res := &Result{RequestID: rec.ID, Decision: rec.Decision, Receipt: receiptOf(rec.Entry)}
	if rec.done != nil {
		if ar, err := g.approvals.m.Get(rec.ID); err == nil {
			res.Approval = &ar
		}
	}
	if rec.Decision.Decision != policy.Allow || !execute {
		g.settle(rec)
		return res, nil
	}
	err = g.run(ctx, rec, res)
	g.settle(rec)
	if err != nil {
		return nil, err
	}
	return res, nil
}

// readAction reads back the action of the decision entry at index i.
func (g *Gateway) readAction(i int64) (policy.Action, error) {
	e, _, err := readEntry(g.reader, i)
	if err != nil {
		return policy.Action{}, err
	}
	d, err := ledger.Decode(e, g.reader)
	if err != nil || d.Action == nil {
		return policy.Action{}, fmt.Errorf("entry %d: no action (%v)", i, err)
	}
	return *d.Action, nil
}

// settle keeps only where rec is in the log once it is final (requests).
func (g *Gateway) settle(rec *record) {
	g.mu.Lock()
	g.reqs.settle(rec, g.reader != nil)
	g.mu.Unlock()
}

// run executes an allowed (or approved) request with its type's executor
// and records the outcome durably, filling in res; a type without an
// executor is left for the agent to report.
func (g *Gateway) run(ctx context.Context, rec *record, res *Result) error {
	ex := g.executor(rec.Action.Type)
	if ex == nil {
		// Decide-only: the agent acts and reports the outcome. Until it
		// does, the record does not keep the action (up to a request body,
		// twice) when the log can give it back.
		g.mu.Lock()
		rec.awaiting = true
		if g.reader != nil {
			// Copies: a decoded string shares the memory of the whole
			// request body it came from.
			rec.Action = policy.Action{Type: strings.Clone(rec.Action.Type)}
			rec.Session = strings.Clone(rec.Session)
		}
		g.mu.Unlock()
		return nil
	}
	var out Outcome
	if g.frozen.Load() != nil {
		// Decided before the freeze, not yet executed: held for good, not
		// executed later (freeze.go). The outcome says so.
		out = Outcome{Status: StatusError, Error: heldMessage}
	} else {
		xctx, xs := g.span(ctx, tracing.SpanExecute)
		out = g.execute(xctx, ex, rec)
		endExecute(xs, out)
	}
	or, err := g.recordOutcome(ctx, rec, out)
	if err != nil {
		return err
	}
	ocr := receiptOf(or)
	res.Outcome, res.OutcomeReceipt, res.Postconditions = &out, &ocr, rec.verdicts()
	return nil
}

// executor is the executor of an action type, nil for a decide-only type.
func (g *Gateway) executor(actionType string) Executor {
	if ex, ok := g.cfg.Executors[actionType]; ok {
		return ex
	}
	if g.cfg.ExecutorFor != nil {
		return g.cfg.ExecutorFor(actionType)
	}
	return nil
}

// decide evaluates and durably records the decision. The ledger holds the
// scopes the decision reads and writes (ledger.Begin) from its evaluation
// until its entry is queued in the log, not until it is durable (see
// queue): the next decision in the same scopes can be evaluated, with this
// one counted, while this one's entry is being written, and the two share
// a group commit. Decisions that share no scope do not wait on each other.
func (g *Gateway) decide(ctx context.Context, req *Request, executes bool) (*record, error) {
	id, err := newID()
	if err != nil {
		return nil, fmt.Errorf("decide: %w", err)
	}
	// With replicas: the scopes' locks across replicas, and the log read up
	// to them, until the decision is durable.
	keys, done, err := g.holdScopes(ctx, req)
	if err != nil {
		return nil, err
	}
	defer done()
	if f := g.frozen.Load(); g.cfg.Replicas != nil && f != nil {
		// Another replica's freeze, folded under the locks: refused as
		// Ready refuses on the replica that recorded it.
		return nil, fmt.Errorf("%w: frozen by %s since %s: %s", ErrFrozen, f.By, f.Since.Format(time.RFC3339), f.Reason)
	}
	g.stateMu.RLock()
	a := g.Active()
	sealed, err := seal(&req.Action, g.sensitive(a.Policy, req.Action.Type))
	if err != nil {
		g.stateMu.RUnlock()
		return nil, fmt.Errorf("decide: %w: %v", ErrUnavailable, err)
	}
	if sealed != nil {
		r := *req
		r.logged, req = sealed, &r
	}
	reads, _ := a.Policy.ReadsFor(req.Action.Type)
	if g.cfg.Replicas != nil && !covers(keys, scopeKeys(req.Agent, g.ledger.Scopes(req.Action.Type, reads))) {
		// A policy activated since the locks were taken reads more.
		g.stateMu.RUnlock()
		return nil, fmt.Errorf("decide: %w: the policy changed while deciding; try again", ErrUnavailable)
	}
	_, ds := g.span(ctx, tracing.SpanDecide)
	tx := g.ledger.Begin(req.Agent, req.Session, req.Action.Type, reads)
	rec, recorded, keep, err := g.decideLocked(ctx, tx, a, id, req, executes)
	tx.Unlock()
	g.stateMu.RUnlock()
	endDecide(ds, id, req, rec, err)
	if err == nil && recorded != nil {
		// Durable before the request is remembered, answered or executed.
		_, rs := g.span(ctx, tracing.SpanRecordDecision)
		if rec.Entry, err = recorded.Wait(context.WithoutCancel(ctx)); err != nil {
			err = fmt.Errorf("record decision: %w: %v", ErrUnavailable, err)
		}
		endRecord(rs, rec.Entry, err)
	}
	g.mu.Lock()
	g.forgetLocked(rec, err == nil && keep)
	g.mu.Unlock()
	if err != nil {
		// Not durable: nothing happens, and the agent is told so.
		return nil, err
	}
	return rec, nil
}

// decideLocked evaluates req under policy a with the state tx holds, queues
// its decision entry and folds it into the ledger; tx's scopes are held. It
// returns the record, how to wait until its entry is durable (nil when
// parking recorded it), and whether the gateway keeps the request.
func (g *Gateway) decideLocked(ctx context.Context, tx *ledger.Txn, a *Active, id string, req *Request, executes bool) (rec *record, recorded audit.Pending, keep bool, err error) {
	now := g.decisionTime()
	if err := g.attested(now); err != nil {
		// Checked with the decision's own time: Ready passed a moment
		// ago, and a decision later than the attestation allows is not
		// made (a verifier would refuse it), not even a denial.
		return nil, nil, false, err
	}
	var d *policy.Decision
	overBudget := g.ledger.OverBudget()
	if f := g.frozen.Load(); f != nil {
		// Decided after the freeze passed Ready: denied, never evaluated.
		_, hash := req.loggedAction()
		d = gatewayDeny(&policy.Decision{ActionHash: "sha256:" + hex.EncodeToString(hash[:]), Policy: a.Digest}, ledger.Frozen, FrozenMessage)
		overBudget = false
	} else if overBudget {
		g.overBudget.Add(1)
		_, hash := req.loggedAction()
		d = gatewayDeny(&policy.Decision{ActionHash: "sha256:" + hex.EncodeToString(hash[:]), Policy: a.Digest}, ledger.OverBudget,
			"the gateway's ledger is at its memory budget (limits.memory_budget): no new action until older ones leave the retention window")
	} else {
		d = a.Policy.Evaluate(&policy.Request{
			Action:      req.Action,
			Agent:       req.Agent,
			Session:     policy.Session{ID: req.Session, History: tx.History()},
			Instruction: req.Instruction,
			Reasoning:   req.Reasoning,
			Now:         now,
			State:       tx,
		})
		d.Policy = a.Digest
	}
	if req.logged != nil {
		d.ActionHash = req.logged.hashString()
	}
	g.decided.Add(1)
	rec = &record{ID: id, Agent: req.Agent.ID, Session: req.Session, Action: req.Action, Time: now, agent: req.Agent, logged: req.logged}
	if d.Decision == policy.RequireApproval {
		_, rs := g.span(ctx, tracing.SpanRecordDecision) // parking records it
		d, rec.Entry, err = g.parkDecision(id, req, d, now)
		endRecord(rs, rec.Entry, err)
		if err != nil {
			return nil, nil, false, err
		}
		if d.Decision == policy.RequireApproval { // parked, not refused parking
			g.startWait(ctx, id)
			rec.done = make(chan struct{})
			// For the approvers (Pending) and the re-evaluation at approval;
			// a request that is not parked does not keep them (they can be
			// as long as a request body).
			rec.instruction, rec.reasoning = req.Instruction, req.Reasoning
		}
	}
	if d.Decision != policy.RequireApproval {
		e := decisionEntry(id, req, d, now, g.decisionState(req))
		// Not cancellable: an entry abandoned by a departed client may
		// still reach the log, and then the next decision must count it,
		// as a replay of the log will.
		if recorded, err = g.queue(context.WithoutCancel(ctx), &e); err != nil {
			return nil, nil, false, fmt.Errorf("record decision: %w: %v", ErrUnavailable, err)
		}
	}
	rec.Decision = d
	if d.Decision == policy.Deny {
		// Nothing executes, parks or checks a denied request later: its
		// record does not keep the action (up to a request body, twice:
		// the decoded fields and the canonical JSON).
		rec.Action, rec.logged = policy.Action{}, nil
	}
	tx.Decided(id, &req.Action, ledger.Decision(d.Decision), d.Reason, now, executes)
	// A denial for the memory budget is not remembered as a request either:
	// an agent that keeps sending at the budget would grow what it guards.
	return rec, recorded, !overBudget, nil
}

// gatewayDeny turns d into the gateway's own denial with reason r, keeping
// the rules that fired.
func gatewayDeny(d *policy.Decision, r ledger.Reason, msg string) *policy.Decision {
	return &policy.Decision{Decision: policy.Deny, Reason: string(r), Rules: append([]policy.FiredRule{}, d.Rules...),
		Errors: append(append([]policy.RuleError{}, d.Errors...), policy.RuleError{Code: string(r), Message: msg}), ActionHash: d.ActionHash, Policy: d.Policy}
}

// stateJSON is the encoded ledger.DecisionState of a decision by agent,
// cached by roles and principal (they come from authentication and rarely
// change).
func (g *Gateway) stateJSON(agent policy.Agent) string {
	// Length-prefixed, so that no two agents' roles and principal share a
	// key (a role may contain any byte).
	key := strconv.Itoa(len(agent.Principal)) + ":" + agent.Principal
	for _, r := range agent.Roles {
		key += strconv.Itoa(len(r)) + ":" + r
	}
	if s, ok := g.states.Load(key); ok {
		return s.(string)
	}
	roles := agent.Roles
	if roles == nil {
		roles = []string{}
	}
	b, _ := json.Marshal(ledger.DecisionState{AgentRoles: roles, Principal: agent.Principal})
	if n := g.nstates.Add(1); n <= 1024 {
		g.states.Store(key, string(b))
	}
	return string(b)
}

// queue records e. With a QueueRecorder (the audit log) it only queues e and
// returns how to wait until e is durable. That is enough for the agent's
// next decision to count e in its history: the log records entries in the
// order they were queued, and if it never records e it has failed, and then
// it acknowledges no entry queued after e either, so no decision that saw e
// is ever acknowledged or acted on. With a plain Recorder it appends e,
// durable on return.
//
// Only a copy of e goes through the Recorder interface, so that e itself
// does not escape (see Gateway.alog).
func (g *Gateway) queue(ctx context.Context, e *audit.Entry) (audit.Pending, error) {
	if g.alog != nil {
		return g.alog.Enqueue(ctx, e)
	}
	c := *e
	if q, ok := g.cfg.Log.(QueueRecorder); ok {
		return q.Enqueue(ctx, &c)
	}
	r, err := g.cfg.Log.Append(ctx, &c)
	if err != nil {
		return nil, err
	}
	return appended(r), nil
}

// appended is an entry a plain Recorder has already made durable.
type appended audit.Receipt

func (a appended) Wait(context.Context) (audit.Receipt, error) { return audit.Receipt(a), nil }

// parkDecision parks a require_approval decision (logged by the approval
// manager) or, when it cannot be parked, turns it into a logged-later deny.
func (g *Gateway) parkDecision(id string, req *Request, d *policy.Decision, now time.Time) (*policy.Decision, audit.Receipt, error) {
	if g.approvals == nil {
		return gatewayDeny(d, ledger.NoApprovers, "the policy requires approval and no approvers are configured"), audit.Receipt{}, nil
	}
	e := decisionEntry(id, req, d, now, g.decisionState(req))
	p, err := g.park(id, req, d, &e)
	switch {
	case err == nil:
		if g.cfg.Notify != nil { // the parked decision is durable now
			g.cfg.Notify.Parked(Parked{ID: id, Agent: req.Agent.ID, ActionType: req.Action.Type,
				Requirements: p.Requirements, Expires: p.Expires})
		}
		return d, g.approvals.receipt(id), nil
	case errors.Is(err, approval.ErrQueueFull):
		return gatewayDeny(d, ledger.ApprovalQueueFull, err.Error()), audit.Receipt{}, nil
	case approval.Code(err) != "":
		return gatewayDeny(d, ledger.ApprovalImpossible, err.Error()), audit.Receipt{}, nil
	}
	return nil, audit.Receipt{}, fmt.Errorf("record decision: %w: %v", ErrUnavailable, err)
}

// decisionEntry is the decision entry of request id; state is its encoded
// ledger.DecisionState (Gateway.stateJSON).
func decisionEntry(id string, req *Request, d *policy.Decision, now time.Time, state string) audit.Entry {
	rules := make([]audit.Rule, len(d.Rules))
	for i, r := range d.Rules {
		rules[i] = audit.Rule{Name: r.Name, Outcome: string(r.Outcome), Message: r.Message, Shadow: r.Shadow}
	}
	action, hash := req.loggedAction()
	var salts []audit.Salt
	if req.logged != nil {
		salts = req.logged.Salts
	}
	return audit.Entry{
		State:         audit.Text(state),
		Kind:          audit.KindDecision,
		Time:          now,
		Agent:         req.Agent.ID,
		Session:       req.Session,
		RequestID:     id,
		Action:        audit.Text(string(action)),
		ActionSHA256:  hash,
		Instruction:   audit.Text(req.Instruction),
		Reasoning:     audit.Text(req.Reasoning),
		Rules:         rules,
		Decision:      string(d.Decision),
		BundleDigest:  d.Policy,
		EngineVersion: EngineVersion,
		Message:       d.Reason,
		Salts:         salts,
	}
}

// forgetLocked remembers rec when keep is set, and forgets the requests
// that left the retention window, so that memory does not grow with the
// log: the log keeps them. A request still parked for approval is kept
// until it is final. An allowed decide-only request whose agent never
// reported its outcome is forgotten with the rest: a report after the
// retention window finds no request. g.mu is held.
func (g *Gateway) forgetLocked(rec *record, keep bool) {
	if keep {
		g.reqs.put(rec)
	}
	g.reqs.expire(g.cfg.Now().Add(-g.cfg.Retention))
}

// parked reports whether r waits for approval.
func (r *record) parked() bool {
	if r.done == nil {
		return false
	}
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

func (g *Gateway) execute(ctx context.Context, ex Executor, rec *record) Outcome {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.ExecTimeout)
	defer cancel()
	return ex.Execute(ctx, Execution{RequestID: rec.ID, Action: rec.Action})
}

// recordOutcome appends the outcome entry (durable) and updates the state.
func (g *Gateway) recordOutcome(ctx context.Context, rec *record, out Outcome) (audit.Receipt, error) {
	var verdicts []policy.Verdict
	if out.Status == StatusOK {
		verdicts = g.Active().Policy.CheckResult(&policy.Request{Action: rec.Action, Agent: rec.agent, Session: policy.Session{ID: rec.Session}, Now: rec.Time},
			postconditionResult(out))
	}
	result, _ := json.Marshal(out)
	e := &audit.Entry{
		Kind:      audit.KindOutcome,
		Time:      g.cfg.Now().UTC(),
		Agent:     rec.Agent,
		Session:   rec.Session,
		RequestID: rec.ID,
		Closes:    rec.Entry.Index,
		Result:    audit.Text(string(result)),
		Status:    string(out.Status),
	}
	violated := false
	for _, v := range verdicts {
		e.Postconditions = append(e.Postconditions, audit.Verdict{Rule: v.Rule, Holds: v.Holds, Message: v.Message, Shadow: v.Shadow, Error: v.Error})
		violated = violated || !v.Holds && !v.Shadow
	}
	// What the ledger folds from this outcome, recorded with it.
	c := ledger.ConsequenceOf(out.Status, out.Reported, violated)
	e.State = audit.Text(c.String())
	// The outcome must be recorded even if the client went away.
	_, rs := g.span(ctx, tracing.SpanRecordOutcome)
	r, err := g.cfg.Log.Append(context.WithoutCancel(ctx), e)
	endRecord(rs, r, err)
	if err != nil {
		return audit.Receipt{}, fmt.Errorf("record outcome: %w: %w", ErrUnavailable, err)
	}
	g.stateMu.RLock()
	g.ledger.Outcome(rec.Agent, rec.ID, out.Status, c)
	g.stateMu.RUnlock()
	g.mu.Lock()
	rec.Outcome, rec.OutEntry, rec.awaiting = &out, &r, false
	if len(verdicts) > 0 {
		rec.postconditions = &verdicts
	}
	g.mu.Unlock()
	return r, nil
}

// Get returns what the gateway knows of a request of agent: a final one is
// read back from the log.
func (g *Gateway) Get(agent, id string) (*Result, error) {
	if err := g.Follow(context.Background()); err != nil {
		return nil, err
	}
	return g.get(agent, id)
}

// get is Get without reading the shared log first.
func (g *Gateway) get(agent, id string) (*Result, error) {
	g.mu.Lock()
	rec, loc, ok := g.reqs.get(id)
	if !ok {
		g.mu.Unlock()
		return nil, ErrNotFound
	}
	var res *Result
	if rec == nil {
		g.mu.Unlock()
		var err error
		if res, err = readBack(g.reader, agent, loc); err != nil {
			return nil, err
		}
	} else {
		defer g.mu.Unlock()
		if rec.Agent != agent {
			return nil, ErrForbidden
		}
		res = &Result{RequestID: rec.ID, Decision: rec.Decision, Receipt: receiptOf(rec.Entry), Outcome: rec.Outcome, Postconditions: rec.verdicts()}
		if rec.OutEntry != nil {
			r := receiptOf(*rec.OutEntry)
			res.OutcomeReceipt = &r
		}
	}
	if g.approvals != nil { // a request that was parked
		if ar, err := g.approvals.m.Get(id); err == nil {
			res.Approval = &ar
			res.Decision = endedDecision(res.Decision, ar.State)
		}
	}
	return res, nil
}

// endedDecision is the final decision of a parked request whose approvers
// rejected it or whose time ran out: deny, with the reason
// approval_rejected or approval_expired, and the rules (and approval
// terms) that parked it. Any other decision is d. No DECISION entry
// records it: the APPROVAL entry of the rejection or expiry does.
func endedDecision(d *policy.Decision, st approval.State) *policy.Decision {
	if d == nil || d.Decision != policy.RequireApproval {
		return d
	}
	var reason ledger.Reason
	switch st {
	case approval.Rejected:
		reason = ledger.ApprovalRejected
	case approval.Expired:
		reason = ledger.ApprovalExpired
	default:
		return d
	}
	ended := *d
	ended.Decision, ended.Reason = policy.Deny, string(reason)
	return &ended
}

// ReportOutcome records the outcome an agent reports for an allowed action
// of a decide-only type. It is accepted once.
func (g *Gateway) ReportOutcome(ctx context.Context, agent, id string, out Outcome) (*Result, error) {
	// With replicas: the request's lock, and the log read up to it, so
	// that the report is accepted once in all the replicas.
	h, err := g.holdRequests(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("report outcome: %w", err)
	}
	defer release(h)
	g.mu.Lock()
	rec, _, ok := g.reqs.get(id)
	switch {
	case !ok:
		g.mu.Unlock()
		return nil, ErrNotFound
	case rec == nil:
		g.mu.Unlock()
		if _, err := g.Get(agent, id); err != nil {
			return nil, err // another agent's
		}
		return nil, ErrConflict // final
	case rec.Agent != agent:
		g.mu.Unlock()
		return nil, ErrForbidden
	case !rec.awaiting:
		g.mu.Unlock()
		return nil, ErrConflict
	}
	rec.awaiting = false // claimed: a concurrent report gets ErrConflict
	g.mu.Unlock()
	if rec.Action.Fields == nil {
		act, err := g.readAction(rec.Entry.Index)
		if err != nil {
			g.mu.Lock()
			rec.awaiting = true // not recorded: the agent may report again
			g.mu.Unlock()
			return nil, fmt.Errorf("report outcome: %w: %v", ErrUnavailable, err)
		}
		rec.Action = act
	}
	out.Reported = true
	_, err = g.recordOutcome(ctx, rec, out)
	g.settle(rec)
	if err != nil {
		return nil, err
	}
	return g.Get(agent, id)
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newID returns a random request id: "r" and 26 base32 characters (128 bits).
func newID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	var id [27]byte
	id[0] = 'r'
	idEncoding.Encode(id[1:], b[:]) // lower case already
	return string(id[:]), nil
}

// Refuse records a request the gateway refused before it could be decided
// (malformed, oversized, of an unknown shape) from an authenticated agent:
// the log keeps every authenticated request. raw is what the agent sent,
// exactly as received, as far as it was read: the entry records its SHA-256
// and size (audit.Entry.Raw; the bytes go to the blob store within its cap),
// and its text too when it is valid UTF-8. The decision is deny with code
// as its reason.
func (g *Gateway) Refuse(ctx context.Context, agent policy.Agent, code, msg string, raw []byte) (*Result, error) {
	id, err := newID()
	if err != nil {
		return nil, fmt.Errorf("refuse: %w", err)
	}
	now := g.cfg.Now().UTC()
	d := &policy.Decision{Decision: policy.Deny, Reason: code, Rules: []policy.FiredRule{},
		Errors: []policy.RuleError{{Code: code, Message: msg}}, Policy: g.Active().Digest}
	e := &audit.Entry{
		Kind: audit.KindDecision, Time: now, Agent: agent.ID, RequestID: id,
		Decision: string(d.Decision), BundleDigest: d.Policy, EngineVersion: EngineVersion,
		Message: code + ": " + msg,
	}
	if len(raw) > 0 {
		e.Raw = audit.Field{Text: string(raw)}
	}
	if len(raw) > 0 && utf8.Valid(raw) {
		e.Action = audit.Text(string(raw))
	}
	_, rs := g.span(ctx, tracing.SpanRecordDecision)
	r, err := g.cfg.Log.Append(ctx, e)
	endRecord(rs, r, err)
	if err != nil {
		return nil, fmt.Errorf("record rejection: %w: %v", ErrUnavailable, err)
	}
	g.annotate(ctx, id, &Request{Agent: agent}, d)
	return &Result{RequestID: id, Decision: d, Receipt: receiptOf(r)}, nil
}

// Active is the policy in force and what decisions call it.
type Active struct {
	Policy  *policy.Policy
	Digest  string   // the bundle digest; the policy's own digest in development mode
	Version uint64   // the bundle's version (0 in development mode)
	Signers []string // the keys that signed the bundle
	Dev     bool     // loaded from a directory, not from a signed bundle
	Source  string   // where it came from, for the activation entry
	// None: no policy was ever activated. Policy denies everything, Digest
	// is empty, and Submit returns ErrNoPolicy.
	None bool
}

// LedgerStats is what the ledger keeps and how often it was full.
type LedgerStats struct {
	Bytes      int64 // the ledger's estimate of the memory it keeps
	Budget     int64 // its budget (limits.memory_budget)
	OverBudget int64 // decisions denied memory_budget since the start
}

// Ledger reports the ledger's size against its budget.
func (g *Gateway) Ledger() LedgerStats {
	g.stateMu.RLock()
	defer g.stateMu.RUnlock()
	return LedgerStats{Bytes: g.ledger.Bytes(), Budget: g.ledger.Budget(), OverBudget: g.overBudget.Load()}
}

// Active returns the policy in force.
func (g *Gateway) Active() *Active { return g.active.Load() }

// Activate makes a the policy in force, atomically, once its activation is
// durably logged; decisions in flight finish under the policy they started
// with. It judges nothing: whether a bundle may be activated (quorum,
// tests, anti-rollback) is internal/lifecycle's decision, made before.
func (g *Gateway) Activate(ctx context.Context, a *Active) error {
	if err := g.ledger.CheckRetention(a.Policy); err != nil {
		return fmt.Errorf("activate %s: %w", a.Digest, err)
	}
	msg := fmt.Sprintf("activated bundle version %d from %s", a.Version, a.Source)
	if a.Dev {
		msg = fmt.Sprintf("activated in DEVELOPMENT MODE: policy from the directory %s, not a signed bundle", a.Source)
	}
	// No decision runs while the ledger learns the policy's indexes: the
	// activation entry, once durable, follows every decision queued before,
	// so a fold of the log sees them all.
	g.stateMu.Lock()
	defer g.stateMu.Unlock()
	_, err := g.cfg.Log.Append(ctx, &audit.Entry{
		Kind: audit.KindPolicyActivation, Time: g.cfg.Now().UTC(),
		BundleDigest: a.Digest, Signers: a.Signers, EngineVersion: EngineVersion, Message: msg,
	})
	if err != nil {
		return fmt.Errorf("record activation: %w: %v", ErrUnavailable, err)
	}
	if g.cfg.Attest != nil {
		// An error is the attestor's to report and retry: until it
		// attests this bundle, Attested refuses every decision, so the
		// policy can be in force already (a retry needs no reactivation).
		_ = g.cfg.Attest.Activated(ctx, a.Digest)
	}
	if err := g.install(a.Policy); err != nil {
		// Logged as activated and not in force: nothing is decided under
		// a policy whose limits the ledger cannot answer.
		g.active.Store(&Active{Policy: g.none, None: true})
		return fmt.Errorf("activate %s: %w", a.Digest, err)
	}
	g.active.Store(a)
	return nil
}

// BetweenActivations runs fn while no activation is in progress: an
// attestation recorded by fn cannot fall between an activation entry and
// the attestation entry naming its bundle (which a verifier would refuse
// as attesting a bundle the log no longer has in force). Decisions go on
// meanwhile.
func (g *Gateway) BetweenActivations(fn func() error) error {
	g.stateMu.RLock()
	defer g.stateMu.RUnlock()
	return fn()
}

// install makes the ledger keep what p reads. What the ledger does not keep
// yet needs the actions already in the log: a new ledger with every policy
// installed so far and p is folded from the log (the same fold as Rebuild)
// and replaces the current one only when that worked, so a failed install
// leaves no empty index behind. g.stateMu is held for writing.
func (g *Gateway) install(p *policy.Policy) error {
	if g.ledger.Covers(p) {
		g.ledger.Install(p) // the same indexes, known by p's pointers too
		g.installed = append(g.installed, p)
		return nil
	}
	lr, ok := g.cfg.Log.(LogReader)
	var refolded int64 // with replicas: the entries the new ledger folds
	if g.follow != nil {
		// Every decision of this replica is below the log's size now: no
		// decision is between its append and its fold (stateMu).
		refolded = g.reader.Size()
		lr, ok = sized{g.reader, refolded}, true
	}
	if !ok {
		if g.decided.Load() > 0 || g.folded {
			return fmt.Errorf("the policy reads state the ledger does not keep, and the log cannot be read back to fill it")
		}
		g.ledger.Install(p) // nothing recorded yet: empty is right
		g.installed = append(g.installed, p)
		return nil
	}
	l := ledger.New(ledger.Options{Retention: g.cfg.Retention, Budget: g.cfg.Budget})
	for _, q := range append(g.installed, p) {
		l.Install(q)
	}
	if err := walkLog(lr, 0, false, func(it logItem) error {
		l.Apply(it.e, it.d)
		return nil
	}); err != nil {
		return fmt.Errorf("fold the log for the policy's new indexes: %w", err)
	}
	l.Sweep(g.cfg.Now())
	g.ledger = l
	g.installed = append(g.installed, p)
	if g.follow != nil {
		g.follow.refolded.Store(refolded)
	}
	return nil
}

// LastBundle returns the digest of the last signed bundle whose activation
// Rebuild found in the log (development-mode activations are not bundles):
// the floor of anti-rollback across restarts.
func (g *Gateway) LastBundle() (digest string, ok bool) {
	return g.lastBundle, g.lastBundle != ""
}
