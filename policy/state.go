package policy

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Scope is the set of earlier actions a stateful helper aggregates over.
// The receiver of the helper names it:
//
//	session.total(...)    this agent's actions in this session (session.id)
//	agent.total(...)      this agent's actions, in every session
//	principal.total(...)  the actions of every agent of the agent's principal
//	global.total(...)     every agent's actions
type Scope uint8

// Scopes, narrowest first.
const (
	ScopeSession Scope = iota + 1
	ScopeAgent
	ScopePrincipal
	ScopeGlobal
)

var scopeNames = [...]string{ScopeSession: "session", ScopeAgent: "agent", ScopePrincipal: "principal", ScopeGlobal: "global"}

func (s Scope) String() string {
	if int(s) < len(scopeNames) && scopeNames[s] != "" {
		return scopeNames[s]
	}
	return "scope(" + strconv.Itoa(int(s)) + ")"
}

// ScopeSet is a set of scopes.
type ScopeSet uint8

// Has reports whether s holds sc.
func (s ScopeSet) Has(sc Scope) bool { return s&(1<<sc) != 0 }

// With returns s with sc added.
func (s ScopeSet) With(sc Scope) ScopeSet { return s | 1<<sc }

// Index is what one kind of helper call reads, known when the policy is
// compiled: the earlier actions of Type in a Scope, grouped by the values of
// the match keys Keys (sorted), and for total the numeric Field. A ledger
// that keeps one windowed aggregate per Index and group answers every call
// without looking at the actions one by one, and keeps nothing else of them.
type Index struct {
	Scope Scope
	Type  string
	Keys  []string
	Field string // total's field; "" for count and succeeded
}

// String is the index as a helper call reads it, e.g.
// global.total("transfer", "amount", {"to"}).
func (x *Index) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s(%q", x.Scope, x.Type)
	if x.Field != "" {
		fmt.Fprintf(&b, ", %q", x.Field)
	}
	b.WriteString(", {")
	for i, k := range x.Keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q", k)
	}
	b.WriteString("})")
	return b.String()
}

// Key is the index's identity: equal for equal indexes of any policies.
func (x *Index) Key() string {
	return x.Scope.String() + "\x00" + x.Type + "\x00" + strings.Join(x.Keys, "\x01") + "\x00" + x.Field
}

// Query is one call of a stateful helper.
type Query struct {
	Index  *Index
	Values []any         // the match values, in Index.Keys order
	Window time.Duration // count and total: actions with a time in (Now-Window, Now]
	Now    time.Time     // the request's now
	Want   QueryKind     // what the helper needs
}

// QueryKind says which helper asks.
type QueryKind uint8

// Helpers.
const (
	QueryCount QueryKind = iota + 1
	QueryTotal
	QuerySucceeded
)

// Aggregate answers a Query.
type Aggregate struct {
	Count     int64   // count: allowed actions in the window that are not known to have failed
	Total     float64 // total: the sum of Field over them
	Succeeded bool    // succeeded: one such action, at any time before now, succeeded
}

// State answers the stateful helpers of one request. The gateway's ledger
// implements it from indexes; without one (rulelock eval, policy tests) the
// helpers scan the request's session history (HistoryState).
type State interface {
	Aggregate(q *Query) (Aggregate, error)
}

// StateFunc adapts a function to State.
type StateFunc func(q *Query) (Aggregate, error)

// Aggregate calls f.
func (f StateFunc) Aggregate(q *Query) (Aggregate, error) { return f(q) }

// ErrNoIndex is returned by a State that keeps no index a query needs.
var ErrNoIndex = errors.New("no such index")

// HistoryState answers every scope from one list of earlier actions by
// scanning it: `rulelock eval` and policy tests give the request's
// session.history, which then stands for every scope.
type HistoryState []HistoryEntry

// Aggregate scans h.
func (h HistoryState) Aggregate(q *Query) (Aggregate, error) {
	var a Aggregate
	var vals []float64
	from := q.Now.Add(-q.Window)
	for i := range h {
		e := &h[i]
		if !e.allowed() || e.Time.After(q.Now) || !e.matches(q.Index, q.Values) {
			continue
		}
		if e.Outcome == "success" {
			a.Succeeded = true
		}
		if q.Want == QuerySucceeded || e.Outcome == "failure" || !e.Time.After(from) {
			continue
		}
		a.Count++
		if q.Want == QueryTotal {
			x, ok := Number(e.Action[q.Index.Field])
			if !ok {
				return Aggregate{}, fmt.Errorf("%s: field %q of an earlier %s action is not a number", q.Index, q.Index.Field, q.Index.Type)
			}
			vals = append(vals, x)
		}
	}
	a.Total = SumValues(vals)
	return a, nil
}

// MaxDecimals is the most decimal places an amount may have for totals to
// be summed exactly as decimals.
const MaxDecimals = 9

var pow10 = [MaxDecimals + 1]float64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9}

// maxExact bounds the whole numbers a float64 holds exactly (2^53).
const maxExact = 1 << 53

// Pow10 is 10^d for d in [0, MaxDecimals].
func Pow10(d int) float64 { return pow10[d] }

// DecimalPlaces returns the fewest decimal places d (at most MaxDecimals)
// with which v is written: v·10^d rounds to a whole number below 2^53 that
// gives v back when divided by 10^d (10.5 has 1, 0.1 has 1, 2500 has 0).
func DecimalPlaces(v float64) (int, bool) {
	for d := 0; d <= MaxDecimals; d++ {
		r := math.Round(v * pow10[d])
		if math.Abs(r) >= maxExact {
			return 0, false
		}
		if r/pow10[d] == v {
			return d, true
		}
	}
	return 0, false
}

// SumValues is what total() returns for these values: their exact sum as
// decimals, rounded once to the nearest float64 (so 0.1 + 0.2 is 0.3, and
// the order does not matter), when each has at most MaxDecimals places and
// the sum fits; otherwise their float64 sum in order.
func SumValues(vals []float64) float64 {
	d, abs := 0, 0.0
	exact := true
	for _, v := range vals {
		p, ok := DecimalPlaces(v)
		if !ok {
			exact = false
			break
		}
		d = max(d, p)
		abs += math.Abs(v)
	}
	if exact && abs*pow10[d] < maxExact/2 {
		n := int64(0)
		for _, v := range vals {
			n += int64(math.Round(v * pow10[d]))
		}
		return float64(n) / pow10[d]
	}
	sum := 0.0
	for _, v := range vals {
		sum += v
	}
	return sum
}

// matches reports whether the entry's action has the index's type and the
// match values.
func (e *HistoryEntry) matches(x *Index, values []any) bool {
	t := e.Type
	if t == "" {
		t, _ = e.Action["type"].(string)
	}
	if t != x.Type {
		return false
	}
	for i, k := range x.Keys {
		if !equalValue(e.Action[k], values[i]) {
			return false
		}
	}
	return true
}

// GroupKey encodes match values as one string, equal for values a helper
// treats as equal (numbers by value, strings and booleans exactly); ok is
// false when a value can never match (a list, a map, null, a missing field,
// NaN), and then the action belongs to no group.
func GroupKey(values []any) (key string, ok bool) {
	if len(values) == 0 {
		return "", true
	}
	var b []byte
	for _, v := range values {
		if x, isNum := Number(v); isNum {
			if math.IsNaN(x) {
				return "", false
			}
			if x == 0 {
				x = 0 // -0 and 0 are one value
			}
			b = append(b, 'n')
			b = strconv.AppendUint(b, math.Float64bits(x), 16)
			b = append(b, ';')
			continue
		}
		switch v := v.(type) {
		case string:
			b = append(b, 's')
			b = strconv.AppendInt(b, int64(len(v)), 10)
			b = append(b, ':')
			b = append(b, v...)
		case bool:
			if v {
				b = append(b, 't')
			} else {
				b = append(b, 'f')
			}
		default:
			return "", false
		}
	}
	return string(b), true
}

// Number reads a decoded JSON or CEL-native number.
func Number(v any) (float64, bool) {
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

// Reads is what a policy's rules read of earlier actions: what a ledger
// must keep for it.
type Reads struct {
	// Indexes are the distinct indexes the helpers read.
	Indexes []*Index
	// Succeeded are those of Indexes that succeeded() reads: only for them
	// does it matter whether an action succeeded.
	Succeeded []*Index
	// History: a rule reads the raw session.history list, which then has to
	// keep every field of every action of the session.
	History bool
	// MaxWindow is the longest window a count or total reads.
	MaxWindow time.Duration
}

// Reads reports what the policy's rules read of earlier actions.
func (p *Policy) Reads() Reads { return p.reads }

// ReadsFor reports the scopes the rules for an action type read, and
// whether they read session.history: a decision of that type must see the
// state of those scopes as of its turn.
func (p *Policy) ReadsFor(actionType string) (ScopeSet, bool) {
	rules, ok := p.byType[actionType]
	if !ok {
		rules = p.anyType
	}
	var s ScopeSet
	hist := false
	for _, r := range rules {
		s |= r.scopes
		hist = hist || r.history
	}
	return s, hist
}

// indexSet interns the indexes of one policy by key.
type indexSet struct {
	byKey map[string]*Index
}

func (s *indexSet) intern(x *Index) *Index {
	k := x.Key()
	if old, ok := s.byKey[k]; ok {
		return old
	}
	if s.byKey == nil {
		s.byKey = map[string]*Index{}
	}
	s.byKey[k] = x
	return x
}

func (s *indexSet) sorted() []*Index {
	out := make([]*Index, 0, len(s.byKey))
	for _, x := range s.byKey {
		out = append(out, x)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}
