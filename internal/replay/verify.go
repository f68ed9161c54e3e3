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
//	sensitive_shredded       a decision whose sensitive inputs cannot be opened (their salts are gone): not re-evaluated
//	bundle_missing           no archive of the named policy, or no activation before the decision
//	bundle_hash_mismatch     the archive is altered or does not compile
//	unmediated_outcome       an outcome without a decision that allowed it
//	approval_quorum_invalid  an approved execution without a valid quorum
//	bundle_rollback          a signed bundle activated after one with a version as high or higher
//	development_policy       a development-mode activation: a policy loaded from a
//	                         directory, which no quorum signed (Options.AllowDevelopment
//	                         accepts it, for development logs)
//	action_mismatch          a decision's stored action is not the canonical action its action_sha256 names (the replay stops there)
//
// WhatIf re-evaluates the same decisions under a candidate policy and
// reports what would change.
//
// Both walk the log with gateway.Replay: each decision is evaluated against
// the state the ledger folded from the entries before it, the one fold the
// gateway runs live and at restart.
package replay

import (
	"cmp"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/ledger"
	"github.com/rulelock/rulelock/internal/lifecycle"
	"github.com/rulelock/rulelock/internal/passkey"
	"github.com/rulelock/rulelock/policy"
)

// Finding classes.
const (
	ReplayMismatch        = "replay_mismatch"
	SensitiveShredded     = "sensitive_shredded"
	BundleMissing         = "bundle_missing"
	BundleHashMismatch    = "bundle_hash_mismatch"
	UnmediatedOutcome     = "unmediated_outcome"
	ApprovalQuorumInvalid = "approval_quorum_invalid"
	DevelopmentPolicy     = "development_policy"
	BundleRollback        = "bundle_rollback"
	ActionMismatch        = "action_mismatch"
	// PasskeyInvalid: an enrolment entry that is malformed, names no
	// configured approver, a key the config does not pin, or a key
	// another approver enrolled.
	PasskeyInvalid = "passkey_invalid"
)

// Finding is one thing Verify found wrong.
type Finding struct {
	Index  int64  `json:"index"`
	Class  string `json:"class"`
	Detail string `json:"detail"`
}

// Summary is what Verify found.
type Summary struct {
	Entries   int64 `json:"entries"`
	Decisions int   `json:"decisions_replayed"`
	Open      int   `json:"open_decisions"` // allowed or approved, no outcome yet
	// Passkeys is the number of passkey enrolments the log records, and
	// PasskeyApprovals the number of passkey-signed approvals that hold
	// in the quorums of approved executions.
	Passkeys         int       `json:"passkeys_enrolled"`
	PasskeyApprovals int       `json:"passkey_approvals"`
	Findings         []Finding `json:"findings"`
	Seconds          float64   `json:"seconds"`
}

// Options configure Verify.
type Options struct {
	// Bundles is the archive of activated policies, one directory per
	// digest (a gateway's <data>/bundles).
	Bundles string
	// Policies are policies already compiled, found by their digest before
	// the archive is read, and trusted as given: the archive is not checked
	// for them (a caller that verifies many logs of the same policies
	// compiles them once).
	Policies []*policy.Policy
	// Approvers check the signatures of approved executions; nil reports
	// every approved execution as approval_quorum_invalid. Their passkeys
	// are not taken from it but from the enrolment entries of the log
	// itself (as far as the config's pins allow: approval.Approver.Passkeys),
	// each counting for the approvals after it.
	Approvers *approval.Registry
	// Retention is the gateway's (its config's limits.retention; zero: the
	// default): what the ledger keeps, and so the stateful rules, depend
	// on it.
	Retention time.Duration
	// Workers: see gateway.ReplayOptions (default GOMAXPROCS).
	Workers int
	// AllowDevelopment accepts development-mode activations (policies no
	// quorum signed) instead of reporting each as development_policy: for
	// logs of development gateways. Their decisions are replayed either way.
	AllowDevelopment bool
}

// VerifyDir reads the log in dir, without its lock and changing nothing
// (audit.OpenSnapshot), and verifies it: a running gateway's log is
// verified as it was when read.
// Seconds includes opening the log (which checks every frame and the hash
// chain). It does not check signatures, the Merkle tree or that each
// entry's encoding is canonical: that is audit.VerifyDir, which `rulelock
// verify --replay` runs first.
func VerifyDir(dir string, opts Options) (*Summary, error) {
	start := time.Now()
	if audit.IsTilesDir(dir) { // an export of the log in PostgreSQL
		t, err := audit.OpenTiles(dir)
		if err != nil {
			return nil, err
		}
		sum, err := Verify(t, opts)
		if err != nil {
			return nil, err
		}
		sum.Seconds = time.Since(start).Seconds()
		return sum, nil
	}
	l, err := audit.OpenSnapshot(dir)
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
	reg := opts.Approvers
	if reg != nil {
		reg = reg.WithoutPasskeys()
	}
	c := &checker{reg: reg, allowDev: opts.AllowDevelopment, archive: lifecycle.Archive{Dir: opts.Bundles}, decisions: map[int64]decided{}, byRequest: map[reqKey]effect{}, parked: map[reqKey]*audit.Entry{},
		activated: map[string]bool{}, closed: map[int64]bool{}, approvals: map[string][][]byte{},
		parkedAt: map[reqKey]int64{}, ended: map[reqKey]bool{}, reloads: map[string]int64{}, revoked: map[int64]string{}}
	c.blobs = lr
	ar := newArchive(opts.Bundles, opts.Policies)

	// The replay calls back from one goroutine, after c.entry has seen the
	// entry.
	var replayed []Finding
	decisions := 0
	add := func(i int64, class, format string, args ...any) {
		replayed = append(replayed, Finding{Index: i, Class: class, Detail: fmt.Sprintf(format, args...)})
	}
	// The ledger keeps the indexes of every archived policy from the
	// start, as the gateway kept those of each policy from its activation on
	// (it folds the whole log again for a new one): the same state.
	err := gateway.Replay(lr, gateway.ReplayOptions{Retention: opts.Retention, Policies: ar.all(), Approved: true, Entry: c.entry, Workers: opts.Workers}, func(r *gateway.Replayed) error {
		if refusedWithoutPolicy(r.Entry) {
			return nil // nothing was evaluated
		}
		p, f := ar.get(r.Entry.BundleDigest)
		decisions++
		if f != nil {
			f.Index = r.Index
			replayed = append(replayed, *f)
			return nil
		}
		if len(r.Sealed) > 0 {
			// Evaluating the commitments would give another decision, not
			// a wrong one: say what cannot be checked.
			add(r.Index, SensitiveShredded, "the salts of the sensitive members %v are gone: the decision (%s) cannot be re-evaluated", r.Sealed, r.Entry.Decision)
			return nil
		}
		got := p.Evaluate(r.Request)
		if detail, ok := c.judge(r.Index, r.Entry, got); !ok {
			add(r.Index, ReplayMismatch, "%s", detail)
		}
		return nil
	})
	var bad *gateway.EntryError
	if errors.As(err, &bad) && errors.Is(err, audit.ErrActionMismatch) {
		// What the decision evaluated is not what the log's hash names:
		// nothing after it can be folded faithfully.
		c.add(bad.Index, ActionMismatch, "%v; the replay stops here", bad.Err)
		err = nil
	}
	if err != nil {
		return nil, err
	}
	for i, d := range c.decisions {
		if ledger.Decision(c.effects.name(d.decision)).Allowed() && !c.closed[i] {
			sum.Open++
		}
	}
	slices.SortStableFunc(replayed, func(a, b Finding) int { return cmp.Compare(a.Index, b.Index) })
	sum.Decisions = decisions
	sum.Passkeys, sum.PasskeyApprovals = c.passkeys, c.passkeyApprovals
	sum.Findings = append(append([]Finding{}, c.findings...), replayed...) // [] in JSON when there are none
	sum.Seconds = time.Since(start).Seconds()
	return sum, nil
}

// judge compares the replay's decision got with the recorded entry e (at
// index i): the same decision and fired rules, or one of the gateway's own
// denials where it applies.
func (c *checker) judge(i int64, e *audit.Entry, got *policy.Decision) (string, bool) {
	want := ledger.Decision(e.Decision)
	parked := c.parked[keyOf(e.RequestID)]
	redecision := parked != nil && parked != e
	if want == ledger.Approved {
		switch {
		case !redecision:
			return "recorded approved without a parked decision", false
		case parked.BundleDigest != e.BundleDigest:
			return fmt.Sprintf("recorded approved under %s, approvers signed for %s", e.BundleDigest, parked.BundleDigest), false
		case got.Decision == policy.Deny:
			return fmt.Sprintf("recorded approved, replay denies (%s)", got.Reason), false
		}
		return "", true
	}
	if want == ledger.Deny {
		if detail, ok := c.revoked[i]; ok {
			return detail, detail == "" // a parked request a reload denied (checkRevoked)
		}
		if r, ok := ledger.GatewayReason(e.Message); ok {
			switch r {
			case ledger.PolicyChanged:
				if redecision && parked.BundleDigest != e.BundleDigest {
					return "", true
				}
				return "recorded policy_changed, but the policy is the one the approvers signed for", false
			case ledger.PrincipalRevoked:
				switch {
				case !redecision:
					return "recorded principal_revoked for a request that was not parked", false
				case len(c.approvals[e.RequestID]) == 0:
					// At its quorum, or at a reload (checkRevoked): this is neither.
					return "recorded principal_revoked for a parked request that no approval completed and no reload ended", false
				}
				return "", true // the configuration at the time is not in the log
			case ledger.NoApprovers, ledger.ApprovalQueueFull, ledger.ApprovalImpossible:
				if got.Decision == policy.RequireApproval {
					return "", true // parking was refused: the gateway's, not the policy's, decision
				}
				return fmt.Sprintf("recorded %s, but the replay does not require approval (%s)", r, got.Decision), false
			case ledger.OverBudget, ledger.HistoryLimit:
				return "", true // a resource refusal, not the policy's decision
			case ledger.Frozen:
				if c.frozenAt(i) {
					return "", true // the emergency stop's, not the policy's, decision
				}
				return "recorded frozen, but no freeze is in force at this point of the log", false
			}
		}
	}
	if string(got.Decision) != e.Decision || !sameRules(got.Rules, e.Rules) {
		detail := fmt.Sprintf("recorded %s %v, replay %s %v", e.Decision, ruleNames(e.Rules), got.Decision, firedNames(got.Rules))
		if e.EngineVersion != gateway.EngineVersion {
			detail += fmt.Sprintf(" (decided by %s; this replay runs %s, whose stateful helpers may read other state)", e.EngineVersion, gateway.EngineVersion)
		}
		return detail, false
	}
	return "", true
}

// checker checks the log's structure in log order: activations before
// decisions, outcomes and approvals pointing at decisions that allow them,
// approved executions with their quorum. What it keeps of each of a
// million decisions holds no pointers, so the garbage collector need not
// scan it.
type checker struct {
	reg *approval.Registry
	// freezes are the log's emergency stops as index ranges [from, to):
	// to is math.MaxInt64 while the log does not lift one.
	freezes   []freezeSpan
	allowDev  bool
	archive   lifecycle.Archive
	floor     *activation       // the highest signed bundle activated so far
	blobs     ledger.BlobReader // for a parked decision's state stored by digest
	decisions map[int64]decided
	byRequest map[reqKey]effect       // the first decision of each request
	parked    map[reqKey]*audit.Entry // those that were require_approval
	activated map[string]bool
	closed    map[int64]bool
	approvals map[string][][]byte
	// For the denials of parked requests that a reload ended
	// (checkRevoked): where each request was parked, whether it ended
	// since, the latest reload note of each config digest, and the
	// verdict on each such denial by index ("" when it holds).
	parkedAt map[reqKey]int64
	ended    map[reqKey]bool
	reloads  map[string]int64
	revoked  map[int64]string
	effects  effects
	findings []Finding

	passkeys, passkeyApprovals int
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
		switch {
		case !lifecycle.Development(e):
			c.checkVersion(i, e)
		case !c.allowDev:
			c.add(i, DevelopmentPolicy, "%s was activated in development mode (loaded from a directory, signed by no quorum): not a production log (--allow-development accepts it)", e.BundleDigest)
		}
	case audit.KindDecision:
		key, dec := keyOf(e.RequestID), c.effects.code(e.Decision)
		c.decisions[i] = decided{key, dec}
		if _, ok := c.byRequest[key]; !ok {
			c.byRequest[key] = dec
			if ledger.Decision(e.Decision) == ledger.RequireApproval {
				c.parked[key] = e
				c.parkedAt[key] = i
			}
		} else if p := c.parked[key]; p != nil && p != e {
			c.checkRevoked(i, key, e)
			c.ended[key] = true // re-decided: at its quorum, or at a reload
		}
		if !c.activated[e.BundleDigest] && !refusedWithoutPolicy(e) {
			c.add(i, BundleMissing, "decision names %s, which no earlier entry activated", e.BundleDigest)
		}
		if ledger.Decision(e.Decision) == ledger.Approved {
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
		case ledger.Decision(decision).Allowed():
		case ledger.Decision(decision) == ledger.RequireApproval && ledger.Status(e.Status) == ledger.Error:
			// a quorum reached before a restart, closed as not executed
		default:
			c.add(i, UnmediatedOutcome, "outcome %s of %s closes a %s decision", e.Status, e.RequestID, decision)
		}
		if c.closed[e.Closes] {
			c.add(i, UnmediatedOutcome, "a second outcome for decision %d", e.Closes)
		}
		c.closed[e.Closes] = true
	case audit.KindNote:
		c.enrolment(i, e)
		c.freezeNote(i, e)
		if d, ok := ledger.ParseReloadNote(e); ok {
			c.reloads[d] = i
		}
	case audit.KindApproval:
		d, ok := c.byRequest[keyOf(e.RequestID)]
		if !ok || ledger.Decision(c.effects.name(d)) != ledger.RequireApproval {
			c.add(i, ApprovalQuorumInvalid, "approval entry for %s, which no parked decision precedes", e.RequestID)
		}
		switch ledger.Verb(e.Decision) {
		case ledger.Approve:
			c.approvals[e.RequestID] = append(c.approvals[e.RequestID], e.Signature)
		case ledger.Reject, ledger.Expired:
			c.ended[keyOf(e.RequestID)] = true
		}
	}
	return nil
}

// checkRevoked judges the re-decision e at index i of the parked request
// key when it is the denial of a reload (gateway.RecheckParked: a deny
// principal_revoked or approval_impossible whose State names the reload's
// config digest): it holds when the request was still pending — no
// rejection, expiry or other re-decision before it — and a reload note
// with that digest lies between the parked decision and it. The
// configuration itself is not in the log: who was removed is the
// gateway's word, as at a quorum.
func (c *checker) checkRevoked(i int64, key reqKey, e *audit.Entry) {
	r, ok := ledger.GatewayReason(e.Message)
	if ledger.Decision(e.Decision) != ledger.Deny || !ok || (r != ledger.PrincipalRevoked && r != ledger.ApprovalImpossible) {
		return
	}
	text, err := ledger.FieldText(e.State, c.blobs)
	if err != nil {
		return // the replay reports the state it cannot read
	}
	ds, err := ledger.DecodeDecisionState(audit.Text(text))
	if err != nil || ds.Reload == "" {
		return
	}
	at, seen := c.reloads[ds.Reload]
	switch {
	case c.ended[key]:
		c.revoked[i] = fmt.Sprintf("recorded %s at reload %s for %s, which had already ended", r, ds.Reload, e.RequestID)
	case !seen || at < c.parkedAt[key]:
		c.revoked[i] = fmt.Sprintf("recorded %s at reload %s for %s, and no reload note of that config lies between its parked decision and this denial", r, ds.Reload, e.RequestID)
	default:
		c.revoked[i] = ""
	}
}

// freezeSpan is one freeze's range of log indexes.
type freezeSpan struct {
	id       string
	from, to int64
}

// freezeNote reads the note entry e at index i as a freeze or an unfreeze,
// if it is one (ledger.ParseFreezeNote).
func (c *checker) freezeNote(i int64, e *audit.Entry) {
	n, ok := ledger.ParseFreezeNote(e)
	if !ok {
		return
	}
	open := len(c.freezes) > 0 && c.freezes[len(c.freezes)-1].to == math.MaxInt64
	switch {
	case n.Word == ledger.NoteFreeze && !open:
		c.freezes = append(c.freezes, freezeSpan{id: n.ID, from: i, to: math.MaxInt64})
	case n.Word == ledger.NoteUnfreeze && open && c.freezes[len(c.freezes)-1].id == n.ID:
		c.freezes[len(c.freezes)-1].to = i
	}
}

// frozenAt reports whether a freeze is in force at index i.
func (c *checker) frozenAt(i int64) bool {
	for _, f := range c.freezes {
		if f.from < i && i < f.to {
			return true
		}
	}
	return false
}

// enrolment reads the note entry e at index i as a passkey enrolment, if
// it is one, and lets the passkey count for the approvals after it.
func (c *checker) enrolment(i int64, e *audit.Entry) {
	cred, ok, err := passkey.ParseEnrolmentNote(e.Message)
	switch {
	case !ok:
		return
	case err != nil:
		c.add(i, PasskeyInvalid, "%v", err)
		return
	}
	c.passkeys++
	if c.reg == nil {
		return // checkQuorum reports that nothing can be checked
	}
	if err := c.reg.AddPasskey(cred); err != nil {
		c.add(i, PasskeyInvalid, "%v", err)
	}
}

// activation is a signed bundle the log activated.
type activation struct {
	digest  string
	version uint64
}

// checkVersion checks the anti-rollback rule on the signed activation e at
// index i: its version, read from the archive, is higher than that of
// every bundle activated before, unless it is the same bundle again (a
// restart). An activation whose archive does not read is skipped here:
// every decision under it reports the archive.
func (c *checker) checkVersion(i int64, e *audit.Entry) {
	m, err := c.archive.Manifest(e.BundleDigest)
	if err != nil {
		return
	}
	if f := c.floor; f != nil && e.BundleDigest != f.digest && m.Version <= f.version {
		c.add(i, BundleRollback, "bundle %s version %d activated after %s version %d", e.BundleDigest, m.Version, f.digest, f.version)
	}
	if c.floor == nil || m.Version > c.floor.version {
		c.floor = &activation{e.BundleDigest, m.Version}
	}
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
	if parked == nil {
		c.add(i, ApprovalQuorumInvalid, "approved request %s has no parked decision with approval terms", approved.RequestID)
		return
	}
	state, err := ledger.FieldText(parked.State, c.blobs)
	if err != nil || json.Unmarshal([]byte(state), &st) != nil || st.Approval == nil {
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
		if !signers[who] && approval.IsPasskeyApproval(n) {
			c.passkeyApprovals++
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

func errOr(err error, s string) string {
	if err != nil {
		return err.Error()
	}
	return s
}
