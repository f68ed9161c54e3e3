package review

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/policy"
)

// A Request is what a parked request's review is made from: the parked
// request, its canonical action, and what the agent said about it.
type Request struct {
	Parked      approval.Request
	Action      []byte // the canonical action (RFC 8785 JCS), whose SHA-256 is Parked.Action
	Instruction string // the agent's instruction: its claim, not a fact
	Reasoning   string // the agent's reasoning: its claim, not a fact
	Rules       []policy.FiredRule

	// StillNeeded, when it has one number per requirement of Parked, is
	// how many more approvers each still needs (approval.Registry.StillNeeded,
	// which knows the approvers' groups). Otherwise a requirement that names
	// groups shows an upper bound: its count less the approvals that count
	// whatever their approver's groups.
	StillNeeded []int
	// StillWanted, when it has one list per requirement of Parked, names
	// the approvers who could still count toward each
	// (approval.Registry.StillWanted).
	StillWanted [][]string
}

// A Review is a parked request made safe to show a human: every string
// in it is escaped (Escape), so that a template or a terminal shows it
// as plain visible text. The console ranges over its fields from
// html/template; Write prints it for a terminal.
type Review struct {
	ID, Agent, State string
	ActionHash       string  // sha256:HEX of the action as shown
	Fields           []Field // the action, one leaf per field
	ActionError      string  // set, and Fields empty, when the action cannot be shown: do not approve
	Rules            []Rule
	Approvals        []Vote
	Needs            []Need
	Expires          string // RFC 3339, UTC
	TimeLeft         string // "3h59m0s", or "expired"
	Instruction      Claim
	Reasoning        Claim
}

// A Rule is a rule that fired, with its message.
type Rule struct{ Name, Outcome, Message, Error string }

// A Vote is one approval so far.
type Vote struct{ Approver, Time string }

// A Need is one requirement: how many approvers, from which groups, for
// which rule, and how many more it needs.
type Need struct {
	Rule, Groups, Message string
	Approvers             int
	StillNeeded           int
	Exact                 bool // false: StillNeeded is an upper bound (approvers' groups unknown)
	// Who may still count toward it, escaped, when WhoKnown: none left
	// while StillNeeded > 0 means the request cannot reach its quorum.
	Who      []string
	WhoKnown bool
}

// A Claim is free text from the agent, split into escaped lines (split at
// "\n"; every other control character stays escaped within its line).
type Claim struct {
	Lines []string
}

// New builds the review of r at time now.
func New(r Request, now time.Time) *Review {
	p := r.Parked
	v := &Review{
		ID: Escape(p.ID), Agent: Escape(p.Agent), State: Escape(string(p.State)),
		Expires:     p.Expires.UTC().Format(time.RFC3339),
		Instruction: claim(r.Instruction),
		Reasoning:   claim(r.Reasoning),
	}
	sum := sha256.Sum256(r.Action)
	v.ActionHash = "sha256:" + hex.EncodeToString(sum[:])
	switch fields, err := Fields(r.Action); {
	case err != nil:
		v.ActionError = err.Error()
	case sum != p.Action:
		v.ActionError = "the action shown does not hash to the action the request names (sha256:" + hex.EncodeToString(p.Action[:]) + ")"
	default:
		v.Fields = fields
	}
	if left := p.Expires.Sub(now); left > 0 {
		v.TimeLeft = left.Truncate(time.Second).String()
	} else {
		v.TimeLeft = "expired"
	}
	for _, f := range r.Rules {
		v.Rules = append(v.Rules, Rule{Escape(f.Name), Escape(string(f.Outcome)), Escape(f.Message), Escape(f.Error)})
	}
	for _, a := range p.Approvals {
		v.Approvals = append(v.Approvals, Vote{Escape(a.Approver), a.Time.UTC().Format(time.RFC3339)})
	}
	exact := len(r.StillNeeded) == len(p.Requirements)
	known := len(r.StillWanted) == len(p.Requirements)
	for i, q := range p.Requirements {
		n := need(q, len(p.Approvals))
		if exact {
			n.StillNeeded, n.Exact = max(0, r.StillNeeded[i]), true
		}
		if known {
			n.WhoKnown = true
			for _, id := range r.StillWanted[i] {
				n.Who = append(n.Who, Escape(id))
			}
		}
		v.Needs = append(v.Needs, n)
	}
	return v
}

// need is q with an estimate of who it still needs from the number of
// approvals so far: exact when q names no group, else an upper bound.
func need(q policy.Requirement, approvals int) Need {
	var gs []string
	for _, g := range q.Groups {
		gs = append(gs, Escape(g))
	}
	n := Need{Rule: Escape(q.Rule), Groups: strings.Join(gs, ", "), Message: Escape(q.Message), Approvers: q.Approvers}
	n.StillNeeded, n.Exact = q.Approvers, len(q.Groups) == 0
	if n.Exact {
		n.StillNeeded = max(0, q.Approvers-approvals)
	}
	return n
}

func claim(s string) Claim {
	if s == "" {
		return Claim{}
	}
	var c Claim
	for _, l := range strings.Split(s, "\n") {
		c.Lines = append(c.Lines, Escape(l))
	}
	return c
}

// Write prints the review for a terminal. Every byte it writes is
// printable: no control character but "\n", no format, bidi or other
// invisible character (Escape). Nothing is cut.
func (v *Review) Write(w io.Writer) error {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("request %s  agent %s  %s\n", v.ID, v.Agent, v.State)
	if v.TimeLeft == "expired" {
		p("  expires %s (expired)\n", v.Expires)
	} else {
		p("  expires %s (%s left)\n", v.Expires, v.TimeLeft)
	}
	if v.ActionError != "" {
		p("  action %s: CANNOT BE SHOWN, DO NOT APPROVE: %s\n", v.ActionHash, Escape(v.ActionError))
	} else {
		p("  action %s, every field (strings in quotes, hidden characters as \\x.. or \\u{..}):\n", v.ActionHash)
		for _, f := range v.Fields {
			p("    %s = %s\n", f.Path, f.Value)
		}
		if len(v.Fields) == 0 {
			p("    (no fields: the action is {})\n")
		}
	}
	if len(v.Rules) > 0 {
		p("  rules that fired:\n")
		for _, r := range v.Rules {
			p("    %s (%s): %s\n", r.Name, r.Outcome, r.Message)
			if r.Error != "" {
				p("      evaluation error: %s\n", r.Error)
			}
		}
	}
	p("  approvals so far: %d\n", len(v.Approvals))
	for _, a := range v.Approvals {
		p("    %s at %s\n", a.Approver, a.Time)
	}
	for _, n := range v.Needs {
		from := "any approver"
		if n.Groups != "" {
			from = "from " + n.Groups
		}
		still := fmt.Sprintf("%d more", n.StillNeeded)
		if !n.Exact {
			still = fmt.Sprintf("at most %d more (approvals above count only if from %s)", n.StillNeeded, n.Groups)
		}
		p("  needs %d %s (rule %s): %s\n", n.Approvers, from, n.Rule, still)
		if n.WhoKnown && n.StillNeeded > 0 {
			if len(n.Who) == 0 {
				p("    nobody left who can approve it\n")
			} else {
				p("    can still approve: %s\n", strings.Join(n.Who, ", "))
			}
		}
		if n.Message != "" {
			p("    %s\n", n.Message)
		}
	}
	writeClaim(&b, "agent's instruction (unverified, the agent's claim):", v.Instruction)
	writeClaim(&b, "agent's reasoning (unverified, the agent's claim):", v.Reasoning)
	_, err := io.WriteString(w, b.String())
	return err
}

func writeClaim(b *strings.Builder, label string, c Claim) {
	if len(c.Lines) == 0 {
		return
	}
	fmt.Fprintf(b, "  %s\n", label)
	for _, l := range c.Lines {
		fmt.Fprintf(b, "    | %s\n", l)
	}
}
