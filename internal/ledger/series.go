package ledger

import (
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/rulelock/rulelock/policy"
)

// fenwick is a binary indexed tree over int64 values that grows at the end:
// prefix sums and point updates in O(log n).
type fenwick []int64

// push appends v.
func (t *fenwick) push(v int64) {
	n := len(*t) + 1
	low := n & -n
	*t = append(*t, v+t.prefix(n-1)-t.prefix(n-low))
}

// add adds v at position i (0-based).
func (t fenwick) add(i int, v int64) {
	for i++; i <= len(t); i += i & -i {
		t[i-1] += v
	}
}

// prefix sums positions [0, i).
func (t fenwick) prefix(i int) int64 {
	s := int64(0)
	for ; i > 0; i -= i & -i {
		s += t[i-1]
	}
	return s
}

// Point flags.
const (
	released  uint8 = 1 << iota // an execution the gateway saw fail: no longer counts
	succeeded                   // counts for succeeded()
)

// maxExact bounds the sum of the magnitudes the sum tree adds, in units of
// its scale: every whole number below 2^53 is a float64, and half of it
// leaves room for rounding (as policy.SumValues).
const maxExact = 1 << 52

// series is the windowed aggregate of one index and one group (one scope
// key and one set of match values): the allowed actions, in time order, with
// their count and, for a total, their field's value. count and total are
// range sums over the window found by binary search; succeeded is a
// counter. Points older than the retention leave from the front. Its time
// never runs back: a point is never timed before the one ahead of it, and a
// window never ends before the latest point (appendPoint, window).
//
// Totals are exact decimal sums: the sum tree holds each value in units of
// 10^-scale (scale: the most decimal places a value of the series has had,
// up to policy.MaxDecimals), so cents and whole dollars alike are summed
// exactly and the answer does not depend on when the series was compacted
// or built; it is what policy.SumValues gives for the window. A series that
// ever holds a value with more places, a huge one or a non-number sums its
// window value by value with policy.SumValues.
type series struct {
	base  int64 // absolute position of times[0]
	off   int   // times[:off] are older than the retention
	times []int64
	flags []uint8
	cnt   fenwick
	// For totals (spec.field != ""):
	vals  []float64
	isum  fenwick // nil once scan is set
	scale int     // isum's unit is 10^-scale
	abs   float64 // the sum of |vals|
	scan  bool
	succ  fenwick // 1 for each point with the succeeded flag
}

// pointBytes estimates the memory of one point.
func (s *series) pointBytes(total bool) int64 {
	if total {
		return 8 + 1 + 8 + 8 + 8 + 8
	}
	return 8 + 1 + 8 + 8
}

const seriesBytes = 160 // the series, its map entry and group key, roughly

// appendPoint adds a point at t (clamped so that times never decrease) and
// returns its absolute position.
func (s *series) appendPoint(t int64, v float64, isNum bool, total bool) int64 {
	if n := len(s.times); n > 0 && t < s.times[n-1] {
		t = s.times[n-1]
	}
	s.times = append(s.times, t)
	s.flags = append(s.flags, 0)
	s.cnt.push(1)
	s.succ.push(0)
	if total {
		if !isNum {
			v = math.NaN()
		}
		s.vals = append(s.vals, v)
		s.abs += math.Abs(v)
		if !s.scan {
			d, ok := policy.DecimalPlaces(v)
			switch {
			case !isNum || !ok || s.abs*policy.Pow10(max(d, s.scale)) >= maxExact:
				s.scan, s.isum = true, nil
			case d > s.scale:
				s.scale = d
				s.resum() // the new value included
			default:
				s.isum.push(s.units(v))
			}
		}
	}
	return s.base + int64(len(s.times)-1)
}

// pos returns the position of absolute point a, or -1 when it left.
func (s *series) pos(a int64) int {
	p := a - s.base
	if p < int64(s.off) || p >= int64(len(s.times)) {
		return -1
	}
	return int(p)
}

// release marks a point as no longer counting.
func (s *series) release(a int64, total bool) {
	p := s.pos(a)
	if p < 0 || s.flags[p]&released != 0 {
		return
	}
	s.flags[p] |= released
	s.cnt.add(p, -1)
	if total && !s.scan {
		s.isum.add(p, -s.units(s.vals[p]))
	}
}

// units is v in the sum tree's unit.
func (s *series) units(v float64) int64 { return int64(math.Round(v * policy.Pow10(s.scale))) }

// resum rebuilds the sum tree from the values, at the series' scale.
func (s *series) resum() {
	s.isum = make(fenwick, 0, len(s.vals))
	for i, v := range s.vals {
		s.isum.push(s.units(v) * countOf(s.flags[i]))
	}
}

// setSucceeded marks a point as succeeded.
func (s *series) setSucceeded(a int64) {
	p := s.pos(a)
	if p < 0 || s.flags[p]&succeeded != 0 {
		return
	}
	s.flags[p] |= succeeded
	s.succ.add(p, 1)
}

// prune drops the points before cutoff and returns how many; it compacts
// the arrays when more than half of them are dropped points.
func (s *series) prune(cutoff int64, total bool) int {
	n := 0
	for s.off < len(s.times) && s.times[s.off] < cutoff {
		s.off++
		n++
	}
	if s.off == len(s.times) && s.off > 0 {
		*s = series{base: s.base + int64(len(s.times))} // as new: nothing left
		return n
	}
	if s.off >= 64 && 2*s.off >= len(s.times) {
		s.compact(total)
	}
	return n
}

// compact rebuilds the arrays without the dropped points.
func (s *series) compact(total bool) {
	old := *s
	*s = series{base: old.base + int64(old.off), scan: old.scan, scale: old.scale}
	live := len(old.times) - old.off
	s.times = append(make([]int64, 0, live), old.times[old.off:]...)
	s.flags = append(make([]uint8, 0, live), old.flags[old.off:]...)
	s.cnt = make(fenwick, 0, live)
	s.succ = make(fenwick, 0, live)
	for _, f := range s.flags {
		s.cnt.push(countOf(f))
		s.succ.push(int64(f&succeeded) / int64(succeeded))
	}
	if total {
		s.vals = append(make([]float64, 0, live), old.vals[old.off:]...)
		for _, v := range s.vals {
			s.abs += math.Abs(v)
		}
		if !s.scan {
			s.resum()
		}
	}
}

func countOf(f uint8) int64 {
	if f&released != 0 {
		return 0
	}
	return 1
}

// window returns positions [lo, hi) of the points in (now-w, now], where
// now is never earlier than the series' latest point: the series' time
// does not run back. appendPoint clamps a point to the latest before it,
// so a decision timed before a point the series holds (a wall clock set
// back, an entry of the log timed before the one ahead of it) would
// otherwise not count that point, nor any other the clamp put after its
// time: the limit would reopen for an hour when the clock is set back an
// hour, live, and a verifier re-deriving the state from a log whose
// entries go back in time would not count them either.
func (s *series) window(now time.Time, w time.Duration) (int, int) {
	if n := len(s.times); n > 0 && s.times[n-1] > now.UnixNano() {
		now = time.Unix(0, s.times[n-1])
	}
	from, to := now.Add(-w).UnixNano(), now.UnixNano()
	live := s.times[s.off:]
	lo := sort.Search(len(live), func(i int) bool { return live[i] > from })
	hi := sort.Search(len(live), func(i int) bool { return live[i] > to })
	return s.off + lo, s.off + max(lo, hi)
}

// aggregate answers a query from the series.
func (s *series) aggregate(q *policy.Query) (policy.Aggregate, error) {
	var a policy.Aggregate
	lo, hi := s.window(q.Now, q.Window)
	if q.Want == policy.QuerySucceeded {
		a.Succeeded = s.succ.prefix(hi)-s.succ.prefix(lo) > 0
		return a, nil
	}
	a.Count = s.cnt.prefix(hi) - s.cnt.prefix(lo)
	if q.Want != policy.QueryTotal {
		return a, nil
	}
	if !s.scan {
		a.Total = float64(s.isum.prefix(hi)-s.isum.prefix(lo)) / policy.Pow10(s.scale)
		return a, nil
	}
	vals := make([]float64, 0, hi-lo)
	for p := lo; p < hi; p++ {
		if s.flags[p]&released != 0 {
			continue
		}
		v := s.vals[p]
		if math.IsNaN(v) {
			return policy.Aggregate{}, fmt.Errorf("field %q of an earlier %s action is not a number", q.Index.Field, q.Index.Type)
		}
		vals = append(vals, v)
	}
	a.Total = policy.SumValues(vals)
	return a, nil
}
