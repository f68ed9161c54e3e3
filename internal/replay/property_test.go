package replay_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/ledger"
	"github.com/rulelock/rulelock/internal/replay"
	"github.com/rulelock/rulelock/internal/strictjson"
	"github.com/rulelock/rulelock/policy"
)

// Two policies that read different state, so that activating one after the
// other makes the gateway fold the log again: A limits over the global,
// agent and principal scopes; B over the session and its raw history.
const propA = `policy "A" {
  default: deny
}
rule "Allow" {
  precondition: action.type in ["transfer", "report", "trade"]
  allow
}
rule "PayeeCap" {
  precondition: action.type == "transfer"
  condition: global.total("transfer", "amount", {"to": action.to}, duration("2h")) + action.amount <= 100
  deny: "payee cap"
}
rule "Reports" {
  precondition: action.type == "report"
  condition: agent.count("report", {}, duration("1h")) < 2
  deny: "two reports an hour"
}
rule "TwoApprovers" {
  precondition: action.type == "trade"
  condition: action.amount <= 100
  require_approval {
    approvers: 2
    groups: ["treasury"]
  }
}
rule "TeamTrades" {
  precondition: action.type == "trade"
  condition: principal.total("trade", "amount", {}, duration("6h")) + action.amount <= 500
  deny: "team trade cap"
}
rule "BigAfterReport" {
  precondition: action.type == "transfer" && action.amount > 40
  condition: session.succeeded("report", {"n": 1})
  deny: "a big transfer needs a successful report first"
}
`

const propB = propA + `
rule "SessionPayees" {
  precondition: action.type == "transfer"
  condition: session.count("transfer", {"to": action.to}, duration("3h")) < 3
  deny: "three a session"
}
rule "Quiet" {
  condition: session.history.filter(h, h.decision == "deny").size() < 4
  deny: "too many denials in this session"
}
`

// memLog is an in-memory log (gateway.Recorder and gateway.LogReader): the
// property is about the fold, not about durability.
type memLog struct{ raws [][]byte }

func (m *memLog) Append(_ context.Context, e *audit.Entry) (audit.Receipt, error) {
	c := *e
	if c.Action.Text != "" && c.ActionSHA256.IsZero() {
		c.ActionSHA256 = audit.Digest(sha256Sum(c.Action.Text))
	}
	raw, err := c.Encode()
	if err != nil {
		return audit.Receipt{}, err
	}
	m.raws = append(m.raws, raw)
	return audit.Receipt{Index: int64(len(m.raws) - 1), LeafHash: tlog.RecordHash(raw)}, nil
}

func (m *memLog) Size() int64 { return int64(len(m.raws)) }

func (m *memLog) ReadEntries(lo, hi int64) ([][]byte, error) { return m.raws[lo:hi], nil }

func (m *memLog) Blob(audit.Digest) ([]byte, error) { return nil, errors.New("no blobs") }

// TestLiveRebuildReplayAgree: over random runs of a gateway — decisions by
// agents of one principal and one alone in two sessions, executions that
// succeed, fail or end unknown, decide-only actions with reported outcomes,
// parked requests and approvals, refusals, activations of policies that
// read other state, restarts, and time passing beyond the windows — every
// recorded decision is what the replay decides with the state it folds
// (verify --replay finds nothing), and a gateway rebuilt from the log then
// decides every further request as the live one does.
func TestLiveRebuildReplayAgree(t *testing.T) {
	data := t.TempDir()
	pa := archived(t, data, propA)
	pb := archived(t, data, propB)
	signers, reg := approvers(t)
	cases := 10000
	if testing.Short() {
		cases = 500
	}
	for c := range cases {
		if err := propRun(uint64(c), pa, pb, signers, reg, filepath.Join(data, "bundles")); err != nil {
			t.Fatalf("case %d: %v", c, err)
		}
	}
}

type waiting struct{ agent, id string }

type propEnv struct {
	rng     *rand.Rand
	now     time.Time
	log     *memLog
	gw      *gateway.Gateway
	pa, pb  *policy.Policy
	reg     *approval.Registry
	signers map[string]note.Signer
	parked  []*gateway.Result
	waiting []waiting // decide-only requests without a reported outcome
	agents  []policy.Agent
}

const propRetention = 12 * time.Hour

func (e *propEnv) newGateway(p *policy.Policy) (*gateway.Gateway, error) {
	ex := gateway.ExecutorFunc(func(_ context.Context, x gateway.Execution) gateway.Outcome {
		n, _ := policy.Number(x.Action.Fields["amount"])
		return gateway.Outcome{Status: []ledger.Status{gateway.StatusOK, gateway.StatusError, gateway.StatusUnknown}[int(n)%3]}
	})
	return gateway.New(gateway.Config{Policy: p, Log: e.log, Approvers: e.reg, Retention: propRetention,
		Now: func() time.Time { return e.now }, Executors: map[string]gateway.Executor{"transfer": ex, "trade": ex}})
}

func propRun(seed uint64, pa, pb *policy.Policy, signers map[string]note.Signer, reg *approval.Registry, bundles string) error {
	ctx := context.Background()
	e := &propEnv{rng: rand.New(rand.NewPCG(seed, 11)), now: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), log: &memLog{},
		pa: pa, pb: pb, reg: reg, signers: signers,
		agents: []policy.Agent{{ID: "a1", Principal: "team"}, {ID: "a2", Principal: "team"}, {ID: "a3"}}}
	var err error
	active := pa
	if e.rng.IntN(2) == 0 {
		active = pb
	}
	if e.gw, err = e.newGateway(nil); err != nil {
		return err
	}
	if err := e.gw.Activate(ctx, &gateway.Active{Policy: active, Digest: active.Digest(), Dev: true, Source: "prop"}); err != nil {
		return err
	}
	steps := 6 + e.rng.IntN(14)
	for i := range steps {
		e.now = e.now.Add(time.Duration(e.rng.IntN(90)) * time.Minute)
		switch k := e.rng.IntN(20); {
		case k < 9:
			req := e.request()
			res, err := e.gw.Submit(ctx, req, e.rng.IntN(4) != 0)
			if err != nil {
				return fmt.Errorf("step %d: submit: %w", i, err)
			}
			if req.Action.Type == "report" && res.Decision.Decision == policy.Allow {
				e.waiting = append(e.waiting, waiting{req.Agent.ID, res.RequestID})
			}
		case k < 11:
			res, err := e.gw.Submit(ctx, e.trade(), true)
			if err != nil {
				return fmt.Errorf("step %d: trade: %w", i, err)
			}
			if res.Approval != nil {
				e.parked = append(e.parked, res)
			}
		case k < 13 && len(e.parked) > 0:
			j := e.rng.IntN(len(e.parked))
			who := []string{"alice", "bob"}[e.rng.IntN(2)]
			signed, err := approval.Sign(e.parked[j].Approval.Statement(approval.Approve, ""), e.signers[who])
			if err != nil {
				return err
			}
			e.gw.Approve(ctx, "caller", e.parked[j].RequestID, signed) // refused ones (twice by one, expired) are fine
		case k < 15 && len(e.waiting) > 0:
			j := e.rng.IntN(len(e.waiting))
			st := []ledger.Status{gateway.StatusOK, gateway.StatusError}[e.rng.IntN(2)]
			// Refused once the request is closed (a restart records it unknown).
			e.gw.ReportOutcome(ctx, e.waiting[j].agent, e.waiting[j].id, gateway.Outcome{Status: st})
			e.waiting = append(e.waiting[:j], e.waiting[j+1:]...)
		case k < 16:
			a := e.agents[e.rng.IntN(len(e.agents))]
			if _, err := e.gw.Refuse(ctx, a, "bad_request", "unknown field", []byte(`{"type": "report", "n": 1}`)); err != nil {
				return err
			}
		case k < 18:
			active = pa
			if active == e.gw.Active().Policy {
				active = pb
			}
			if err := e.gw.Activate(ctx, &gateway.Active{Policy: active, Digest: active.Digest(), Dev: true, Source: "prop"}); err != nil {
				return fmt.Errorf("step %d: activate: %w", i, err)
			}
		default:
			if e.gw, err = e.restart(ctx, active); err != nil {
				return fmt.Errorf("step %d: restart: %w", i, err)
			}
		}
	}
	sum, err := replay.Verify(e.log, replay.Options{Bundles: bundles, Policies: []*policy.Policy{e.pa, e.pb}, Approvers: e.reg, Retention: propRetention, Workers: 1, AllowDevelopment: true})
	if err != nil {
		return err
	}
	if len(sum.Findings) > 0 {
		return fmt.Errorf("verify --replay: %+v", sum.Findings)
	}
	rebuilt, err := e.restart(ctx, active)
	if err != nil {
		return err
	}
	for i := range 4 {
		req := e.request()
		live, err1 := e.gw.Submit(ctx, req, false)
		again, err2 := rebuilt.Submit(ctx, req, false)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("probe %d: %v %v", i, err1, err2)
		}
		if live.Decision.Decision != again.Decision.Decision || fmt.Sprint(names(live.Decision.Rules)) != fmt.Sprint(names(again.Decision.Rules)) {
			return fmt.Errorf("probe %d %s: live %s %v, rebuilt %s %v", i, req.Action.JSON, live.Decision.Decision, names(live.Decision.Rules),
				again.Decision.Decision, names(again.Decision.Rules))
		}
	}
	return nil
}

// restart is a new gateway over the same log, rebuilt from it, with the
// policy in force reactivated as serve does.
func (e *propEnv) restart(ctx context.Context, active *policy.Policy) (*gateway.Gateway, error) {
	gw, err := e.newGateway(active)
	if err != nil {
		return nil, err
	}
	if _, err := gw.Rebuild(ctx, e.log); err != nil {
		return nil, err
	}
	return gw, gw.Activate(ctx, &gateway.Active{Policy: active, Digest: active.Digest(), Dev: true, Source: "prop"})
}

func (e *propEnv) request() *gateway.Request {
	a := e.agents[e.rng.IntN(len(e.agents))]
	s := fmt.Sprint("s", e.rng.IntN(2))
	js := fmt.Sprintf(`{"type": "transfer", "amount": %d, "to": "p%d"}`, 1+e.rng.IntN(60), e.rng.IntN(3))
	if e.rng.IntN(3) == 0 {
		js = fmt.Sprintf(`{"type": "report", "n": %d}`, e.rng.IntN(2))
	}
	return &gateway.Request{Agent: a, Session: s, Action: mustActionErr(js)}
}

func (e *propEnv) trade() *gateway.Request {
	a := e.agents[e.rng.IntN(len(e.agents))]
	return &gateway.Request{Agent: a, Session: "s0", Action: mustActionErr(fmt.Sprintf(`{"type": "trade", "amount": %d}`, 50+e.rng.IntN(200)))}
}

func names(rs []policy.FiredRule) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Name)
	}
	return out
}

func sha256Sum(s string) [32]byte { return sha256.Sum256([]byte(s)) }

func mustActionErr(js string) policy.Action {
	v, err := strictjson.Decode([]byte(js), strictjson.Limits{})
	if err != nil {
		panic(err)
	}
	a, err := policy.NewAction(v)
	if err != nil {
		panic(err)
	}
	return a
}
