package policy

import (
	"time"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/types"
)

// stateReads records what expression e of rule r reads of earlier actions:
// the index of every helper call, the scopes, whether it reads
// session.history, and the longest window. A ledger can only keep an index
// it knows before the call, so the type, the match keys, the field and the
// window of a call must be literals; otherwise it is a compile error at the
// call. It reports whether e is acceptable.
func (c *compiler) stateReads(r *compiledRule, e *Expr, checked *cel.Ast) bool {
	native := checked.NativeRep()
	ok := true
	fail := func(at celast.Expr, format string, args ...any) {
		pos := e.Pos
		start := exprStart(at)
		if loc := native.SourceInfo().GetStartLocation(start.ID()); loc.Line() > 0 {
			col := loc.Column()
			if start.Kind() == celast.CallKind {
				col -= len(start.AsCall().FunctionName()) // CEL places a call at its parenthesis
			}
			if loc.Line() == 1 {
				pos.Col += col
			} else {
				pos.Line += loc.Line() - 1
				pos.Col = col + 1
			}
		}
		c.errorf(pos, format, args...)
		ok = false
	}
	scopeOf := func(x celast.Expr) (Scope, bool) {
		t := native.GetType(x.ID())
		if t == nil {
			return 0, false
		}
		for _, sc := range allScopes {
			if t.TypeName() == scopeTypeNames[sc] {
				return sc, true
			}
		}
		return 0, false
	}
	celast.PostOrderVisit(native.Expr(), celast.NewExprVisitor(func(x celast.Expr) {
		switch x.Kind() {
		case celast.SelectKind:
			sel := x.AsSelect()
			if sc, isScope := scopeOf(sel.Operand()); isScope && sc == ScopeSession && sel.FieldName() == "history" {
				r.history = true
			}
		case celast.CallKind:
			call := x.AsCall()
			if !call.IsMemberFunction() {
				return
			}
			sc, isScope := scopeOf(call.Target())
			if !isScope {
				return
			}
			args := call.Args()
			var kind QueryKind
			switch call.FunctionName() {
			case "succeeded":
				kind = QuerySucceeded
			case "count":
				kind = QueryCount
			case "total":
				kind = QueryTotal
			default:
				return
			}
			name := sc.String() + "." + call.FunctionName()
			if e == r.Postcondition {
				// CheckResult runs outside the decision's hold on the
				// scopes: what it read would be neither atomic nor replayed.
				fail(x, "%s: a postcondition sees the result, not earlier actions (check limits in a condition)", name)
				return
			}
			idx := &Index{Scope: sc}
			typ, isLit := stringLit(args[0])
			if !isLit {
				fail(args[0], "%s: the action type must be a string literal (the ledger keeps an index per type)", name)
				return
			}
			idx.Type = typ
			m := 1
			if kind == QueryTotal {
				field, isLit := stringLit(args[1])
				if !isLit {
					fail(args[1], "%s: the field must be a string literal", name)
					return
				}
				idx.Field, m = field, 2
			}
			keys, keysOK := mapLiteralKeys(args[m])
			if !keysOK {
				fail(args[m], "%s: the match must be a map literal with string literal keys, such as {\"to\": action.to}", name)
				return
			}
			idx.Keys = keys
			if kind != QuerySucceeded {
				w, wOK := durationLit(args[m+1])
				if !wOK {
					fail(args[m+1], "%s: the window must be a literal such as duration(\"24h\")", name)
					return
				}
				if w <= 0 {
					fail(args[m+1], "%s: the window must be positive", name)
					return
				}
				c.p.reads.MaxWindow = max(c.p.reads.MaxWindow, w)
			}
			idx = c.indexes.intern(idx)
			if kind == QuerySucceeded {
				c.succeeded[idx] = true
			}
			r.scopes = r.scopes.With(sc)
		}
	}))
	if r.history {
		c.p.reads.History = true
	}
	return ok
}

// mapLiteralKeys returns the sorted keys of a map literal with string
// literal keys.
func mapLiteralKeys(e celast.Expr) ([]string, bool) {
	if e.Kind() != celast.MapKind {
		return nil, false
	}
	var keys []string
	for _, en := range e.AsMap().Entries() {
		if en.Kind() != celast.MapEntryKind {
			return nil, false
		}
		me := en.AsMapEntry()
		if me.IsOptional() {
			return nil, false
		}
		k, ok := stringLit(me.Key())
		if !ok {
			return nil, false
		}
		keys = append(keys, k)
	}
	return dedupe(keys), true
}

// durationLit reads duration("...") with a string literal.
func durationLit(e celast.Expr) (time.Duration, bool) {
	if e.Kind() == celast.LiteralKind {
		if d, ok := e.AsLiteral().(types.Duration); ok {
			return d.Duration, true
		}
		return 0, false
	}
	if e.Kind() != celast.CallKind {
		return 0, false
	}
	call := e.AsCall()
	if call.FunctionName() != "duration" || call.IsMemberFunction() || len(call.Args()) != 1 {
		return 0, false
	}
	s, ok := stringLit(call.Args()[0])
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	return d, err == nil
}

// exprStart is the leftmost part of x, where its text starts: CEL places a
// selection at its dot and a member call at its name.
func exprStart(x celast.Expr) celast.Expr {
	for {
		switch x.Kind() {
		case celast.SelectKind:
			x = x.AsSelect().Operand()
		case celast.CallKind:
			if !x.AsCall().IsMemberFunction() {
				return x
			}
			x = x.AsCall().Target()
		default:
			return x
		}
	}
}
