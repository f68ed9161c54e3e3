package replay

import (
	"cmp"
	"encoding/json"
	"slices"
	"sync"

	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/policy"
)

// Report is what WhatIf finds.
type Report struct {
	Policy      string            `json:"policy"`
	Decisions   int               `json:"decisions"`
	Unchanged   int               `json:"unchanged"`
	Transitions map[string]int    `json:"transitions"`  // "allow -> deny": count
	RuleFirings map[string][2]int `json:"rule_firings"` // rule: [recorded, candidate]
	Changed     []Change          `json:"changed"`      // in log order
}

// Change is one decision the candidate would make differently.
type Change struct {
	Index  int64           `json:"index"`
	Agent  string          `json:"agent"`
	Action json.RawMessage `json:"action"`
	From   string          `json:"from"`
	To     string          `json:"to"`
	Rules  []string        `json:"rules"` // the candidate's fired rules
	Reason string          `json:"reason"`
}

// WhatIf re-evaluates every recorded decision, with its recorded inputs and
// the state folded from the log, under the candidate policy p. Of opts, it
// uses the retention and Workers.
func WhatIf(lr gateway.LogReader, p *policy.Policy, opts Options) (*Report, error) {
	rep := &Report{Policy: p.Digest(), Transitions: map[string]int{}, RuleFirings: map[string][2]int{}}
	var mu sync.Mutex
	err := gateway.Replay(lr, gateway.ReplayOptions{Retention: opts.Retention, Policies: []*policy.Policy{p}, Workers: opts.Workers}, func(r *gateway.Replayed) error {
		d := p.Evaluate(r.Request)
		from, to := r.Entry.Decision, string(d.Decision)
		mu.Lock()
		defer mu.Unlock()
		rep.Decisions++
		for _, rule := range r.Entry.Rules {
			c := rep.RuleFirings[rule.Name]
			c[0]++
			rep.RuleFirings[rule.Name] = c
		}
		var names []string
		for _, rule := range d.Rules {
			c := rep.RuleFirings[rule.Name]
			c[1]++
			rep.RuleFirings[rule.Name] = c
			names = append(names, rule.Name)
		}
		if from == to {
			rep.Unchanged++
			return nil
		}
		rep.Transitions[from+" -> "+to]++
		action := r.Request.Action.JSON
		if r.Logged != nil {
			action = r.Logged // sensitive values as the log holds them, not opened
		}
		rep.Changed = append(rep.Changed, Change{Index: r.Index, Agent: r.Entry.Agent,
			Action: json.RawMessage(action), From: from, To: to, Rules: names, Reason: d.Reason})
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(rep.Changed, func(a, b Change) int { return cmp.Compare(a.Index, b.Index) })
	return rep, nil
}
