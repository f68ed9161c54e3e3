package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/interpreter"
)

// Decision is the result of evaluating a request: what happens to the
// action, why, and every rule that fired.
type Decision struct {
	Decision   Effect      `json:"decision"`
	Reason     string      `json:"reason"` // a stable code: see the Reason* constants
	Rules      []FiredRule `json:"rules"`
	Approval   *Approval   `json:"approval,omitempty"`
	Errors     []RuleError `json:"errors"`
	ActionHash string      `json:"action_hash"`
	Policy     string      `json:"policy"`
}

// Reasons: why the decision is what it is.
const (
	ReasonDeniedByRule      = "denied_by_rule"
	ReasonApprovalRequired  = "approval_required"
	ReasonAllowedByRule     = "allowed_by_rule"
	ReasonDefaultAllow      = "default_allow"
	ReasonDefaultDeny       = "default_deny"
	ReasonCostExceeded      = "cost_exceeded"
	ReasonEvaluationError   = "evaluation_error"
	ReasonSchemaMismatch    = "schema_mismatch"
	ReasonUnknownActionType = "unknown_action_type"
)

// FiredRule is a rule whose outcome fired.
type FiredRule struct {
	Name    string  `json:"name"`
	Outcome Outcome `json:"outcome"`
	Message string  `json:"message"`
	Shadow  bool    `json:"shadow"`
	Error   string  `json:"error,omitempty"` // set when the rule fired because its evaluation failed
}

// Approval is what a require_approval decision needs: every requirement
// must be met. Approvers and Within summarise them (the most approvers, the
// shortest time limit).
type Approval struct {
	Approvers    int           `json:"approvers"`
	Groups       []string      `json:"groups,omitempty"`
	Within       string        `json:"within,omitempty"`
	Requirements []Requirement `json:"requirements"`
}

// Requirement is one require_approval rule's demand.
type Requirement struct {
	Rule      string        `json:"rule"`
	Approvers int           `json:"approvers"`
	Groups    []string      `json:"groups,omitempty"`
	Within    time.Duration `json:"-"`
	Message   string        `json:"message,omitempty"`
}

// MarshalJSON writes Within as a duration string ("4h").
func (r Requirement) MarshalJSON() ([]byte, error) {
	type plain Requirement
	w := ""
	if r.Within > 0 {
		w = formatDuration(r.Within)
	}
	return json.Marshal(struct {
		plain
		Within string `json:"within,omitempty"`
	}{plain(r), w})
}

// UnmarshalJSON reads what MarshalJSON writes: Within as a duration string.
func (r *Requirement) UnmarshalJSON(b []byte) error {
	type plain Requirement
	var w struct {
		plain
		Within string `json:"within,omitempty"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	q := Requirement(w.plain)
	if w.Within != "" {
		d, err := time.ParseDuration(w.Within)
		if err != nil {
			return fmt.Errorf("requirement %q: within: %w", q.Rule, err)
		}
		q.Within = d
	}
	*r = q
	return nil
}

// RuleError records an evaluation that failed; the failure is fail-closed.
type RuleError struct {
	Rule    string `json:"rule,omitempty"`
	Code    string `json:"code"` // cost_exceeded, evaluation_error, schema_mismatch, unknown_action_type
	Message string `json:"message"`
}

// TraceStep is one evaluated expression, for `rulelock eval --explain`.
type TraceStep struct {
	Rule   string `json:"rule"`
	Phase  string `json:"phase"`  // precondition, condition
	Result string `json:"result"` // true, false, or the error
}

// Evaluate decides req. It never fails: every error becomes part of a
// fail-closed decision.
func (p *Policy) Evaluate(req *Request) *Decision {
	return p.evaluate(req, nil)
}

// Explain is Evaluate with a trace of every expression evaluated.
func (p *Policy) Explain(req *Request) (*Decision, []TraceStep) {
	var tr []TraceStep
	d := p.evaluate(req, &tr)
	return d, tr
}

func (p *Policy) evaluate(req *Request, tr *[]TraceStep) *Decision {
	// One allocation holds the decision, the activation and room for the
	// fired rules of a typical request.
	st := &evalState{}
	d := &st.d
	*d = Decision{ActionHash: req.Action.HashString(), Policy: p.digest, Rules: st.fired[:0], Errors: []RuleError{}}
	fields := req.Action.Fields
	if s, ok := p.schemas[req.Action.Type]; ok {
		bound, err := s.bind(fields)
		if err != nil {
			return d.deny(ReasonSchemaMismatch, RuleError{Code: ReasonSchemaMismatch, Message: err.Error()})
		}
		fields = bound
	} else if len(p.schemas) > 0 {
		return d.deny(ReasonUnknownActionType, RuleError{Code: ReasonUnknownActionType,
			Message: fmt.Sprintf("the policy declares action schemas and none for %q", req.Action.Type)})
	}
	rules, ok := p.byType[req.Action.Type]
	if !ok {
		rules = p.anyType
	}
	st.act = activation{req: req, fields: fields, data: p.data, p: p}
	act := &st.act
	var deny, approve, allow bool
	var worst string
	for _, r := range rules {
		if r.post != nil {
			continue
		}
		fired, err := r.fires(act, tr)
		code := ""
		if err != nil {
			code = errorCode(err)
			d.Errors = append(d.Errors, RuleError{Rule: r.Name, Code: code, Message: err.Error()})
			if !r.Shadow && code == ReasonCostExceeded {
				// A rule that ran out of budget denies, whatever its outcome.
				deny, worst = true, code
			}
		}
		if !fired {
			continue
		}
		d.Rules = append(d.Rules, FiredRule{Name: r.Name, Outcome: r.Outcome, Message: r.Message, Shadow: r.Shadow, Error: errString(err)})
		if r.Shadow {
			continue
		}
		switch {
		case err != nil:
			// An error never lets an action through: a deny or approval rule
			// that fails to evaluate denies.
			deny = true
			if worst == "" {
				worst = code
			}
		case r.Outcome == OutcomeDeny:
			deny = true
		case r.Outcome == OutcomeRequireApproval:
			approve = true
			d.addRequirement(r.Rule)
		case r.Outcome == OutcomeAllow:
			allow = true
		}
	}
	switch {
	case deny:
		d.Decision, d.Approval = Deny, nil
		d.Reason = ReasonDeniedByRule
		if worst != "" {
			d.Reason = worst
		}
	case approve:
		d.Decision, d.Reason = RequireApproval, ReasonApprovalRequired
	case allow:
		d.Decision, d.Reason = Allow, ReasonAllowedByRule
	case p.deflt == Allow:
		d.Decision, d.Reason = Allow, ReasonDefaultAllow
	default:
		d.Decision, d.Reason = Deny, ReasonDefaultDeny
	}
	// The decision outlives the evaluation (a gateway keeps it for the
	// retention window); its allocation must not keep the request alive:
	// the agent's instruction, reasoning and history.
	st.act = activation{}
	return d
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// evalState is everything one evaluation allocates.
type evalState struct {
	d     Decision
	act   activation
	fired [4]FiredRule
}

func (d *Decision) deny(reason string, e RuleError) *Decision {
	d.Decision, d.Reason = Deny, reason
	d.Errors = append(d.Errors, e)
	return d
}

func (d *Decision) addRequirement(r *Rule) {
	a := r.Approval
	if d.Approval == nil {
		d.Approval = &Approval{}
	}
	d.Approval.Add(Requirement{Rule: r.Name, Approvers: a.Approvers, Groups: a.Groups, Within: a.Within, Message: a.Message})
}

// Add adds requirement q to a and updates the summary (Approvers, Groups,
// Within), as evaluation does for each require_approval rule that fires.
// A gateway that restores a parked decision from its log entry rebuilds
// the Approval with it.
func (a *Approval) Add(q Requirement) {
	a.Requirements = append(a.Requirements, q)
	if q.Approvers > a.Approvers {
		a.Approvers = q.Approvers
	}
	// The summary names groups only when every requirement restricts them;
	// Requirements says exactly who may approve.
	if len(q.Groups) == 0 || (len(a.Requirements) > 1 && len(a.Groups) == 0) {
		a.Groups = nil
	} else {
		for _, g := range q.Groups {
			if !contains(a.Groups, g) {
				a.Groups = append(a.Groups, g)
			}
		}
	}
	if q.Within > 0 {
		cur, _ := time.ParseDuration(a.Within)
		if cur == 0 || q.Within < cur {
			a.Within = formatDuration(q.Within)
		}
	}
}

// fires evaluates a rule: whether its outcome fires, and the evaluation
// error if that is why.
func (r *compiledRule) fires(act *activation, tr *[]TraceStep) (bool, error) {
	applies := true
	if r.pre != nil {
		v, err := evalBool(r.pre, act)
		trace(tr, r.Name, "precondition", v, err)
		if err != nil {
			// Whether the rule applies is unknown: a deny or approval rule fires,
			// an allow rule does not allow.
			return r.Outcome != OutcomeAllow, err
		}
		applies = v
	}
	if !applies {
		return false, nil
	}
	if r.cond == nil {
		return true, nil
	}
	v, err := evalBool(r.cond, act)
	trace(tr, r.Name, "condition", v, err)
	if err != nil {
		return r.Outcome != OutcomeAllow, err
	}
	if r.Outcome == OutcomeAllow {
		return v, nil
	}
	return !v, nil
}

func trace(tr *[]TraceStep, rule, phase string, v bool, err error) {
	if tr == nil {
		return
	}
	res := fmt.Sprint(v)
	if err != nil {
		res = "error: " + err.Error()
	}
	*tr = append(*tr, TraceStep{Rule: rule, Phase: phase, Result: res})
}

// evalBool evaluates a boolean expression; anything but a bool is an error.
func evalBool(prg cel.Program, act *activation) (bool, error) {
	out, _, err := prg.Eval(act)
	if err != nil {
		return false, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("expression gave %s, not a bool", out.Type().TypeName())
	}
	return bool(b), nil
}

func errorCode(err error) string {
	var ce interpreter.EvalCancelledError
	if errors.As(err, &ce) && ce.Cause == interpreter.CostLimitExceeded {
		return ReasonCostExceeded
	}
	if strings.Contains(err.Error(), "cost limit exceeded") {
		return ReasonCostExceeded
	}
	return ReasonEvaluationError
}

// activation resolves the variables of one request. It is built once per
// request and shared by every rule; each variable is converted on first use,
// so a rule that reads only `action` costs no more than that.
type activation struct {
	req    *Request
	fields map[string]any
	data   ref.Val
	result ref.Val

	scopes *[4]scopeVal
	now    ref.Val
	p      *Policy
}

func newActivation(req *Request, fields map[string]any, p *Policy) *activation {
	return &activation{req: req, fields: fields, data: p.data, p: p}
}

func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case "action":
		// The raw map: CEL reads fields of a map[string]any without wrapping it.
		return a.fields, true
	case "session":
		return a.scope(ScopeSession), true
	case "agent":
		return a.scope(ScopeAgent), true
	case "principal":
		return a.scope(ScopePrincipal), true
	case "global":
		return a.scope(ScopeGlobal), true
	case "instruction":
		return types.String(a.req.Instruction), true
	case "reasoning":
		return types.String(a.req.Reasoning), true
	case "now":
		if a.now == nil {
			a.now = types.Timestamp{Time: a.req.Now}
		}
		return a.now, true
	case "data":
		return a.data, true
	case "result":
		if a.result != nil {
			return a.result, true
		}
	}
	return nil, false
}

func (a *activation) Parent() interpreter.Activation { return nil }

// scope returns the value of a scope variable, made on first use.
func (a *activation) scope(sc Scope) *scopeVal {
	if a.scopes == nil {
		a.scopes = newScopes(a.req, a.p)
	}
	return &a.scopes[sc-1]
}

// Verdict is the result of one postcondition.
type Verdict struct {
	Rule    string `json:"rule"`
	Holds   bool   `json:"holds"`
	Message string `json:"message,omitempty"` // the rule's message when it does not hold
	Shadow  bool   `json:"shadow"`
	Error   string `json:"error,omitempty"`
}

// NoResult is the result of an execution that has none a postcondition can
// read: no reply body, or one that is not JSON. Given to CheckResult, it
// makes every postcondition that reads result fail to evaluate, with Reason
// in its error, and so not hold. A JSON null would not do: has(result.x) is
// false on null without an error, so a postcondition such as
// !has(result.error) would hold of a reply nobody could read.
type NoResult struct {
	Reason string // why there is no result, e.g. "the reply is not JSON"
}

// CheckResult evaluates the postconditions of the rules that apply to req
// against the execution result: a decoded JSON value (map[string]any,
// []any, string, float64, bool or nil), or a NoResult. A postcondition
// that fails to evaluate does not hold.
func (p *Policy) CheckResult(req *Request, result any) []Verdict {
	rules, ok := p.byType[req.Action.Type]
	if !ok {
		rules = p.anyType
	}
	fields := req.Action.Fields
	if s, ok := p.schemas[req.Action.Type]; ok {
		if bound, err := s.bind(fields); err == nil {
			fields = bound
		}
	}
	act := newActivation(req, fields, p)
	if nr, ok := result.(NoResult); ok {
		act.result = types.NewErr("no result: %s", nr.Reason)
	} else {
		act.result = types.DefaultTypeAdapter.NativeToValue(result)
	}
	var out []Verdict
	for _, r := range rules {
		if r.post == nil {
			continue
		}
		if r.pre != nil {
			applies, err := evalBool(r.pre, act)
			if err == nil && !applies {
				continue
			}
		}
		v := Verdict{Rule: r.Name, Shadow: r.Shadow}
		holds, err := evalBool(r.post, act)
		v.Holds = err == nil && holds
		if err != nil {
			v.Error = err.Error()
		}
		if !v.Holds {
			v.Message = r.Message
		}
		out = append(out, v)
	}
	return out
}
