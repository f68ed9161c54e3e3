package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/policy"
)

func replayCommands() []command {
	return []command{
		{"replay", "what-if: re-run a candidate policy over a recorded log and report what would change", runReplay},
	}
}

// replayReport is what `rulelock replay` finds.
type replayReport struct {
	Policy      string            `json:"policy"`
	Decisions   int               `json:"decisions"`
	Unchanged   int               `json:"unchanged"`
	Transitions map[string]int    `json:"transitions"`  // "allow -> deny": count
	RuleFirings map[string][2]int `json:"rule_firings"` // rule: [recorded, candidate]
	Changed     []changedDecision `json:"changed"`
}

type changedDecision struct {
	Index  int64           `json:"index"`
	Agent  string          `json:"agent"`
	Action json.RawMessage `json:"action"`
	From   string          `json:"from"`
	To     string          `json:"to"`
	Rules  []string        `json:"rules"` // the candidate's fired rules
	Reason string          `json:"reason"`
}

// runReplay re-evaluates every recorded decision, with its recorded inputs
// and the history derived from the log, under a candidate policy.
func runReplay(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "replay", "--log DIR --policy DIR [--json]")
	logDir := fs.String("log", "", "the log directory (e.g. rulelock-data/log)")
	polDir := fs.String("policy", "", "the candidate policy (directory or .rules file)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *logDir == "" || *polDir == "" {
		fs.Usage()
		return &exitError{code: 2}
	}
	p, err := loadPolicy(*polDir)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("load policy:\n%v", err)}
	}
	l, err := audit.Open(filepath.Clean(*logDir), audit.Options{})
	if err != nil {
		return err
	}
	defer l.Close()
	rep := replayReport{Policy: p.Digest(), Transitions: map[string]int{}, RuleFirings: map[string][2]int{}}
	err = gateway.Replay(l, gateway.ReplayOptions{}, false, func(r *gateway.Replayed) error {
		rep.Decisions++
		from := r.Entry.Decision
		for _, rule := range r.Entry.Rules {
			c := rep.RuleFirings[rule.Name]
			c[0]++
			rep.RuleFirings[rule.Name] = c
		}
		var d *policy.Decision
		if r.HistoryLimit {
			d = &policy.Decision{Decision: policy.Deny, Reason: "history_limit"}
		} else {
			d = p.Evaluate(r.Request)
		}
		var names []string
		for _, rule := range d.Rules {
			c := rep.RuleFirings[rule.Name]
			c[1]++
			rep.RuleFirings[rule.Name] = c
			names = append(names, rule.Name)
		}
		to := string(d.Decision)
		if from == to {
			rep.Unchanged++
			return nil
		}
		rep.Transitions[from+" -> "+to]++
		rep.Changed = append(rep.Changed, changedDecision{Index: r.Index, Agent: r.Entry.Agent,
			Action: json.RawMessage(r.Request.Action.JSON), From: from, To: to, Rules: names, Reason: d.Reason})
		return nil
	})
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	fmt.Fprintf(e.stdout, "replayed %d decisions under %s: %d unchanged, %d would change\n", rep.Decisions, rep.Policy, rep.Unchanged, len(rep.Changed))
	for _, k := range sortedMapKeys(rep.Transitions) {
		fmt.Fprintf(e.stdout, "  %-32s %d\n", k, rep.Transitions[k])
	}
	fmt.Fprintln(e.stdout, "rule firings (recorded -> candidate):")
	for _, k := range sortedMapKeys(rep.RuleFirings) {
		c := rep.RuleFirings[k]
		mark := ""
		if c[0] != c[1] {
			mark = "  *"
		}
		fmt.Fprintf(e.stdout, "  %-32s %d -> %d%s\n", k, c[0], c[1], mark)
	}
	for _, c := range rep.Changed {
		fmt.Fprintf(e.stdout, "entry %d agent %s: %s -> %s (%s; rules: %s) %s\n", c.Index, c.Agent, c.From, c.To, c.Reason, strings.Join(c.Rules, ", "), c.Action)
	}
	return nil
}

func sortedMapKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
