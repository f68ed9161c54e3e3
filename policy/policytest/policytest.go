// Package policytest runs policy test files: each case is a request and the
// decision the policy must reach for it. `rulelock test` is its front end.
//
// Test files sit beside the rules and end in _test.yaml (or _test.yml,
// _test.json). A file sets defaults for its cases and lists them:
//
//	# transfers_test.yaml: what the payments policy does with transfers.
//	now: "2026-11-22T10:00:00Z"            # default for every case
//	agent: {id: agent-1, roles: [payments]}
//	cases:
//	  - name: a small transfer is allowed
//	    action: {type: transfer, amount: 500, to: acct-1}
//	    expect:
//	      decision: allow
//	      rules: [AllowTransfers]          # the exact set of rules that fired
//	  - name: a large trade needs two treasury approvers
//	    action: {type: trade, amount: 750000, counterparty: acme}
//	    expect:
//	      decision: require_approval
//	      approvers: 2
//
// A case may set action, agent, session, instruction, reasoning and now; each
// is the request envelope's field of the same name, and the request goes
// through the same strict decoder as every other request. expect.decision is
// required; expect.rules, expect.reason, expect.approvers and expect.errors
// (error codes) are checked when present.
package policytest

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strings"

	"github.com/rulelock/rulelock/policy"
	"go.yaml.in/yaml/v3"
)

// Suite is one test file.
type Suite struct {
	File        string         `yaml:"-"`
	Now         string         `yaml:"now"`
	Agent       map[string]any `yaml:"agent"`
	Session     map[string]any `yaml:"session"`
	Instruction string         `yaml:"instruction"`
	Reasoning   string         `yaml:"reasoning"`
	Cases       []Case         `yaml:"cases"`
}

// Case is one request and its expected decision.
type Case struct {
	Name        string         `yaml:"name"`
	Action      map[string]any `yaml:"action"`
	Agent       map[string]any `yaml:"agent"`
	Session     map[string]any `yaml:"session"`
	Instruction string         `yaml:"instruction"`
	Reasoning   string         `yaml:"reasoning"`
	Now         string         `yaml:"now"`
	Expect      Expect         `yaml:"expect"`
}

// Expect is what a case requires of the decision.
type Expect struct {
	Decision  string    `yaml:"decision"`
	Rules     *[]string `yaml:"rules"`
	Reason    string    `yaml:"reason"`
	Approvers int       `yaml:"approvers"`
	Errors    *[]string `yaml:"errors"`
}

// ReadDir reads every test file at the root of fsys.
func ReadDir(fsys fs.FS) ([]*Suite, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("read tests: %w", err)
	}
	var suites []*Suite
	for _, e := range entries {
		if e.IsDir() || !policy.IsTestFile(e.Name()) {
			continue
		}
		b, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, fmt.Errorf("read tests: %w", err)
		}
		s, err := Parse(e.Name(), b)
		if err != nil {
			return nil, err
		}
		suites = append(suites, s)
	}
	if len(suites) == 0 {
		return nil, fmt.Errorf("no test files (*_test.yaml) in the policy directory")
	}
	return suites, nil
}

// Parse reads one test file.
func Parse(name string, b []byte) (*Suite, error) {
	s := &Suite{}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(s); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	s.File = name
	for i, c := range s.Cases {
		switch {
		case c.Name == "":
			return nil, fmt.Errorf("%s: case %d has no name", name, i+1)
		case c.Action == nil:
			return nil, fmt.Errorf("%s: case %q has no action", name, c.Name)
		case c.Expect.Decision == "":
			return nil, fmt.Errorf("%s: case %q has no expect.decision", name, c.Name)
		}
	}
	return s, nil
}

// Options select what to run.
type Options struct {
	Run string // a regular expression cases' names must match
}

// Result is the outcome of a run.
type Result struct {
	Cases     []CaseResult
	Passed    int
	Failed    int
	Covered   int      // rules that fired in at least one case
	Uncovered []string // rules no case made fire, in source order
}

// CaseResult is one case's outcome; Failure is empty when it passed.
type CaseResult struct {
	File, Name string
	Failure    string
	Decision   *policy.Decision
}

// Run evaluates every case against p.
func Run(p *policy.Policy, suites []*Suite, opts Options) (*Result, error) {
	var match *regexp.Regexp
	if opts.Run != "" {
		var err error
		if match, err = regexp.Compile(opts.Run); err != nil {
			return nil, fmt.Errorf("-run: %v", err)
		}
	}
	res := &Result{}
	fired := map[string]bool{}
	for _, s := range suites {
		for _, c := range s.Cases {
			if match != nil && !match.MatchString(c.Name) {
				continue
			}
			cr := CaseResult{File: s.File, Name: c.Name}
			req, err := request(s, &c)
			if err != nil {
				cr.Failure = "bad request: " + err.Error()
			} else {
				cr.Decision = p.Evaluate(req)
				for _, r := range cr.Decision.Rules {
					fired[r.Name] = true
				}
				cr.Failure = check(&c.Expect, cr.Decision)
			}
			if cr.Failure == "" {
				res.Passed++
			} else {
				res.Failed++
			}
			res.Cases = append(res.Cases, cr)
		}
	}
	for _, r := range p.Rules() {
		if fired[r.Name] {
			res.Covered++
		} else {
			res.Uncovered = append(res.Uncovered, r.Name)
		}
	}
	return res, nil
}

// request builds the case's envelope and decodes it like any other request.
func request(s *Suite, c *Case) (*policy.Request, error) {
	env := map[string]any{"action": c.Action}
	set := func(k string, v, def any) {
		switch x := v.(type) {
		case string:
			if x != "" {
				env[k] = x
				return
			}
		case map[string]any:
			if x != nil {
				env[k] = x
				return
			}
		}
		switch x := def.(type) {
		case string:
			if x != "" {
				env[k] = x
			}
		case map[string]any:
			if x != nil {
				env[k] = x
			}
		}
	}
	set("agent", c.Agent, s.Agent)
	set("session", c.Session, s.Session)
	set("instruction", c.Instruction, s.Instruction)
	set("reasoning", c.Reasoning, s.Reasoning)
	set("now", c.Now, s.Now)
	b, err := json.Marshal(env)
	if err != nil {
		return nil, err
	}
	return policy.DecodeRequest(b)
}

func check(want *Expect, d *policy.Decision) string {
	var problems []string
	if string(d.Decision) != want.Decision {
		problems = append(problems, fmt.Sprintf("decision: got %s, want %s", d.Decision, want.Decision))
	}
	if want.Rules != nil {
		got := make([]string, 0, len(d.Rules))
		for _, r := range d.Rules {
			got = append(got, r.Name)
		}
		if !sameSet(got, *want.Rules) {
			problems = append(problems, fmt.Sprintf("rules: got %v, want %v", got, *want.Rules))
		}
	}
	if want.Reason != "" && d.Reason != want.Reason {
		problems = append(problems, fmt.Sprintf("reason: got %s, want %s", d.Reason, want.Reason))
	}
	if want.Approvers != 0 {
		got := 0
		if d.Approval != nil {
			got = d.Approval.Approvers
		}
		if got != want.Approvers {
			problems = append(problems, fmt.Sprintf("approvers: got %d, want %d", got, want.Approvers))
		}
	}
	if want.Errors != nil {
		var got []string
		for _, e := range d.Errors {
			got = append(got, e.Code)
		}
		if !sameSet(got, *want.Errors) {
			problems = append(problems, fmt.Sprintf("errors: got %v, want %v", got, *want.Errors))
		}
	}
	if len(problems) > 0 && len(d.Errors) > 0 {
		for _, e := range d.Errors {
			problems = append(problems, fmt.Sprintf("(evaluation error in %q: %s)", e.Rule, e.Message))
		}
	}
	return strings.Join(problems, "\n")
}

func sameSet(a, b []string) bool {
	a, b = append([]string(nil), a...), append([]string(nil), b...)
	sort.Strings(a)
	sort.Strings(b)
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
