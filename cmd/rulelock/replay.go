package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/bundle"
	"github.com/rulelock/rulelock/internal/lifecycle"
	"github.com/rulelock/rulelock/internal/replay"
	"github.com/rulelock/rulelock/policy"
)

func replayCommands() []command {
	return []command{
		{"replay", "what-if: re-run a candidate policy over a recorded log and report what would change", runReplay},
	}
}

// runReplay re-evaluates every recorded decision, with its recorded inputs
// and the history derived from the log, under a candidate policy.
func runReplay(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "replay", "--log DIR --policy DIR [--trust FILE] [--config FILE] [--json]")
	logDir := fs.String("log", "", "the log directory (e.g. rulelock-data/log)")
	polDir := fs.String("policy", "", "the candidate policy (a bundle, a policy directory or a .rules file)")
	trustPath := fs.String("trust", "", "with a bundle: judge it first as the gateway would (quorum of this trust file, compile, its tests)")
	config := fs.String("config", "", "the gateway config, for its limits (default: the default limits)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *logDir == "" || *polDir == "" {
		fs.Usage()
		return &exitError{code: 2}
	}
	p, err := replayCandidate(*polDir, *trustPath)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	var opts replay.Options
	if *config != "" {
		c, err := readConfig(*config)
		if err != nil {
			return err
		}
		opts = c.replayLimits()
	}
	// Read without the lock: a running gateway's log, as it is now.
	l, err := audit.OpenSnapshot(filepath.Clean(*logDir))
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

// replayCandidate loads the candidate policy: a bundle through the
// lifecycle (checked against its manifest, and judged when a trust file is
// given), any other directory or file as a development policy.
func replayCandidate(path, trustPath string) (*policy.Policy, error) {
	if !lifecycle.IsBundle(path) {
		if trustPath != "" {
			return nil, fmt.Errorf("--trust: %s is not a bundle (no %s)", path, bundle.ManifestFile)
		}
		p, err := loadPolicy(path)
		if err != nil {
			return nil, fmt.Errorf("load policy:\n%v", err)
		}
		return p, nil
	}
	var trust *bundle.Trust
	if trustPath != "" {
		t, err := loadTrust(trustPath)
		if err != nil {
			return nil, err
		}
		trust = t
	}
	p, _, err := lifecycle.Candidate(path, trust, time.Now())
	if err != nil {
		return nil, fmt.Errorf("candidate bundle %s: %w", path, err)
	}
	return p, nil
}

func sortedMapKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
