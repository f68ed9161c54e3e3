package policy

import "fmt"

// lint finds rules that are legal but almost certainly not what the author
// meant: rules that can never apply or never take effect, and stances that
// admit more than they seem to.
func lint(p *Policy) ErrorList {
	var w ErrorList
	warn := func(pos Pos, format string, args ...any) {
		w = append(w, &Error{pos, fmt.Sprintf(format, args...)})
	}
	if p.deflt == Allow && len(p.schemas) == 0 {
		pos := Pos{}
		for _, r := range p.rules {
			pos = Pos{File: r.Pos.File, Line: 1, Col: 1}
			break
		}
		warn(pos, "default: allow without action schemas allows every action type no rule names, including look-alikes of the ones it does")
	}
	for _, r := range p.rules {
		if r.Precondition != nil {
			if v, ok := r.consts[r.Precondition]; ok && !v {
				warn(r.Precondition.Pos, "rule %q never applies: its precondition is always false", r.Name)
			}
		}
		if r.Condition != nil {
			if v, ok := r.consts[r.Condition]; ok && v && r.Outcome != OutcomeAllow {
				warn(r.Condition.Pos, "rule %q never fires: its condition is always true", r.Name)
			}
			if v, ok := r.consts[r.Condition]; ok && !v && r.Outcome == OutcomeAllow {
				warn(r.Condition.Pos, "rule %q never allows: its condition is always false", r.Name)
			}
		}
		if len(p.schemas) > 0 {
			for _, t := range r.types {
				if _, ok := p.schemas[t]; !ok {
					warn(r.Pos, "rule %q names action type %q, which has no action schema: such actions are denied before any rule", r.Name, t)
				}
			}
		}
	}
	// A rule that denies every action of some types unconditionally leaves
	// the allow and approval rules for those types without effect.
	for _, d := range p.rules {
		if d.Outcome != OutcomeDeny || d.Shadow || d.Condition != nil || d.Postcondition != nil || d.pre != nil {
			continue
		}
		for _, r := range p.rules {
			if r == d || r.Outcome == OutcomeDeny || r.Postcondition != nil || !covers(d.types, r.types) {
				continue
			}
			warn(r.Pos, "rule %q never takes effect: rule %q (%s) denies every such action", r.Name, d.Name, d.Pos)
		}
	}
	return w
}

// covers reports whether the action types a include all of b (nil is every type).
func covers(a, b []string) bool {
	if a == nil {
		return true
	}
	if b == nil {
		return false
	}
	for _, t := range b {
		if !contains(a, t) {
			return false
		}
	}
	return true
}
