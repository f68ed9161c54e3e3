package policy

import (
	"errors"
	"sync"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
)

// MayAllow reports whether some request of the action type by the agent
// could be allowed or approved: it is false only when the policy denies
// every such request, whatever the action's fields, the session, the
// instruction or the time. The MCP proxy uses it to hide tools an agent can
// never call; it is an aid to the agent, never a decision — every request is
// still evaluated in full.
//
// The rules for the type are evaluated partially: the agent and the data
// documents are known, everything else is unknown. A deny rule that fires
// whatever the unknowns are makes the answer false; an allow or approval
// rule that may fire (or a default allow) makes it true. It errs towards
// true: the action, action.type included, is unknown to the partial
// evaluation, so a deny rule counts as certain only when its firing follows
// from the agent, the data and the rule index.
func (p *Policy) MayAllow(actionType string, agent Agent) bool {
	if _, ok := p.schemas[actionType]; !ok && len(p.schemas) > 0 {
		return false // unknown_action_type
	}
	rules, ok := p.byType[actionType]
	if !ok {
		rules = p.anyType
	}
	// Only the agent and the data are known: the other scopes' helpers need
	// a request's state, and a call to one fails (unknown to MayAllow).
	req := &Request{Agent: agent, State: StateFunc(func(*Query) (Aggregate, error) { return Aggregate{}, errMayAllow })}
	known := map[string]any{"agent": &newScopes(req, p)[ScopeAgent-1], "data": p.data}
	may := p.deflt == Allow
	for _, r := range rules {
		if r.Shadow || r.post != nil {
			continue
		}
		applies := tri(true)
		if r.Precondition != nil && r.pre != nil {
			applies = p.partial(r, r.Precondition, known)
		}
		if applies == triFalse {
			continue
		}
		holds := triUnknown
		if r.Condition != nil {
			holds = p.partial(r, r.Condition, known)
		}
		switch r.Outcome {
		case OutcomeDeny:
			if applies == triTrue && (r.Condition == nil || holds == triFalse) {
				return false
			}
		case OutcomeRequireApproval:
			if r.Condition == nil || holds != triTrue {
				may = true
			}
		case OutcomeAllow:
			if holds != triFalse {
				may = true
			}
		}
	}
	return may
}

var errMayAllow = errors.New("no state in MayAllow")

// tristate is a partial evaluation's answer.
type tristate int8

const (
	triUnknown tristate = iota
	triTrue
	triFalse
)

func tri(b bool) tristate {
	if b {
		return triTrue
	}
	return triFalse
}

// mayAllowCache holds the partial-evaluation programs, planned on first use.
type mayAllowCache struct {
	mu   sync.Mutex
	prgs map[*Expr]cel.Program
}

// partial evaluates e of r with only known set; errors count as unknown.
func (p *Policy) partial(r *compiledRule, e *Expr, known map[string]any) tristate {
	checked := r.checked[e]
	if checked == nil || r.env == nil {
		return triUnknown
	}
	c := &p.mayAllow
	c.mu.Lock()
	prg, ok := c.prgs[e]
	if !ok {
		var err error
		prg, err = r.env.Program(checked, cel.EvalOptions(cel.OptPartialEval))
		if err != nil {
			prg = nil
		}
		if c.prgs == nil {
			c.prgs = map[*Expr]cel.Program{}
		}
		c.prgs[e] = prg
	}
	c.mu.Unlock()
	if prg == nil {
		return triUnknown
	}
	act, err := r.env.PartialVars(known)
	if err != nil {
		return triUnknown
	}
	out, _, err := prg.Eval(act)
	if err != nil || types.IsUnknown(out) {
		return triUnknown
	}
	if b, ok := out.(types.Bool); ok {
		return tri(bool(b))
	}
	return triUnknown
}

// Data returns the data document of the given name (data.<name> in rules).
func (p *Policy) Data(name string) (any, bool) {
	v, ok := p.docs[name]
	return v, ok
}
