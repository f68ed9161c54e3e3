package policy

import (
	"reflect"
	"sort"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
)

// sessionTypeName is the CEL type of the `session` variable.
const sessionTypeName = "rulelock.Session"

var sessionType = types.NewObjectType(sessionTypeName)

// sessionVal is the CEL value of `session`: the session and the request's
// `now`, so that windowed helpers need no clock of their own.
type sessionVal struct {
	s   *Session
	now time.Time
	// ordered: 0 not yet known, 1 History is in time order, -1 it is not.
	ordered int8
}

// inTimeOrder reports whether the history is sorted by time (as the
// gateway records it), checked once per evaluation.
func (v *sessionVal) inTimeOrder() bool {
	if v.ordered == 0 {
		v.ordered = 1
		h := v.s.History
		for i := 1; i < len(h); i++ {
			if h[i].Time.Before(h[i-1].Time) {
				v.ordered = -1
				break
			}
		}
	}
	return v.ordered == 1
}

func (v *sessionVal) ConvertToNative(typeDesc reflect.Type) (any, error) {
	return nil, errUnsupported("session cannot be converted to " + typeDesc.String())
}

func (v *sessionVal) ConvertToType(t ref.Type) ref.Val {
	if t == types.TypeType {
		return sessionType
	}
	return types.NewErr("type conversion error from session to %s", t)
}

func (v *sessionVal) Equal(other ref.Val) ref.Val { return types.Bool(other == ref.Val(v)) }
func (v *sessionVal) Type() ref.Type              { return sessionType }
func (v *sessionVal) Value() any                  { return v }

type errUnsupported string

func (e errUnsupported) Error() string { return string(e) }

// sessionFields declares session.id and session.history for the checker and
// reads them at run time.
func sessionFields() map[string]*types.FieldType {
	get := func(f func(*sessionVal) any) ref.FieldGetter {
		return func(target any) (any, error) {
			s, ok := target.(*sessionVal)
			if !ok {
				return nil, errUnsupported("not a session")
			}
			return f(s), nil
		}
	}
	isSet := func(target any) bool { _, ok := target.(*sessionVal); return ok }
	return map[string]*types.FieldType{
		"id": {Type: types.StringType, IsSet: isSet, GetFrom: get(func(s *sessionVal) any { return s.s.ID })},
		"history": {
			Type:    types.NewListType(types.NewMapType(types.StringType, types.DynType)),
			IsSet:   isSet,
			GetFrom: get(func(s *sessionVal) any { return historyList(s.s.History) }),
		},
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

// sessionFunctions are the helpers stateful rules use:
//
//	session.succeeded(type, match)           an earlier allowed action of type whose fields
//	                                         include match succeeded in this session
//	session.count(type, match, window)       allowed actions of type matching match in the window before now
//	session.total(type, field, match, window) the sum of field over those actions
//
// "Allowed" means decided allow or approved and not known to have failed:
// actions still in flight and actions of unknown outcome count against limits.
func sessionFunctions() []cel.EnvOption {
	matchType := cel.MapType(cel.StringType, cel.DynType)
	return []cel.EnvOption{
		cel.Function("succeeded",
			cel.MemberOverload("session_succeeded", []*cel.Type{sessionType, cel.StringType, matchType}, cel.BoolType,
				cel.FunctionBinding(func(args ...ref.Val) ref.Val {
					s, typ, match, err := helperArgs(args[0], args[1], args[2])
					if err != nil {
						return err
					}
					for i := len(s.s.History) - 1; i >= 0; i-- {
						h := &s.s.History[i]
						if h.allowed() && h.Outcome == "success" && !h.Time.After(s.now) && matches(h, typ, match) {
							return types.True
						}
					}
					return types.False
				}))),
		cel.Function("count",
			cel.MemberOverload("session_count", []*cel.Type{sessionType, cel.StringType, matchType, cel.DurationType}, cel.IntType,
				cel.FunctionBinding(func(args ...ref.Val) ref.Val {
					s, typ, match, err := helperArgs(args[0], args[1], args[2])
					if err != nil {
						return err
					}
					n := int64(0)
					s.window(args[3], typ, match, func(*HistoryEntry) { n++ })
					return types.Int(n)
				}))),
		cel.Function("total",
			cel.MemberOverload("session_total", []*cel.Type{sessionType, cel.StringType, cel.StringType, matchType, cel.DurationType}, cel.DoubleType,
				cel.FunctionBinding(func(args ...ref.Val) ref.Val {
					s, typ, match, err := helperArgs(args[0], args[1], args[3])
					if err != nil {
						return err
					}
					field, ok := args[2].(types.String)
					if !ok {
						return types.MaybeNoSuchOverloadErr(args[2])
					}
					sum := 0.0
					var bad ref.Val
					s.window(args[4], typ, match, func(h *HistoryEntry) {
						switch x := h.Action[string(field)].(type) {
						case float64:
							sum += x
						case int64:
							sum += float64(x)
						default:
							bad = types.NewErr("session.total: field %q of an earlier %s action is not a number", field, typ)
						}
					})
					if bad != nil {
						return bad
					}
					return types.Double(sum)
				}))),
	}
}

// field is one key and value of a helper's match map.
type field struct {
	key string
	val any
}

func helperArgs(sv, tv, mv ref.Val) (*sessionVal, string, []field, ref.Val) {
	s, ok := sv.(*sessionVal)
	if !ok {
		return nil, "", nil, types.MaybeNoSuchOverloadErr(sv)
	}
	t, ok := tv.(types.String)
	if !ok {
		return nil, "", nil, types.MaybeNoSuchOverloadErr(tv)
	}
	m, ok := mv.(traits.Mapper)
	if !ok {
		return nil, "", nil, types.MaybeNoSuchOverloadErr(mv)
	}
	var buf [4]field
	match := buf[:0]
	it := m.Iterator()
	for it.HasNext() == types.True {
		k := it.Next()
		ks, ok := k.(types.String)
		if !ok {
			return nil, "", nil, types.NewErr("match keys must be strings")
		}
		match = append(match, field{string(ks), m.Get(k).Value()})
	}
	return s, string(t), match, nil
}

// window calls f for each allowed, not-failed action of type typ matching
// match with a time in (now-window, now].
func (s *sessionVal) window(wv ref.Val, typ string, match []field, f func(*HistoryEntry)) {
	w, _ := wv.(types.Duration)
	from := s.now.Add(-w.Duration)
	hist := s.s.History
	if s.inTimeOrder() {
		// Skip what is older than the window without looking at it.
		hist = hist[sort.Search(len(hist), func(i int) bool { return hist[i].Time.After(from) }):]
	}
	for i := range hist {
		h := &hist[i]
		if !h.allowed() || h.Outcome == "failure" || !h.Time.After(from) || h.Time.After(s.now) {
			continue
		}
		if matches(h, typ, match) {
			f(h)
		}
	}
}

// matches reports whether action has type typ and every field of match.
func matches(h *HistoryEntry, typ string, match []field) bool {
	t := h.Type
	if t == "" {
		t, _ = h.Action["type"].(string)
	}
	if t != typ {
		return false
	}
	action := h.Action
	for _, f := range match {
		if !equalValue(action[f.key], f.val) {
			return false
		}
	}
	return true
}

// equalValue compares a decoded JSON value with a CEL-native one: numbers by
// value whatever their Go type, strings and booleans exactly. Other kinds
// never match (fail closed: a match on a list or map is never satisfied).
func equalValue(a, b any) bool {
	if fa, ok := number(a); ok {
		fb, ok := number(b)
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

func number(v any) (float64, bool) {
	switch v := v.(type) {
	case float64:
		return v, true
	case int64:
		return float64(v), true
	case uint64:
		return float64(v), true
	}
	return 0, false
}
