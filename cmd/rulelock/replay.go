package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/replay"
)

func replayCommands() []command {
	return []command{
		{"replay", "what-if: re-run a candidate policy over a recorded log and report what would change", runReplay},
	}
}

// runReplay re-evaluates every recorded decision, with its recorded inputs
// and the history derived from the log, under a candidate policy.
func runReplay(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "replay", "--log DIR --policy DIR [--config FILE] [--json]")
	logDir := fs.String("log", "", "the log directory (e.g. rulelock-data/log)")
	polDir := fs.String("policy", "", "the candidate policy (directory or .rules file)")
	config := fs.String("config", "", "the gateway config, for its limits (default: the default limits)")
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
	var opts replay.Options
	if *config != "" {
		c, err := readConfig(*config)
		if err != nil {
			return err
		}
		opts = c.replayLimits()
	}
	l, err := audit.Open(filepath.Clean(*logDir), audit.Options{})
	if err != nil {
		return err
	}
	defer l.Close()
	rep, err := replay.WhatIf(l, p, opts)
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
