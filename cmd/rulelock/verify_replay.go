package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/bundle"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/policy"
)

// replayFinding is one thing `verify --replay` found wrong, with its class:
// replay_mismatch, bundle_missing, bundle_hash_mismatch, unmediated_outcome,
// approval_quorum_invalid.
type replayFinding struct {
	Index  int64  `json:"index"`
	Class  string `json:"class"`
	Detail string `json:"detail"`
}

type replaySummary struct {
	Entries   int64           `json:"entries"`
	Decisions int             `json:"decisions_replayed"`
	Open      int             `json:"open_decisions"` // allowed or parked, no outcome yet
	Findings  []replayFinding `json:"findings"`
	Seconds   float64         `json:"seconds"`
}

// policies loads archived policies by the digest decisions name.
type policies struct {
	dir   string
	cache map[string]*policy.Policy
	errs  map[string]replayFinding
}

func (ps *policies) get(digest string) (*policy.Policy, *replayFinding) {
	if p, ok := ps.cache[digest]; ok {
		return p, nil
	}
	if f, ok := ps.errs[digest]; ok {
		return nil, &f
	}
	p, f := ps.load(digest)
	if f != nil {
		ps.errs[digest] = *f
		return nil, f
	}
	ps.cache[digest] = p
	return p, nil
}

func (ps *policies) load(digest string) (*policy.Policy, *replayFinding) {
	dir := filepath.Join(ps.dir, strings.TrimPrefix(digest, "sha256:"))
	if _, err := os.Stat(dir); err != nil {
		return nil, &replayFinding{Class: "bundle_missing", Detail: fmt.Sprintf("no archive of %s in %s", digest, ps.dir)}
	}
	if _, err := os.Stat(filepath.Join(dir, bundle.ManifestFile)); err == nil {
		b, err := bundle.ReadDir(dir)
		if err != nil || b.Digest() != digest {
			return nil, &replayFinding{Class: "bundle_hash_mismatch", Detail: fmt.Sprintf("archive of %s: %v", digest, errOr(err, "digest "+safeDigest(b)))}
		}
		var srcs []policy.Source
		for _, f := range b.Files {
			if !policy.IsTestFile(f.Name) {
				srcs = append(srcs, f)
			}
		}
		p, err := policy.FromSources(srcs, policy.Options{})
		if err != nil {
			return nil, &replayFinding{Class: "bundle_hash_mismatch", Detail: fmt.Sprintf("archive of %s does not compile: %v", digest, err)}
		}
		return p, nil
	}
	// A development-mode policy: its files, named by the policy's own digest.
	p, err := policy.Load(os.DirFS(dir), policy.Options{})
	if err != nil || p.Digest() != digest {
		return nil, &replayFinding{Class: "bundle_hash_mismatch", Detail: fmt.Sprintf("archive of %s: %v", digest, errOr(err, "it hashes to "+policyDigest(p)))}
	}
	return p, nil
}

func errOr(err error, s string) string {
	if err != nil {
		return err.Error()
	}
	return s
}

func safeDigest(b *bundle.Bundle) string {
	if b == nil {
		return ""
	}
	return b.Digest()
}

func policyDigest(p *policy.Policy) string {
	if p == nil {
		return ""
	}
	return p.Digest()
}

// verifyReplay re-runs every recorded decision under the archived policy it
// names and checks the log's completeness (see `rulelock verify --replay`).
// The log must not be open in a running gateway: verify a stopped gateway's
// data directory or a copy.
func verifyReplay(logDir, bundlesDir string, reg *approval.Registry) (*replaySummary, error) {
	start := time.Now()
	l, err := audit.Open(logDir, audit.Options{})
	if err != nil {
		return nil, err
	}
	defer l.Close()
	sum := &replaySummary{Entries: l.Size()}
	add := func(i int64, class, format string, args ...any) {
		sum.Findings = append(sum.Findings, replayFinding{Index: i, Class: class, Detail: fmt.Sprintf(format, args...)})
	}
	ps := &policies{dir: bundlesDir, cache: map[string]*policy.Policy{}, errs: map[string]replayFinding{}}

	// Structure: activations before decisions, outcomes and approvals point
	// at decisions that allow them, approved executions have their quorum.
	type decided struct {
		e     *audit.Entry
		index int64
	}
	decisions := map[int64]*audit.Entry{}
	byRequest := map[string]decided{} // the first decision of each request
	activated := map[string]bool{}
	closed := map[int64]bool{}
	approvals := map[string][][]byte{}
	for i := int64(0); i < l.Size(); i++ {
		raw, err := l.ReadEntry(i)
		if err != nil {
			return nil, err
		}
		e, err := audit.DecodeEntry(raw)
		if err != nil {
			return nil, err
		}
		switch e.Kind {
		case audit.KindPolicyActivation:
			activated[e.BundleDigest] = true
		case audit.KindDecision:
			decisions[i] = e
			if _, ok := byRequest[e.RequestID]; !ok {
				byRequest[e.RequestID] = decided{e, i}
			}
			if !activated[e.BundleDigest] {
				add(i, "bundle_missing", "decision names %s, which no earlier entry activated", e.BundleDigest)
			}
			if e.Decision == "approved" {
				checkQuorum(i, e, byRequest[e.RequestID].e, approvals[e.RequestID], reg, add)
			}
		case audit.KindOutcome:
			d, ok := decisions[e.Closes]
			switch {
			case !ok || d.RequestID != e.RequestID:
				add(i, "unmediated_outcome", "outcome of %s closes entry %d, which is not its decision", e.RequestID, e.Closes)
			case d.Decision == "allow" || d.Decision == "approved":
			case d.Decision == "require_approval" && e.Status == gateway.StatusError:
				// a quorum reached before a restart, closed as not executed
			default:
				add(i, "unmediated_outcome", "outcome %s of %s closes a %s decision", e.Status, e.RequestID, d.Decision)
			}
			if closed[e.Closes] {
				add(i, "unmediated_outcome", "a second outcome for decision %d", e.Closes)
			}
			closed[e.Closes] = true
		case audit.KindApproval:
			d, ok := byRequest[e.RequestID]
			if !ok || d.e.Decision != "require_approval" {
				add(i, "approval_quorum_invalid", "approval entry for %s, which no parked decision precedes", e.RequestID)
			}
			if e.Decision == "approve" {
				approvals[e.RequestID] = append(approvals[e.RequestID], e.Signature)
			}
		}
	}
	for i, d := range decisions {
		if (d.Decision == "allow" || d.Decision == "approved") && !closed[i] {
			sum.Open++
		}
	}

	// Replay: every evaluated decision, under the policy it names, with the
	// recorded inputs and the history derived from the log.
	err = gateway.Replay(l, gateway.ReplayOptions{}, true, func(r *gateway.Replayed) error {
		sum.Decisions++
		p, f := ps.get(r.Entry.BundleDigest)
		if f != nil {
			f.Index = r.Index
			sum.Findings = append(sum.Findings, *f)
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
				add(r.Index, "replay_mismatch", "recorded approved, replay denies (%s)", got.Reason)
			}
			return nil
		case string(policy.Deny):
			if got.Decision == policy.RequireApproval && strings.HasPrefix(r.Entry.Message, "approval_") || r.Entry.Message == "no_approvers" {
				return nil // parking was refused: the gateway's, not the policy's, decision
			}
		}
		if string(got.Decision) != want || !sameRules(got.Rules, r.Entry.Rules) {
			add(r.Index, "replay_mismatch", "recorded %s %v, replay %s %v", want, ruleNames(r.Entry.Rules), got.Decision, firedNames(got.Rules))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sum.Seconds = time.Since(start).Seconds()
	return sum, nil
}

// checkQuorum checks the signed approvals of an approved request: each a
// valid statement for exactly this request, action and policy, by distinct
// approvers in the required groups who are not the requester.
func checkQuorum(i int64, approved, parked *audit.Entry, notes [][]byte, reg *approval.Registry, add func(int64, string, string, ...any)) {
	if reg == nil {
		add(i, "approval_quorum_invalid", "no approver keys given (--config or the data directory's approvers/): the quorum cannot be checked")
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
		add(i, "approval_quorum_invalid", "approved request %s has no parked decision with approval terms", approved.RequestID)
		return
	}
	signers := map[string]bool{}
	for _, n := range notes {
		who, stmt, err := reg.Open(n)
		if err != nil || stmt.Request != approved.RequestID || stmt.Action != parked.ActionSHA256 || stmt.Policy != parked.BundleDigest ||
			stmt.Verdict != approval.Approve || who == parked.Agent {
			add(i, "approval_quorum_invalid", "an approval of %s does not hold: %v", approved.RequestID, errOr(err, "it names another request, action or policy, or its signer is the requester"))
			continue
		}
		signers[who] = true
	}
	for _, q := range st.Approval.Requirements {
		n := 0
		for who := range signers {
			a, _ := reg.Approver(who)
			if len(q.Groups) == 0 || intersects(a.Groups, q.Groups) {
				n++
			}
		}
		if n < q.Approvers {
			add(i, "approval_quorum_invalid", "%s: %d valid approvals for rule %s, %d required", approved.RequestID, n, q.Rule, q.Approvers)
		}
	}
}

func intersects(a, b []string) bool {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return true
			}
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

// approversFor returns the approver registry to check quorums with: the
// config's approvers, or the development approvers in the data directory.
func approversFor(configPath, dataDir string) (*approval.Registry, error) {
	if configPath != "" {
		c, err := readConfig(configPath)
		if err != nil {
			return nil, err
		}
		return c.registry()
	}
	pubs, _ := filepath.Glob(filepath.Join(dataDir, "approvers", "*.pub"))
	if len(pubs) == 0 {
		return nil, nil
	}
	var as []approval.Approver
	for _, p := range pubs {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		id := strings.TrimSuffix(filepath.Base(p), ".pub")
		as = append(as, approval.Approver{ID: id, Groups: devApproverGroups, Key: strings.TrimSpace(string(b))})
	}
	return approval.NewRegistry(as)
}
