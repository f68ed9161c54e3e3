// Package replay re-runs recorded decisions: it is what `rulelock verify
// --replay` and `rulelock replay` do, importable so that the benchmarks
// measure exactly the commands' work.
//
// Verify re-evaluates every decision of a log under the archived policy the
// decision names, with the recorded inputs (the action, the agent's id and
// roles, the session, instruction and reasoning, now = the entry's time)
// and the agent's history derived from the log the way the gateway derives
// it, and compares the result with the recorded decision and fired rules.
// It also checks the log's completeness. Every problem is a Finding with the
// entry's index and one of these classes:
//
//	replay_mismatch          the policy decides otherwise than recorded
//	bundle_missing           no archive of the named policy, or no activation before the decision
//	bundle_hash_mismatch     the archive is altered or does not compile
//	unmediated_outcome       an outcome without a decision that allowed it
//	approval_quorum_invalid  an approved execution without a valid quorum
//
// WhatIf re-evaluates the same decisions under a candidate policy and
// reports what would change.
//
// Agents' histories are independent, so both evaluate the decisions of
// different agents concurrently (gateway.Replay); one agent's decisions are
// evaluated in log order.
package replay

import (
	"cmp"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/policy"
)

// Finding classes.
const (
	ReplayMismatch        = "replay_mismatch"
	BundleMissing         = "bundle_missing"
	BundleHashMismatch    = "bundle_hash_mismatch"
	UnmediatedOutcome     = "unmediated_outcome"
	ApprovalQuorumInvalid = "approval_quorum_invalid"
)

// Finding is one thing Verify found wrong.
type Finding struct {
	Index  int64  `json:"index"`
	Class  string `json:"class"`
	Detail string `json:"detail"`
}

// Summary is what Verify found.
type Summary struct {
	Entries   int64     `json:"entries"`
	Decisions int       `json:"decisions_replayed"`
	Open      int       `json:"open_decisions"` // allowed or approved, no outcome yet
	Findings  []Finding `json:"findings"`
	Seconds   float64   `json:"seconds"`
}

// Options configure Verify.
type Options struct {
	// Bundles is the archive of activated policies, one directory per
	// digest (a gateway's <data>/bundles).
	Bundles string
	// Approvers check the signatures of approved executions; nil reports
	// every approved execution as approval_quorum_invalid.
	Approvers *approval.Registry
	// Retention and MaxHistory are the gateway's limits (its config's
	// limits.retention and limits.max_history; zero: the defaults): the
	// histories, and so the stateful rules and the history_limit denials,
	// depend on them.
	Retention  time.Duration
	MaxHistory int
	// Workers: see gateway.ReplayOptions (default GOMAXPROCS).
	Workers int
}

// VerifyDir opens the log in dir and verifies it. The log must not be open
// in a running gateway: verify a stopped gateway's data directory or a copy.
// Seconds includes opening the log (which checks every frame and the hash
// chain). It does not check signatures, the Merkle tree or that each
// entry's encoding is canonical: that is audit.VerifyDir, which `rulelock
// verify --replay` runs first.
func VerifyDir(dir string, opts Options) (*Summary, error) {
	start := time.Now()
	l, err := audit.Open(dir, audit.Options{})
	if err != nil {
		return nil, err
	}
	defer l.Close()
	sum, err := Verify(l, opts)
	if err != nil {
		return nil, err
	}
	sum.Seconds = time.Since(start).Seconds()
	return sum, nil
}

// Verify re-runs every recorded decision under the archived policy it names
// and checks the log's completeness (see the package documentation).
// Findings about the log's structure come first, then those of the
// re-evaluation, each group in log order.
func Verify(lr gateway.LogReader, opts Options) (*Summary, error) {
	start := time.Now()
	sum := &Summary{Entries: lr.Size()}
	c := &checker{reg: opts.Approvers, decisions: map[int64]decided{}, byRequest: map[reqKey]effect{}, parked: map[reqKey]*audit.Entry{},
		activated: map[string]bool{}, closed: map[int64]bool{}, approvals: map[string][][]byte{}}
	ar := newArchive(opts.Bundles)

	var mu sync.Mutex
	var replayed []Finding
	decisions := 0
	add := func(i int64, class, format string, args ...any) {
		mu.Lock()
		replayed = append(replayed, Finding{Index: i, Class: class, Detail: fmt.Sprintf(format, args...)})
		mu.Unlock()
	}
	err := gateway.Replay(lr, gateway.ReplayOptions{Retention: opts.Retention, MaxHistory: opts.MaxHistory, Approved: true, Entry: c.entry, Workers: opts.Workers}, func(r *gateway.Replayed) error {
		if refusedWithoutPolicy(r.Entry) {
			return nil // nothing was evaluated
		}
		p, f := ar.get(r.Entry.BundleDigest)
		mu.Lock()
		decisions++
		if f != nil {
			f.Index = r.Index
			replayed = append(replayed, *f)
		}
		mu.Unlock()
		if f != nil {
			return nil
		}
		var got *policy.Decision
		if r.HistoryLimit {
			got = &policy.Decision{Decision: policy.Deny, Reason: "history_limit"}
		} else {
			got = p.Evaluate(r.Request)
		}
		want := r.Entry.Decision
		switch want {
		case "approved":
			if got.Decision == policy.Deny {
				add(r.Index, ReplayMismatch, "recorded approved, replay denies (%s)", got.Reason)
			}
			return nil
		case string(policy.Deny):
			if got.Decision == policy.RequireApproval && strings.HasPrefix(r.Entry.Message, "approval_") || r.Entry.Message == "no_approvers" {
				return nil // parking was refused: the gateway's, not the policy's, decision
			}
		}
		if string(got.Decision) != want || !sameRules(got.Rules, r.Entry.Rules) {
			add(r.Index, ReplayMismatch, "recorded %s %v, replay %s %v", want, ruleNames(r.Entry.Rules), got.Decision, firedNames(got.Rules))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i, d := range c.decisions {
		if name := c.effects.name(d.decision); (name == "allow" || name == "approved") && !c.closed[i] {
			sum.Open++
		}
	}
	slices.SortStableFunc(replayed, func(a, b Finding) int { return cmp.Compare(a.Index, b.Index) })
	sum.Decisions = decisions
	sum.Findings = append(c.findings, replayed...)
	sum.Seconds = time.Since(start).Seconds()
	return sum, nil
}

// checker checks the log's structure in log order: activations before
// decisions, outcomes and approvals pointing at decisions that allow them,
// approved executions with their quorum. What it keeps of each of a
// million decisions holds no pointers, so the garbage collector need not
// scan it.
type checker struct {
	reg       *approval.Registry
	decisions map[int64]decided
	byRequest map[reqKey]effect       // the first decision of each request
	parked    map[reqKey]*audit.Entry // those that were require_approval
	activated map[string]bool
	closed    map[int64]bool
	approvals map[string][][]byte
	effects   effects
	findings  []Finding
}

// decided is what the checker keeps of a decision entry.
type decided struct {
	request  reqKey
	decision effect
}

// reqKey stands for a request id without a pointer: the id itself when it
// is shorter than 32 bytes (the gateway's are 27), else its SHA-256.
type reqKey [32]byte

func keyOf(id string) reqKey {
	var k reqKey
	if len(id) < len(k) {
		k[0] = byte(len(id))
		copy(k[1:], id)
		return k
	}
	k = sha256.Sum256([]byte(id))
	k[0] = 0xff // never a length: the two forms cannot collide
	return k
}

// effect is a decision ("allow", "deny", ...) as a small number.
type effect uint8

// effects interns decision strings; a log with more than 255 distinct
// ones (a forged one) shares the last code among the rest.
type effects struct {
	codes map[string]effect
	names [256]string
}

func (x *effects) code(s string) effect {
	if c, ok := x.codes[s]; ok {
		return c
	}
	if x.codes == nil {
		x.codes = map[string]effect{}
		x.names[255] = "(another)"
	}
	if len(x.codes) == 255 {
		return 255
	}
	c := effect(len(x.codes))
	x.codes[s] = c
	x.names[c] = s
	return c
}

func (x *effects) name(c effect) string { return x.names[c] }

func (c *checker) add(i int64, class, format string, args ...any) {
	c.findings = append(c.findings, Finding{Index: i, Class: class, Detail: fmt.Sprintf(format, args...)})
}

func (c *checker) entry(i int64, e *audit.Entry) error {
	switch e.Kind {
	case audit.KindPolicyActivation:
		c.activated[e.BundleDigest] = true
	case audit.KindDecision:
		key, dec := keyOf(e.RequestID), c.effects.code(e.Decision)
		c.decisions[i] = decided{key, dec}
		if _, ok := c.byRequest[key]; !ok {
			c.byRequest[key] = dec
			if e.Decision == string(policy.RequireApproval) {
				c.parked[key] = e
			}
		}
		if !c.activated[e.BundleDigest] && !refusedWithoutPolicy(e) {
			c.add(i, BundleMissing, "decision names %s, which no earlier entry activated", e.BundleDigest)
		}
		if e.Decision == "approved" {
			c.checkQuorum(i, e, c.parked[key], c.approvals[e.RequestID])
		}
	case audit.KindOutcome:
		d, ok := c.decisions[e.Closes]
		decision := ""
		if ok {
			decision = c.effects.name(d.decision)
		}
		switch {
		case !ok || d.request != keyOf(e.RequestID):
			c.add(i, UnmediatedOutcome, "outcome of %s closes entry %d, which is not its decision", e.RequestID, e.Closes)
		case decision == "allow" || decision == "approved":
		case decision == "require_approval" && e.Status == gateway.StatusError:
			// a quorum reached before a restart, closed as not executed
		default:
			c.add(i, UnmediatedOutcome, "outcome %s of %s closes a %s decision", e.Status, e.RequestID, decision)
		}
		if c.closed[e.Closes] {
			c.add(i, UnmediatedOutcome, "a second outcome for decision %d", e.Closes)
		}
		c.closed[e.Closes] = true
	case audit.KindApproval:
		d, ok := c.byRequest[keyOf(e.RequestID)]
		if !ok || c.effects.name(d) != "require_approval" {
			c.add(i, ApprovalQuorumInvalid, "approval entry for %s, which no parked decision precedes", e.RequestID)
		}
		if e.Decision == "approve" {
			c.approvals[e.RequestID] = append(c.approvals[e.RequestID], e.Signature)
		}
	}
	return nil
}

// refusedWithoutPolicy reports whether e records a request the gateway
// refused while no policy was active (a gateway started without a valid
// bundle): a denial without rules that names no policy.
func refusedWithoutPolicy(e *audit.Entry) bool {
	return e.BundleDigest == "" && e.Decision == string(policy.Deny) && len(e.Rules) == 0
}

// checkQuorum checks the signed approvals of an approved request: each a
// valid statement for exactly this request, action and policy, by distinct
// approvers in the required groups who are not the requester.
func (c *checker) checkQuorum(i int64, approved, parked *audit.Entry, notes [][]byte) {
	if c.reg == nil {
		c.add(i, ApprovalQuorumInvalid, "no approver keys given (--config or the data directory's approvers/): the quorum cannot be checked")
		return
	}
	var st struct {
		Approval *struct {
			Requirements []struct {
				Rule      string   `json:"rule"`
				Approvers int      `json:"approvers"`
				Groups    []string `json:"groups"`
			} `json:"requirements"`
		} `json:"approval"`
	}
	if parked == nil || json.Unmarshal([]byte(parked.State.Text), &st) != nil || st.Approval == nil {
		c.add(i, ApprovalQuorumInvalid, "approved request %s has no parked decision with approval terms", approved.RequestID)
		return
	}
	signers := map[string]bool{}
	for _, n := range notes {
		who, stmt, err := c.reg.Open(n)
		if err != nil || stmt.Request != approved.RequestID || stmt.Action != parked.ActionSHA256 || stmt.Policy != parked.BundleDigest ||
			stmt.Verdict != approval.Approve || who == parked.Agent {
			c.add(i, ApprovalQuorumInvalid, "an approval of %s does not hold: %v", approved.RequestID, errOr(err, "it names another request, action or policy, or its signer is the requester"))
			continue
		}
		signers[who] = true
	}
	for _, q := range st.Approval.Requirements {
		n := 0
		for who := range signers {
			a, _ := c.reg.Approver(who)
			if len(q.Groups) == 0 || intersects(a.Groups, q.Groups) {
				n++
			}
		}
		if n < q.Approvers {
			c.add(i, ApprovalQuorumInvalid, "%s: %d valid approvals for rule %s, %d required", approved.RequestID, n, q.Rule, q.Approvers)
		}
	}
}

func intersects(a, b []string) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}

func sameRules(got []policy.FiredRule, want []audit.Rule) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i].Name != want[i].Name || string(got[i].Outcome) != want[i].Outcome || got[i].Shadow != want[i].Shadow {
			return false
		}
	}
	return true
}

func ruleNames(rs []audit.Rule) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Name)
	}
	return out
}

func firedNames(rs []policy.FiredRule) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Name)
	}
	return out
}
