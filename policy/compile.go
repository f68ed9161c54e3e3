package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"sort"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/cost"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/ext"
)

// Options configure compilation. The zero value is ready to use.
type Options struct {
	// CostLimit caps the run-time cost of one expression; an evaluation that
	// exceeds it fails and the action is denied with cost_exceeded.
	// Default 1,000,000 (CEL cost units, roughly one per operation).
	CostLimit uint64
	// StaticCostLimit rejects at load time a rule whose estimated worst-case
	// cost exceeds it. Default 1000 × CostLimit.
	StaticCostLimit uint64
	// MaxHistory is the largest session history the caller passes; the
	// static estimates assume it. Default 1000.
	MaxHistory int
}

func (o Options) withDefaults() Options {
	if o.CostLimit == 0 {
		o.CostLimit = 1_000_000
	}
	if o.StaticCostLimit == 0 {
		o.StaticCostLimit = 1000 * o.CostLimit
	}
	if o.MaxHistory == 0 {
		o.MaxHistory = 1000
	}
	return o
}

// maxInputSize bounds strings, lists and maps of a request in cost estimates.
const maxInputSize = 1 << 20

// Policy is a compiled policy, safe for concurrent use.
type Policy struct {
	name     string
	deflt    Effect
	digest   string
	opts     Options
	schemas  map[string]*schema
	rules    []*compiledRule            // every rule, in source order
	byType   map[string][]*compiledRule // rules for an action type: pinned ones and unpinned ones, in source order
	anyType  []*compiledRule            // rules for a type no rule pins
	data     ref.Val
	docs     map[string]any
	warnings ErrorList

	mayAllow mayAllowCache
	reads    Reads
}

// Name is the policy's name from its header ("" without one).
func (p *Policy) Name() string { return p.name }

// Default is the decision when no rule decides.
func (p *Policy) Default() Effect { return p.deflt }

// Digest is "sha256:<hex>" over the policy's sources and data.
func (p *Policy) Digest() string { return p.digest }

// Warnings are the lint findings (see Lint); they do not stop a policy from loading.
func (p *Policy) Warnings() ErrorList { return p.warnings }

// Rules lists the rules in source order.
func (p *Policy) Rules() []*Rule {
	out := make([]*Rule, len(p.rules))
	for i, r := range p.rules {
		out[i] = r.Rule
	}
	return out
}

type compiledRule struct {
	*Rule
	types []string    // the action types the precondition pins, nil for any
	pre   cel.Program // nil when there is none or the index implies it
	cond  cel.Program
	post  cel.Program
	// consts records expressions that fold to a constant, for lint.
	consts map[*Expr]bool
	// checked keeps the type-checked expressions and their environment,
	// for MayAllow's partial evaluation.
	checked map[*Expr]*cel.Ast
	env     *cel.Env
	// scopes the rule's helpers read, and whether it reads session.history.
	scopes  ScopeSet
	history bool
}

// Source is one input of a policy: a .rules file or a data document.
type Source struct {
	Name string
	Data []byte
}

// Compile compiles parsed files and data documents (data.<name>) into a
// policy. The error, if any, is an ErrorList with file:line:col positions.
func Compile(files []*File, data map[string]any, opts Options) (*Policy, error) {
	opts = opts.withDefaults()
	c := &compiler{opts: opts, succeeded: map[*Index]bool{}, p: &Policy{deflt: Deny, opts: opts, schemas: map[string]*schema{}, byType: map[string][]*compiledRule{}}}
	c.collect(files)
	if len(c.errs) == 0 {
		c.buildEnvs(data)
	}
	if len(c.errs) == 0 {
		for _, r := range c.ruleDecls {
			c.compileRule(r)
		}
	}
	if len(c.errs) > 0 {
		sortErrors(c.errs)
		return nil, c.errs
	}
	c.index()
	c.p.reads.Indexes = c.indexes.sorted()
	for _, x := range c.p.reads.Indexes {
		if c.succeeded[x] {
			c.p.reads.Succeeded = append(c.p.reads.Succeeded, x)
		}
	}
	c.p.warnings = lint(c.p)
	return c.p, nil
}

type compiler struct {
	opts          Options
	p             *Policy
	prov          *provider
	errs          ErrorList
	ruleDecls     []*Rule
	header        *Header
	envDyn        *cel.Env // action as map(string, dyn)
	envPost       *cel.Env // envDyn plus result
	envSchema     map[string]*cel.Env
	dataDocs      map[string]any
	envSchemaPost map[string]*cel.Env
	indexes       indexSet
	succeeded     map[*Index]bool // the indexes succeeded() reads
}

func (c *compiler) errorf(pos Pos, format string, args ...any) {
	c.errs = append(c.errs, &Error{pos, fmt.Sprintf(format, args...)})
}

// collect gathers declarations across files and checks names.
func (c *compiler) collect(files []*File) {
	names := map[string]Pos{}
	for _, f := range files {
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *Header:
				if c.header != nil {
					c.errorf(d.Pos, "second policy header (the first is at %s)", c.header.Pos)
					continue
				}
				c.header = d
				c.p.name, c.p.deflt = d.Name, d.Default
			case *Schema:
				if prev, ok := c.p.schemas[d.Type]; ok {
					c.errorf(d.Pos, "action %q is declared twice (also at %s)", d.Type, prev.decl.Pos)
					continue
				}
				if err := checkTypeName(d.Type); err != nil {
					c.errorf(d.Pos, "action type %q: only A-Z a-z 0-9 _ . : - are allowed", d.Type)
					continue
				}
				s := &schema{decl: d, fields: map[string]*Field{}}
				for _, fl := range d.Fields {
					if fl.Name == "type" {
						c.errorf(fl.Pos, "field \"type\" is implicit: it is the action type")
						continue
					}
					if _, dup := s.fields[fl.Name]; dup {
						c.errorf(fl.Pos, "field %q is declared twice", fl.Name)
						continue
					}
					s.fields[fl.Name] = fl
					if fl.Sensitive {
						s.sensitive = append(s.sensitive, fl.Name)
					}
				}
				sort.Strings(s.sensitive)
				c.p.schemas[d.Type] = s
			case *Rule:
				if prev, ok := names[d.Name]; ok {
					c.errorf(d.Pos, "duplicate rule name %q (also at %s)", d.Name, prev)
					continue
				}
				names[d.Name] = d.Pos
				c.ruleDecls = append(c.ruleDecls, d)
			}
		}
	}
}

func (c *compiler) buildEnvs(data map[string]any) {
	prov, err := newProvider()
	if err != nil {
		c.errorf(Pos{}, "cel: %v", err)
		return
	}
	c.prov = prov
	for _, s := range c.p.schemas {
		s.register(prov)
	}
	base, err := cel.NewEnv(
		cel.CustomTypeProvider(prov),
		cel.Variable("agent", scopeTypes[ScopeAgent]),
		cel.Variable("session", scopeTypes[ScopeSession]),
		cel.Variable("principal", scopeTypes[ScopePrincipal]),
		cel.Variable("global", scopeTypes[ScopeGlobal]),
		cel.Variable("instruction", cel.StringType),
		cel.Variable("reasoning", cel.StringType),
		cel.Variable("now", cel.TimestampType),
		cel.Variable("data", cel.MapType(cel.StringType, cel.DynType)),
		cel.CrossTypeNumericComparisons(true),
		cel.DefaultUTCTimeZone(true),
		ext.Strings(),
		ext.Sets(),
		ext.Lists(),
		ext.Math(),
		cel.Lib(scopeLib{}),
	)
	if err != nil {
		c.errorf(Pos{}, "cel environment: %v", err)
		return
	}
	extend := func(action *cel.Type, post bool) *cel.Env {
		opts := []cel.EnvOption{cel.Variable("action", action)}
		if post {
			opts = append(opts, cel.Variable("result", cel.DynType))
		}
		e, err := base.Extend(opts...)
		if err != nil {
			c.errorf(Pos{}, "cel environment: %v", err)
		}
		return e
	}
	c.envDyn = extend(cel.MapType(cel.StringType, cel.DynType), false)
	c.envPost = extend(cel.MapType(cel.StringType, cel.DynType), true)
	c.envSchema = map[string]*cel.Env{}
	c.envSchemaPost = map[string]*cel.Env{}
	for t, s := range c.p.schemas {
		c.envSchema[t] = extend(s.cel, false)
		c.envSchemaPost[t] = extend(s.cel, true)
	}
	if data == nil {
		data = map[string]any{}
	}
	c.dataDocs = data
	c.p.docs = data
	c.p.data = types.DefaultTypeAdapter.NativeToValue(data)
}

// scopeLib declares the stateful helpers of the scopes.
type scopeLib struct{}

func (scopeLib) CompileOptions() []cel.EnvOption     { return scopeFunctions() }
func (scopeLib) ProgramOptions() []cel.ProgramOption { return nil }

func (c *compiler) compileRule(r *Rule) {
	cr := &compiledRule{Rule: r}
	exact := false
	if r.Precondition != nil {
		parsed, iss := c.envDyn.Parse(r.Precondition.celText())
		if iss != nil && iss.Err() != nil {
			c.celErrors(r.Precondition, iss)
			return
		}
		cr.types, exact = pins(parsed.NativeRep().Expr())
		if cr.types != nil && len(cr.types) == 0 {
			c.errorf(r.Precondition.Pos, "precondition of %q can never hold: no action type satisfies it", r.Name)
			return
		}
	}
	env, postEnv := c.envDyn, c.envPost
	if len(cr.types) == 1 {
		if _, ok := c.p.schemas[cr.types[0]]; ok {
			env, postEnv = c.envSchema[cr.types[0]], c.envSchemaPost[cr.types[0]]
		}
	}
	cr.consts = map[*Expr]bool{}
	cr.checked, cr.env = map[*Expr]*cel.Ast{}, env
	if r.Precondition != nil && !exact {
		cr.pre = c.program(env, cr, r.Precondition)
	}
	if r.Condition != nil {
		cr.cond = c.program(env, cr, r.Condition)
	}
	if r.Postcondition != nil {
		cr.post = c.program(postEnv, cr, r.Postcondition)
	}
	c.p.rules = append(c.p.rules, cr)
}

// program type-checks one expression, estimates its cost and plans it.
func (c *compiler) program(env *cel.Env, r *compiledRule, e *Expr) cel.Program {
	checked, iss := env.Compile(e.celText())
	if iss != nil && iss.Err() != nil {
		c.celErrors(e, iss)
		return nil
	}
	if t := checked.OutputType(); !t.IsExactType(types.BoolType) && !t.IsExactType(types.DynType) {
		c.errorf(e.Pos, "expression must be a bool, but it is %s", t)
		return nil
	}
	if v, ok := constBool(env, checked); ok {
		r.consts[e] = v
	}
	if !c.stateReads(r, e, checked) {
		return nil
	}
	r.checked[e] = checked
	est, err := env.EstimateCost(checked, estimator{maxHistory: uint64(c.opts.MaxHistory), data: c.dataDocs})
	if err != nil {
		c.errorf(e.Pos, "cost estimate: %v", err)
		return nil
	}
	if est.Max > c.opts.StaticCostLimit {
		c.errorf(e.Pos, "rule %q is too expensive: worst-case cost %s exceeds the limit %d (bound the collections it loops over)", r.Name, costString(est.Max), c.opts.StaticCostLimit)
		return nil
	}
	opts := []cel.ProgramOption{cel.EvalOptions(cel.OptOptimize)}
	if est.Max > c.opts.CostLimit {
		// Only rules that could exceed the limit pay for tracking it.
		opts = append(opts, cel.CostLimit(c.opts.CostLimit), cel.CostTrackerOptions(helperTrackers()...))
	}
	prg, err := env.Program(checked, opts...)
	if err != nil {
		c.errorf(e.Pos, "%v", err)
		return nil
	}
	return prg
}

func costString(n uint64) string {
	if n == ^uint64(0) {
		return "unbounded"
	}
	return fmt.Sprint(n)
}

// celErrors reports CEL issues at their positions in the policy file.
func (c *compiler) celErrors(e *Expr, iss *cel.Issues) {
	for _, ce := range iss.Errors() {
		pos := e.Pos
		if loc := ce.Location; loc != nil && loc.Line() > 0 {
			if loc.Line() == 1 {
				pos.Col += loc.Column()
			} else {
				pos.Line += loc.Line() - 1
				pos.Col = loc.Column() + 1
			}
		}
		c.errorf(pos, "%s", ce.Message)
	}
}

// pins returns the action types a precondition restricts the rule to (nil:
// any type; empty: none) and whether the precondition says nothing else.
func pins(e celast.Expr) (types []string, exact bool) {
	if e.Kind() != celast.CallKind {
		return nil, false
	}
	call := e.AsCall()
	args := call.Args()
	switch call.FunctionName() {
	case operators.Equals:
		if len(args) == 2 {
			if t, ok := typeEquals(args[0], args[1]); ok {
				return []string{t}, true
			}
			if t, ok := typeEquals(args[1], args[0]); ok {
				return []string{t}, true
			}
		}
	case operators.In:
		if len(args) == 2 && isActionType(args[0]) && args[1].Kind() == celast.ListKind {
			var out []string
			for _, el := range args[1].AsList().Elements() {
				s, ok := stringLit(el)
				if !ok {
					return nil, false
				}
				out = append(out, s)
			}
			if len(out) == 0 {
				return []string{}, true // `in []` never holds
			}
			return dedupe(out), true
		}
	case operators.LogicalAnd:
		var acc []string
		pinned := false
		for _, a := range args {
			t, _ := pins(a)
			if t == nil {
				continue
			}
			if !pinned {
				acc, pinned = t, true
				continue
			}
			acc = intersect(acc, t)
		}
		if pinned {
			if acc == nil {
				acc = []string{}
			}
			return acc, false
		}
	case operators.LogicalOr:
		var acc []string
		for _, a := range args {
			t, _ := pins(a)
			if t == nil {
				return nil, false
			}
			acc = append(acc, t...)
		}
		return dedupe(acc), false
	}
	return nil, false
}

func typeEquals(a, b celast.Expr) (string, bool) {
	if !isActionType(a) {
		return "", false
	}
	return stringLit(b)
}

func isActionType(e celast.Expr) bool {
	if e.Kind() != celast.SelectKind {
		return false
	}
	sel := e.AsSelect()
	op := sel.Operand()
	return !sel.IsTestOnly() && sel.FieldName() == "type" && op.Kind() == celast.IdentKind && op.AsIdent() == "action"
}

func stringLit(e celast.Expr) (string, bool) {
	if e.Kind() != celast.LiteralKind {
		return "", false
	}
	s, ok := e.AsLiteral().(types.String)
	return string(s), ok
}

func dedupe(s []string) []string {
	sort.Strings(s)
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

func intersect(a, b []string) []string {
	out := []string{}
	for _, x := range a {
		for _, y := range b {
			if x == y {
				out = append(out, x)
			}
		}
	}
	return out
}

// index builds the per-action-type rule lists.
func (c *compiler) index() {
	p := c.p
	pinned := map[string]bool{}
	for _, r := range p.rules {
		for _, t := range r.types {
			pinned[t] = true
		}
	}
	for t := range p.schemas {
		pinned[t] = true
	}
	for _, r := range p.rules {
		if r.types == nil {
			p.anyType = append(p.anyType, r)
		}
	}
	for t := range pinned {
		var list []*compiledRule
		for _, r := range p.rules {
			if r.types == nil || contains(r.types, t) {
				list = append(list, r)
			}
		}
		p.byType[t] = list
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// estimator bounds the sizes of the inputs for static cost estimates: the
// request's by its size limit, the history by MaxHistory, and the data
// documents by their actual size.
type estimator struct {
	maxHistory uint64
	data       map[string]any
}

func (e estimator) EstimateSize(n cost.AstNode) *cost.SizeEstimate {
	path := n.Path()
	if len(path) == 0 {
		return nil
	}
	if path[0] == "data" {
		if size, ok := dataSize(e.data, path[1:]); ok {
			s := cost.FixedSizeEstimate(size)
			return &s
		}
	}
	if len(path) >= 2 && path[0] == "session" && path[1] == "history" {
		if len(path) == 2 {
			s := cost.RangedSizeEstimate(0, e.maxHistory)
			return &s
		}
	}
	s := cost.RangedSizeEstimate(0, maxInputSize)
	return &s
}

func (e estimator) EstimateCallCost(function, overloadID string, target *cost.AstNode, args []cost.AstNode) *cost.CallEstimate {
	if isHelperOverload(overloadID) {
		// A ledger answers from an index; a HistoryState scans the history.
		return &cost.CallEstimate{CostEstimate: cost.Estimate{Min: 1, Max: 10 * e.maxHistory}}
	}
	return nil
}

// helperOverloads are the overload ids of the stateful helpers.
var helperOverloads = func() map[string]bool {
	m := map[string]bool{}
	for _, sc := range allScopes {
		for _, h := range []string{"succeeded", "count", "total"} {
			m[helperOverload(sc, h)] = true
		}
	}
	return m
}()

func isHelperOverload(id string) bool { return helperOverloads[id] }

// helperTrackers charge the session helpers for the history they scan.
func helperTrackers() []cost.TrackerOption {
	charge := func(args []ref.Val, _ ref.Val) *uint64 {
		n := uint64(1)
		if s, ok := args[0].(*scopeVal); ok && s.req.State == nil {
			n += 10 * uint64(len(s.req.Session.History))
		}
		return &n
	}
	var out []cost.TrackerOption
	for id := range helperOverloads {
		out = append(out, cost.OverloadTracker(id, charge))
	}
	return out
}

// digest hashes the policy's sources in a canonical listing.
func digest(sources []Source) string {
	sorted := append([]Source(nil), sources...)
	sort.Slice(sorted, func(i, j int) bool { return filepath.Base(sorted[i].Name) < filepath.Base(sorted[j].Name) })
	h := sha256.New()
	for _, s := range sorted {
		// Only the file name: the same files give the same digest wherever they are.
		sum := sha256.Sum256(s.Data)
		fmt.Fprintf(h, "%x  %s\n", sum, filepath.Base(s.Name))
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

func sortErrors(errs ErrorList) {
	sort.SliceStable(errs, func(i, j int) bool {
		a, b := errs[i].Pos, errs[j].Pos
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
}

// constBool reports the value of an expression that folds to a constant bool.
func constBool(env *cel.Env, checked *cel.Ast) (bool, bool) {
	folder, err := cel.NewConstantFoldingOptimizer()
	if err != nil {
		return false, false
	}
	opt, err := cel.NewStaticOptimizer(folder)
	if err != nil {
		return false, false
	}
	folded, iss := opt.Optimize(env, checked)
	if iss != nil && iss.Err() != nil {
		return false, false
	}
	e := folded.NativeRep().Expr()
	if e.Kind() != celast.LiteralKind {
		return false, false
	}
	b, ok := e.AsLiteral().(types.Bool)
	return bool(b), ok
}

// ActionTypes lists the action types the policy names, in its schemas or in
// its rules' preconditions, sorted.
func (p *Policy) ActionTypes() []string {
	out := make([]string, 0, len(p.byType))
	for t := range p.byType {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// dataSize is the size of the data value at path (field names only).
func dataSize(v any, path []string) (uint64, bool) {
	for _, name := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return 0, false
		}
		if v, ok = m[name]; !ok {
			return 0, false
		}
	}
	switch v := v.(type) {
	case []any:
		return uint64(len(v)), true
	case map[string]any:
		return uint64(len(v)), true
	case string:
		return uint64(len(v)), true
	}
	return 0, false
}
