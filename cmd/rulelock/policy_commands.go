package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/rulelock/rulelock/internal/strictjson"
	"github.com/rulelock/rulelock/policy"
	"github.com/rulelock/rulelock/policy/policytest"
)

// policyCommands lists the subcommands of the policy language
// (check, fmt, eval, test).
func policyCommands() []command {
	return []command{
		{"check", "parse, type-check and lint a policy", runCheck},
		{"fmt", "format policy files canonically", runFmt},
		{"eval", "decide one request envelope, print the decision as JSON", runEval},
		{"test", "run a policy's test files, with rule coverage", runTest},
	}
}

func newFlags(e *env, name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: rulelock %s %s\n", name, usage)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args; a bad flag is a usage error (exit 2).
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return &exitError{code: 0}
		}
		return &exitError{code: 2}
	}
	return nil
}

// loadPolicy compiles the policy at path: a directory or one .rules file.
func loadPolicy(path string) (*policy.Policy, error) {
	srcs, err := readPolicySources(path)
	if err != nil {
		return nil, err
	}
	return policy.FromSources(srcs, policy.Options{})
}

func readPolicySources(path string) ([]policy.Source, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		srcs, err := policy.ReadSources(os.DirFS(path))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		for i := range srcs {
			srcs[i].Name = filepath.Join(path, srcs[i].Name)
		}
		return srcs, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return []policy.Source{{Name: path, Data: data}}, nil
}

func runCheck(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "check", "[-strict] PATH")
	strict := fs.Bool("strict", false, "treat lint warnings as errors")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return &exitError{code: 2}
	}
	p, err := loadPolicy(fs.Arg(0))
	var list policy.ErrorList
	if errors.As(err, &list) {
		for _, pe := range list {
			fmt.Fprintln(e.stderr, pe)
		}
		return &exitError{code: 1}
	}
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	for _, w := range p.Warnings() {
		fmt.Fprintf(e.stderr, "%s: warning: %s\n", w.Pos, w.Msg)
	}
	if *strict && len(p.Warnings()) > 0 {
		return &exitError{code: 1}
	}
	fmt.Fprintf(e.stdout, "ok: %d rules, default %s, %s\n", len(p.Rules()), p.Default(), p.Digest())
	return nil
}

func runFmt(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "fmt", "[-w] [-l] PATH...")
	write := fs.Bool("w", false, "write the result to the file instead of stdout")
	list := fs.Bool("l", false, "list files whose formatting differs")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return &exitError{code: 2}
	}
	failed := false
	for _, arg := range fs.Args() {
		files, err := rulesFiles(arg)
		if err != nil {
			return err
		}
		for _, name := range files {
			if err := fmtFile(e, name, *write, *list); err != nil {
				fmt.Fprintln(e.stderr, err)
				failed = true
			}
		}
	}
	if failed {
		return &exitError{code: 1}
	}
	return nil
}

func rulesFiles(path string) ([]string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return []string{path}, nil
	}
	matches, err := filepath.Glob(filepath.Join(path, "*.rules"))
	sort.Strings(matches)
	return matches, err
}

func fmtFile(e *env, name string, write, list bool) error {
	src, err := os.ReadFile(name)
	if err != nil {
		return err
	}
	f, err := policy.Parse(name, src)
	if err != nil {
		return err
	}
	out := policy.Format(f)
	changed := !bytes.Equal(src, out)
	switch {
	case list:
		if changed {
			fmt.Fprintln(e.stdout, name)
		}
	case write:
		if changed {
			return os.WriteFile(name, out, 0o644)
		}
	default:
		_, err = e.stdout.Write(out)
	}
	return err
}

// evalOutput is what `rulelock eval` prints.
type evalOutput struct {
	*policy.Decision
	Now   string             `json:"now"` // the time the request was decided at
	Trace []policy.TraceStep `json:"trace,omitempty"`
}

// runEval decides one request. The body is the API's (POST /v1/decide):
// without "now" it is decided at the current time, or at --now; the time
// used is in the output. --fail-on makes a script fail (exit 1) on a deny,
// or on anything but allow.
func runEval(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "eval", "--policy PATH [--explain] [--now RFC3339] [--fail-on deny|approval] [FILE|-]")
	path := fs.String("policy", "", "policy directory or .rules file (required)")
	explain := fs.Bool("explain", false, "add a trace of every expression evaluated")
	nowFlag := fs.String("now", "", "decide at this time (RFC 3339) when the request has no \"now\"; default the current time")
	failOn := fs.String("fail-on", "", "exit 1 when the decision is `deny`, or with approval when it is deny or require_approval")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *path == "" || fs.NArg() > 1 || (*failOn != "" && *failOn != "deny" && *failOn != "approval") {
		fs.Usage()
		return &exitError{code: 2}
	}
	now := time.Now().UTC().Truncate(time.Second)
	if *nowFlag != "" {
		t, err := time.Parse(time.RFC3339, *nowFlag)
		if err != nil {
			return usageError("--now %q: want RFC 3339, e.g. 2026-11-22T10:00:00Z", *nowFlag)
		}
		now = t
	}
	p, err := loadPolicy(*path)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("load policy:\n%v", err)}
	}
	in, name := e.stdin, "stdin"
	if fs.NArg() == 1 && fs.Arg(0) != "-" {
		f, err := os.Open(fs.Arg(0))
		if err != nil {
			return &exitError{code: 2, err: err}
		}
		defer f.Close()
		in, name = f, fs.Arg(0)
	}
	data, err := io.ReadAll(io.LimitReader(in, 1<<20+1))
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if data, err = withNow(data, now, *nowFlag != ""); err != nil {
		return &exitError{code: 2, err: fmt.Errorf("%s: %v", name, err)}
	}
	req, err := policy.DecodeRequest(data)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("%s: %v", name, err)}
	}
	out := evalOutput{Now: req.Now.UTC().Format(time.RFC3339Nano)}
	if *explain {
		out.Decision, out.Trace = p.Explain(req)
	} else {
		out.Decision = p.Evaluate(req)
	}
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		return err
	}
	switch d := out.Decision.Decision; {
	case d == policy.Deny && *failOn != "", d == policy.RequireApproval && *failOn == "approval":
		return &exitError{code: 1}
	}
	return nil
}

// withNow returns the request body data with "now" set to now when it has
// none, so that the API's body (which may not carry "now": the gateway's
// clock decides) decides as it would there. A body with "now" and an
// explicit --now is ambiguous: an error. Anything that is not a strict JSON
// object is left for DecodeRequest to refuse with its own message.
func withNow(data []byte, now time.Time, explicit bool) ([]byte, error) {
	v, err := strictjson.Decode(data, strictjson.Limits{})
	if err != nil {
		return data, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return data, nil
	}
	if _, has := m["now"]; has {
		if explicit {
			return nil, errors.New("the request has \"now\" and --now is given: use one")
		}
		return data, nil
	}
	m["now"] = now.UTC().Format(time.RFC3339Nano)
	return strictjson.Canonical(m)
}

func runTest(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "test", "[-v] [-run REGEXP] PATH")
	verbose := fs.Bool("v", false, "print every case")
	run := fs.String("run", "", "run only cases whose name matches this regular expression")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return &exitError{code: 2}
	}
	dir := fs.Arg(0)
	p, err := loadPolicy(dir)
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("load policy:\n%v", err)}
	}
	suites, err := policytest.ReadDir(os.DirFS(dir))
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	res, err := policytest.Run(p, suites, policytest.Options{Run: *run})
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	for _, c := range res.Cases {
		switch {
		case c.Failure != "":
			fmt.Fprintf(e.stdout, "FAIL %s: %s\n%s\n", filepath.Join(dir, c.File), c.Name, indent(c.Failure))
		case *verbose:
			fmt.Fprintf(e.stdout, "ok   %s: %s\n", filepath.Join(dir, c.File), c.Name)
		}
	}
	if len(res.Uncovered) > 0 {
		fmt.Fprintf(e.stdout, "coverage: %d/%d rules; not exercised: %s\n", res.Covered, res.Covered+len(res.Uncovered), strings.Join(res.Uncovered, ", "))
	} else {
		fmt.Fprintf(e.stdout, "coverage: %d/%d rules\n", res.Covered, res.Covered)
	}
	fmt.Fprintf(e.stdout, "%d passed, %d failed\n", res.Passed, res.Failed)
	if res.Failed > 0 {
		return &exitError{code: 1}
	}
	return nil
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}
