package bench

// The log the replay benchmarks run on, written by the real gateway.
//
// replayData drives gateway.Gateway in-process, exactly as `rulelock serve`
// does minus HTTP: the signed payments bundle (examples/payments, version 1,
// signed by two of three keys, archived under data/bundles/<digest> as the
// gateway archives it, activated with a policy_activation entry), an
// audit.Log with real fdatasync group commit, approvers alice and bob, and
// executors that answer ok (verify_counterparty fails one time in ten).
// replayAgents agents submit concurrently, each its own sequence of
// requests, so that group commit batches their appends. A simulated clock
// advances replayStep per request, so the log spans weeks: every agent
// does about replayPerDay actions a day, its 7-day history holds a few
// hundred entries, and the payee rule's 24-hour window denies some
// transfers.
//
// The traffic, per agent (random, seeded by the agent's number):
//
//	58%   transfer of $100-$10,000 to one of 4 payees: allow, or deny by
//	      PayeeDailyLimit ($50,000 per payee per 24h) — outcome ok
//	1%    transfer of $10,001-$30,000: require_approval, approved by alice,
//	      re-evaluated: approved, executed, outcome (unless the approval came
//	      after the 4h expiry on the simulated clock: then it stays parked)
//	15%   verify_counterparty: allow, outcome ok or error
//	10%   update_counterparty_bank_details: allow after a successful
//	      verification of that counterparty (history with outcomes), else deny
//	12%   trade of $1,000-$400,000: allow, outcome
//	0.2%  trade over $500,000: two treasury approvals, approved, executed
//	2%    a look-alike action type ("Transfer"): deny
//	~2%   a malformed body, refused before decoding (gateway.Refuse)
//
// One agent in ten lacks the payments role: all its actions are denied by
// the PaymentsAgentsOnly invariant. Decision entries carry an instruction
// and a few hundred bytes of reasoning, like an LLM agent's.
//
// Writing a million entries takes a few minutes, so the data directory is
// kept in the temporary directory, keyed by replayGenVersion and the size;
// change the version when the generator or the entry format changes.

import (
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/bundle"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/strictjson"
	"github.com/rulelock/rulelock/policy"
)

const (
	// replayGenVersion names the generator: bump it when the traffic or the
	// log format changes, so that a cached log is not reused.
	replayGenVersion = "v2"
	replayAgents     = 256
	replayPerDay     = 40 // actions per agent per simulated day
)

// replayStart is the simulated time of the first request.
var replayStart = time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)

// replayData returns a gateway data directory (log/, bundles/, log.pub,
// approvers/) with a log of at least entries entries, generating it on
// first use.
func replayData(tb testing.TB, entries int) string {
	tb.Helper()
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("rulelock-bench-replay-%s-%d", replayGenVersion, entries))
	if _, err := os.Stat(filepath.Join(dir, "complete")); err == nil {
		return dir
	}
	os.RemoveAll(dir)
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	start := time.Now()
	if err := generateReplayData(tmp, entries); err != nil {
		tb.Fatalf("generate the replay log: %v", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "complete"), nil, 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("generated %d entries in %s in %v", entries, dir, time.Since(start).Round(time.Second))
	return dir
}

// replayApprovers are the approvers of the generated log, with the groups
// the payments policy asks for.
var replayApprovers = []string{"alice", "bob"}

func generateReplayData(data string, entries int) error {
	ctx := context.Background()
	if err := os.MkdirAll(data, 0o700); err != nil {
		return err
	}
	active, err := replayBundle(data)
	if err != nil {
		return err
	}
	reg, signers, err := replayApproverKeys(data)
	if err != nil {
		return err
	}
	l, err := audit.Open(filepath.Join(data, "log"), audit.Options{})
	if err != nil {
		return err
	}
	defer l.Close()
	var requests atomic.Int64
	step := 24 * time.Hour / time.Duration(replayAgents*replayPerDay)
	now := func() time.Time { return replayStart.Add(time.Duration(requests.Load()) * step) }
	ok := gateway.ExecutorFunc(func(ctx context.Context, x gateway.Execution) gateway.Outcome {
		return gateway.Outcome{Status: gateway.StatusOK, HTTPStatus: 200, Body: []byte(`{"id":"` + x.RequestID + `","status":"done"}`)}
	})
	flaky := gateway.ExecutorFunc(func(ctx context.Context, x gateway.Execution) gateway.Outcome {
		if x.RequestID[1] < 'd' { // about one in ten of the random ids
			return gateway.Outcome{Status: gateway.StatusError, HTTPStatus: 503, Error: "upstream: 503 Service Unavailable"}
		}
		return ok(ctx, x)
	})
	gw, err := gateway.New(gateway.Config{Policy: active.Policy, Log: l, Approvers: reg, Now: now,
		Executors: map[string]gateway.Executor{"transfer": ok, "trade": ok, "update_counterparty_bank_details": ok, "verify_counterparty": flaky}})
	if err != nil {
		return err
	}
	if err := gw.Activate(ctx, active); err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, replayAgents)
	for a := range replayAgents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ag := &replayAgent{gw: gw, signers: signers, rng: mrand.New(mrand.NewPCG(uint64(a), 42)), requests: &requests, now: now,
				id: policy.Agent{ID: fmt.Sprintf("agent-%03d", a), Roles: []string{"payments"}}}
			if a%10 == 9 {
				ag.id.Roles = []string{"support"}
			}
			for l.Size() < int64(entries) {
				if err := ag.next(ctx); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	return replayCheckpoint(data, l)
}

// replayBundle builds the payments bundle, signs it with two of three
// keys, verifies it against the trust file and archives it under
// data/bundles/<digest>, as `rulelock serve --bundle` does.
func replayBundle(data string) (*gateway.Active, error) {
	var files []policy.Source
	for _, name := range []string{"payments.rules", "payments_test.yaml"} {
		b, err := os.ReadFile(filepath.Join("..", "examples", "payments", name))
		if err != nil {
			return nil, err
		}
		files = append(files, policy.Source{Name: name, Data: b})
	}
	m, err := bundle.NewManifest("payments", 1, replayStart.Add(-time.Hour), time.Time{}, files)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(data, "bundles", strings.TrimPrefix(m.Digest(), "sha256:"))
	if err := os.MkdirAll(filepath.Join(dir, bundle.SignaturesDir), 0o755); err != nil {
		return nil, err
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.Name), f.Data, 0o644); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, bundle.ManifestFile), m.Marshal(), 0o644); err != nil {
		return nil, err
	}
	b, err := bundle.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var vkeys []string
	for i, name := range []string{"release-alice", "release-bob", "release-carol"} {
		skey, vkey, err := note.GenerateKey(rand.Reader, name)
		if err != nil {
			return nil, err
		}
		vkeys = append(vkeys, vkey)
		if i == 1 {
			continue // two of three sign
		}
		s, _ := note.NewSigner(skey)
		path, sig, err := bundle.Sign(b, s)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, path), sig, 0o644); err != nil {
			return nil, err
		}
	}
	trust, err := bundle.NewTrust(2, vkeys...)
	if err != nil {
		return nil, err
	}
	v, err := bundle.VerifyDir(dir, trust, replayStart)
	if err != nil {
		return nil, err
	}
	p, err := policy.FromSources(v.Sources, policy.Options{})
	if err != nil {
		return nil, err
	}
	return &gateway.Active{Policy: p, Digest: v.Digest, Version: v.Manifest.Version, Signers: v.Signers, Source: dir}, nil
}

// replayApproverKeys makes the approvers' keys; their verifier keys go to
// data/approvers/<id>.pub, where `rulelock verify --replay` finds a
// development gateway's approvers (groups payments-approvers and treasury).
func replayApproverKeys(data string) (*approval.Registry, map[string]note.Signer, error) {
	var as []approval.Approver
	signers := map[string]note.Signer{}
	if err := os.MkdirAll(filepath.Join(data, "approvers"), 0o700); err != nil {
		return nil, nil, err
	}
	for _, id := range replayApprovers {
		skey, vkey, err := note.GenerateKey(rand.Reader, id)
		if err != nil {
			return nil, nil, err
		}
		signers[id], _ = note.NewSigner(skey)
		as = append(as, approval.Approver{ID: id, Groups: replayGroups, Key: vkey})
		if err := os.WriteFile(filepath.Join(data, "approvers", id+".pub"), []byte(vkey+"\n"), 0o644); err != nil {
			return nil, nil, err
		}
	}
	reg, err := approval.NewRegistry(as)
	return reg, signers, err
}

var replayGroups = []string{"payments-approvers", "treasury"}

// replayRegistry reads the approvers of a generated log back.
func replayRegistry(tb testing.TB, data string) *approval.Registry {
	tb.Helper()
	var as []approval.Approver
	for _, id := range replayApprovers {
		b, err := os.ReadFile(filepath.Join(data, "approvers", id+".pub"))
		if err != nil {
			tb.Fatal(err)
		}
		as = append(as, approval.Approver{ID: id, Groups: replayGroups, Key: strings.TrimSpace(string(b))})
	}
	reg, err := approval.NewRegistry(as)
	if err != nil {
		tb.Fatal(err)
	}
	return reg
}

// replayCheckpoint signs a checkpoint over the whole log and writes the
// verifier key to data/log.pub, so that `rulelock verify` can run on it.
func replayCheckpoint(data string, l *audit.Log) error {
	skey, vkey, err := note.GenerateKey(rand.Reader, "bench.rulelock/replay")
	if err != nil {
		return err
	}
	s, _ := note.NewSigner(skey)
	cp, err := audit.NewCheckpointer(l, s, audit.CheckpointOptions{})
	if err != nil {
		return err
	}
	if _, err := cp.Checkpoint(); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(data, "log.pub"), []byte(vkey+"\n"), 0o644)
}

// replayAgent is one simulated agent.
type replayAgent struct {
	gw       *gateway.Gateway
	signers  map[string]note.Signer
	rng      *mrand.Rand
	requests *atomic.Int64
	now      func() time.Time
	id       policy.Agent
	n        int
}

var (
	replayPayees         = []string{"acct-1001", "acct-1002", "acct-1003", "acct-1004"}
	replayCounterparties = []string{"acme", "globex", "initech", "umbrella", "hooli"}
	replayReasoning      = strings.Repeat("The invoice matches the purchase order and the amount is within the approved budget for this quarter. ", 3)
)

// next submits the agent's next request.
func (a *replayAgent) next(ctx context.Context) error {
	a.requests.Add(1)
	a.n++
	day := a.now().Sub(replayStart) / (24 * time.Hour)
	req := &gateway.Request{Agent: a.id, Session: fmt.Sprintf("%s-day%d", a.id.ID, day),
		Instruction: fmt.Sprintf("Process item %d of today's queue", a.n), Reasoning: replayReasoning}
	r := a.rng.Float64()
	var action string
	switch {
	case r < 0.58:
		action = fmt.Sprintf(`{"type":"transfer","amount":%d,"to":%q,"memo":"invoice %d"}`, 100+a.rng.IntN(9901), replayPayees[a.rng.IntN(4)], a.n)
	case r < 0.59:
		action = fmt.Sprintf(`{"type":"transfer","amount":%d,"to":%q}`, 10001+a.rng.IntN(20000), replayPayees[a.rng.IntN(4)])
	case r < 0.74:
		action = fmt.Sprintf(`{"type":"verify_counterparty","counterparty":%q}`, replayCounterparties[a.rng.IntN(5)])
	case r < 0.84:
		action = fmt.Sprintf(`{"type":"update_counterparty_bank_details","counterparty":%q,"iban":"DE89370400440532013%03d"}`, replayCounterparties[a.rng.IntN(5)], a.rng.IntN(1000))
	case r < 0.96:
		action = fmt.Sprintf(`{"type":"trade","amount":%d,"counterparty":%q,"instrument":"EUR/USD"}`, 1000+a.rng.IntN(399001), replayCounterparties[a.rng.IntN(5)])
	case r < 0.962:
		action = fmt.Sprintf(`{"type":"trade","amount":%d,"counterparty":%q}`, 500001+a.rng.IntN(500000), replayCounterparties[a.rng.IntN(5)])
	case r < 0.982:
		action = fmt.Sprintf(`{"type":"Transfer","amount":%d,"to":%q}`, 100+a.rng.IntN(9901), replayPayees[a.rng.IntN(4)])
	default:
		_, err := a.gw.Refuse(ctx, a.id, "bad_request", "invalid JSON: unexpected end of input", []byte(`{"action": {"type": "transfer", "amount": 5`))
		return err
	}
	v, err := strictjson.Decode([]byte(action), strictjson.Limits{})
	if err != nil {
		return fmt.Errorf("%s: %w", action, err)
	}
	act, err := policy.NewAction(v)
	if err != nil {
		return fmt.Errorf("%s: %w", action, err)
	}
	req.Action = act
	res, err := a.gw.Submit(ctx, req, true)
	if err != nil {
		return err
	}
	if res.Decision.Decision != policy.RequireApproval {
		return nil
	}
	need := 1
	if strings.Contains(action, `"trade"`) {
		need = 2
	}
	for _, who := range replayApprovers[:need] {
		st := res.Approval.Statement(approval.Approve, "")
		signed, err := approval.Sign(st, a.signers[who])
		if err != nil {
			return err
		}
		_, err = a.gw.Approve(ctx, "caller", res.RequestID, signed)
		if approval.Code(err) == "expired" {
			return nil // too late on the simulated clock: it stays parked
		}
		if err != nil {
			return fmt.Errorf("approve %s: %w", res.RequestID, err)
		}
	}
	return nil
}
