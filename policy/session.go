package policy

import (
	"reflect"
	"sort"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
)

// The CEL types of the scope variables. Each carries the stateful helpers
// (count, total, succeeded) over its scope; session and agent also have
// fields.
var scopeTypeNames = [...]string{
	ScopeSession:   "rulelock.Session",
	ScopeAgent:     "rulelock.Agent",
	ScopePrincipal: "rulelock.Principal",
	ScopeGlobal:    "rulelock.Global",
}

var scopeTypes = [...]*types.Type{
	ScopeSession:   types.NewObjectType(scopeTypeNames[ScopeSession]),
	ScopeAgent:     types.NewObjectType(scopeTypeNames[ScopeAgent]),
	ScopePrincipal: types.NewObjectType(scopeTypeNames[ScopePrincipal]),
	ScopeGlobal:    types.NewObjectType(scopeTypeNames[ScopeGlobal]),
}

// allScopes lists the scopes in order.
var allScopes = [...]Scope{ScopeSession, ScopeAgent, ScopePrincipal, ScopeGlobal}

// scopeVal is the CEL value of a scope variable (session, agent, principal,
// global) for one request: the request, for the fields and for now, so that
// windowed helpers need no clock of their own.
type scopeVal struct {
	scope Scope
	req   *Request
	p     *Policy
}

func (v *scopeVal) ConvertToNative(typeDesc reflect.Type) (any, error) {
	return nil, errUnsupported(v.scope.String() + " cannot be converted to " + typeDesc.String())
}

func (v *scopeVal) ConvertToType(t ref.Type) ref.Val {
	if t == types.TypeType {
		return scopeTypes[v.scope]
	}
	return types.NewErr("type conversion error from %s to %s", v.scope, t)
}

func (v *scopeVal) Equal(other ref.Val) ref.Val { return types.Bool(other == ref.Val(v)) }
func (v *scopeVal) Type() ref.Type              { return scopeTypes[v.scope] }
func (v *scopeVal) Value() any                  { return v }

type errUnsupported string

func (e errUnsupported) Error() string { return string(e) }

// scopeFields declares the fields of the scope types for the checker and
// reads them at run time:
//
//	session.id, session.history
//	agent.id, agent.roles, agent.principal
//	principal.id
func scopeFields() map[string]map[string]*types.FieldType {
	field := func(sc Scope, t *types.Type, f func(*scopeVal) any) *types.FieldType {
		return &types.FieldType{
			Type: t,
			IsSet: func(target any) bool {
				s, ok := target.(*scopeVal)
				return ok && s.scope == sc
			},
			GetFrom: func(target any) (any, error) {
				s, ok := target.(*scopeVal)
				if !ok || s.scope != sc {
					return nil, errUnsupported("not a " + sc.String())
				}
				return f(s), nil
			},
		}
	}
	return map[string]map[string]*types.FieldType{
		scopeTypeNames[ScopeSession]: {
			"id": field(ScopeSession, types.StringType, func(s *scopeVal) any { return s.req.Session.ID }),
			"history": field(ScopeSession, types.NewListType(types.NewMapType(types.StringType, types.DynType)),
				func(s *scopeVal) any { return historyList(s.req.Session.History) }),
		},
		scopeTypeNames[ScopeAgent]: {
			"id":        field(ScopeAgent, types.StringType, func(s *scopeVal) any { return s.req.Agent.ID }),
			"principal": field(ScopeAgent, types.StringType, func(s *scopeVal) any { return s.req.Agent.PrincipalID() }),
			"roles": field(ScopeAgent, types.NewListType(types.StringType), func(s *scopeVal) any {
				if s.req.Agent.Roles == nil {
					return []string{}
				}
				return s.req.Agent.Roles
			}),
		},
		scopeTypeNames[ScopePrincipal]: {
			"id": field(ScopePrincipal, types.StringType, func(s *scopeVal) any { return s.req.Agent.PrincipalID() }),
		},
		scopeTypeNames[ScopeGlobal]: {},
	}
}

// historyList is session.history as CEL sees it: a list of
// {"action", "decision", "outcome", "time"} maps.
func historyList(h []HistoryEntry) []any {
	out := make([]any, len(h))
	for i := range h {
		out[i] = map[string]any{
			"action":   h[i].Action,
			"decision": h[i].Decision,
			"outcome":  h[i].Outcome,
			"time":     h[i].Time,
		}
	}
	return out
}

// Overload ids of the helpers: "<scope>_<helper>".
func helperOverload(sc Scope, helper string) string { return sc.String() + "_" + helper }

// scopeFunctions are the helpers stateful rules use, on each scope:
//
//	S.succeeded(type, match)            an earlier allowed action of type whose fields
//	                                    include match succeeded, in scope S
//	S.count(type, match, window)        allowed actions of type matching match in the window before now
//	S.total(type, field, match, window) the sum of field over those actions
//
// "Allowed" means decided allow or approved and not known to have failed:
// actions still in flight and actions of unknown outcome count against limits.
func scopeFunctions() []cel.EnvOption {
	matchType := cel.MapType(cel.StringType, cel.DynType)
	var succeeded, count, total []cel.FunctionOpt
	for _, sc := range allScopes {
		t := scopeTypes[sc]
		succeeded = append(succeeded, cel.MemberOverload(helperOverload(sc, "succeeded"), []*cel.Type{t, cel.StringType, matchType}, cel.BoolType,
			cel.FunctionBinding(func(args ...ref.Val) ref.Val {
				a, err := aggregate(QuerySucceeded, args[0], args[1], nil, args[2], nil)
				if err != nil {
					return err
				}
				return types.Bool(a.Succeeded)
			})))
		count = append(count, cel.MemberOverload(helperOverload(sc, "count"), []*cel.Type{t, cel.StringType, matchType, cel.DurationType}, cel.IntType,
			cel.FunctionBinding(func(args ...ref.Val) ref.Val {
				a, err := aggregate(QueryCount, args[0], args[1], nil, args[2], args[3])
				if err != nil {
					return err
				}
				return types.Int(a.Count)
			})))
		total = append(total, cel.MemberOverload(helperOverload(sc, "total"), []*cel.Type{t, cel.StringType, cel.StringType, matchType, cel.DurationType}, cel.DoubleType,
			cel.FunctionBinding(func(args ...ref.Val) ref.Val {
				a, err := aggregate(QueryTotal, args[0], args[1], args[2], args[3], args[4])
				if err != nil {
					return err
				}
				return types.Double(a.Total)
			})))
	}
	return []cel.EnvOption{
		cel.Function("succeeded", succeeded...),
		cel.Function("count", count...),
		cel.Function("total", total...),
	}
}

// aggregate runs one helper call: it finds the call's index among the
// policy's and asks the request's state.
func aggregate(kind QueryKind, sv, tv, fv, mv, wv ref.Val) (Aggregate, ref.Val) {
	s, ok := sv.(*scopeVal)
	if !ok {
		return Aggregate{}, types.MaybeNoSuchOverloadErr(sv)
	}
	t, ok := tv.(types.String)
	if !ok {
		return Aggregate{}, types.MaybeNoSuchOverloadErr(tv)
	}
	var fieldName string
	if fv != nil {
		f, ok := fv.(types.String)
		if !ok {
			return Aggregate{}, types.MaybeNoSuchOverloadErr(fv)
		}
		fieldName = string(f)
	}
	m, ok := mv.(traits.Mapper)
	if !ok {
		return Aggregate{}, types.MaybeNoSuchOverloadErr(mv)
	}
	var kbuf [4]string
	var vbuf [4]any
	keys, values := kbuf[:0], vbuf[:0]
	it := m.Iterator()
	for it.HasNext() == types.True {
		k := it.Next()
		ks, ok := k.(types.String)
		if !ok {
			return Aggregate{}, types.NewErr("match keys must be strings")
		}
		keys = append(keys, string(ks))
		values = append(values, m.Get(k).Value())
	}
	if len(keys) > 1 {
		sort.Sort(byKey{keys, values})
	}
	q := Query{Want: kind, Now: s.req.Now}
	if wv != nil {
		w, _ := wv.(types.Duration)
		q.Window = w.Duration
	}
	q.Index = s.p.lookupIndex(s.scope, string(t), keys, fieldName)
	if q.Index == nil {
		// A call the compiler did not see (it checks every call): fail closed.
		return Aggregate{}, types.NewErr("%s.%s(%q): not an index of this policy", s.scope, kind, string(t))
	}
	q.Values = values
	st := s.req.State
	if st == nil {
		st = HistoryState(s.req.Session.History)
	}
	a, err := st.Aggregate(&q)
	if err != nil {
		return Aggregate{}, types.NewErr("%s: %v", q.Index, err)
	}
	return a, nil
}

func (k QueryKind) String() string {
	switch k {
	case QueryCount:
		return "count"
	case QueryTotal:
		return "total"
	case QuerySucceeded:
		return "succeeded"
	}
	return "query"
}

// byKey sorts match keys with their values.
type byKey struct {
	k []string
	v []any
}

func (b byKey) Len() int           { return len(b.k) }
func (b byKey) Less(i, j int) bool { return b.k[i] < b.k[j] }
func (b byKey) Swap(i, j int) {
	b.k[i], b.k[j] = b.k[j], b.k[i]
	b.v[i], b.v[j] = b.v[j], b.v[i]
}

// lookupIndex finds the interned index of a helper call.
func (p *Policy) lookupIndex(sc Scope, typ string, keys []string, field string) *Index {
	for _, x := range p.reads.Indexes {
		if x.Scope == sc && x.Type == typ && x.Field == field && equalStrings(x.Keys, keys) {
			return x
		}
	}
	return nil
}

func equalStrings(a, b []string) bool {
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

// equalValue compares a decoded JSON value with a CEL-native one: numbers by
// value whatever their Go type, strings and booleans exactly. Other kinds
// never match (fail closed: a match on a list or map is never satisfied).
func equalValue(a, b any) bool {
	if fa, ok := Number(a); ok {
		fb, ok := Number(b)
		return ok && fa == fb
	}
	switch a := a.(type) {
	case string:
		b, ok := b.(string)
		return ok && a == b
	case bool:
		b, ok := b.(bool)
		return ok && a == b
	}
	return false
}

// newScopes makes the scope values of one request.
func newScopes(req *Request, p *Policy) *[4]scopeVal {
	return &[4]scopeVal{
		{scope: ScopeSession, req: req, p: p},
		{scope: ScopeAgent, req: req, p: p},
		{scope: ScopePrincipal, req: req, p: p},
		{scope: ScopeGlobal, req: req, p: p},
	}
}
