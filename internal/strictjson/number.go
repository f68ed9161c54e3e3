package strictjson

import (
	"math"
	"strconv"
)

// A decimal is a positive number 0.digits × 10^point, with digits free of
// leading and trailing zeros. Shortest float64 representations have at most
// 17 significant digits, so that is all a decimal needs to hold.
type decimal struct {
	digits [maxDigits]byte
	n      int // len(digits) in use
	point  int
}

const maxDigits = 17

// shortest returns the shortest decimal that reads back as f (f finite and not zero),
// as strconv.FormatFloat(f, 'e', -1, 64) computes it.
func shortest(f float64) decimal {
	var buf [32]byte
	b := strconv.AppendFloat(buf[:0], math.Abs(f), 'e', -1, 64) // d[.ddd]e±XX
	var d decimal
	i := 0
	for ; b[i] != 'e'; i++ {
		if b[i] != '.' {
			d.digits[d.n] = b[i]
			d.n++
		}
	}
	exp, _ := strconv.Atoi(string(b[i+1:]))
	d.point = exp + 1
	return d
}

// exact reports whether the JSON number text denotes exactly the value of
// the shortest decimal representation of f, the float64 ParseFloat made of
// it. That is the round trip a number must survive: text → float64 → shortest
// text gives back the same number, so every reader of the canonical form sees
// the value the sender wrote. (Comparing with the exact binary value of f
// instead would reject 0.1, whose float64 is 0.1000000000000000055511151231257827….)
//
// The comparison is on digits, without allocating: text's significant digits
// and decimal point position against those of shortest(f).
func exact(text []byte, f float64) bool {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return false
	}
	var in decimal
	i := 0
	if text[i] == '-' {
		i++
	}
	intDigits, pending, leading := 0, 0, true
	seenPoint := false
	for ; i < len(text) && text[i] != 'e' && text[i] != 'E'; i++ {
		c := text[i]
		if c == '.' {
			seenPoint = true
			continue
		}
		if !seenPoint {
			intDigits++
		}
		switch {
		case c == '0' && leading:
			in.point-- // a leading zero moves the point left relative to the first significant digit
		case c == '0':
			pending++ // maybe a trailing zero; kept only if a nonzero digit follows
		default:
			leading = false
			if in.n+pending+1 > maxDigits {
				return false // more significant digits than any shortest float64 has
			}
			for ; pending > 0; pending-- {
				in.digits[in.n] = '0'
				in.n++
			}
			in.digits[in.n] = c
			in.n++
		}
	}
	if in.n == 0 {
		return f == 0
	}
	if f == 0 {
		return false // a nonzero number that underflowed
	}
	exp := 0
	if i < len(text) {
		i++ // 'e'
		neg := false
		if text[i] == '+' || text[i] == '-' {
			neg = text[i] == '-'
			i++
		}
		for ; i < len(text); i++ {
			if exp < 1e8 { // far beyond float64's range; saturate rather than overflow
				exp = exp*10 + int(text[i]-'0')
			}
		}
		if neg {
			exp = -exp
		}
	}
	in.point += intDigits + exp
	return in == shortest(f)
}

// appendNumber appends f as ECMAScript's Number.prototype.toString writes it
// (ECMA-262, 7.1.12.1 Number::toString), which is what RFC 8785 requires.
// f must be finite.
func appendNumber(dst []byte, f float64) []byte {
	if f == 0 {
		return append(dst, '0') // also for -0
	}
	if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return strconv.AppendInt(dst, int64(f), 10)
	}
	if f < 0 {
		dst = append(dst, '-')
	}
	d := shortest(f)
	digits, k, n := d.digits[:d.n], d.n, d.point
	switch {
	case k <= n && n <= 21: // an integer: the digits, then n-k zeros
		dst = append(dst, digits...)
		for range n - k {
			dst = append(dst, '0')
		}
	case 0 < n && n <= 21: // the point falls inside the digits
		dst = append(dst, digits[:n]...)
		dst = append(dst, '.')
		dst = append(dst, digits[n:]...)
	case -6 < n && n <= 0: // a small fraction: 0.000ddd
		dst = append(dst, "0."...)
		for range -n {
			dst = append(dst, '0')
		}
		dst = append(dst, digits...)
	default: // exponential: d[.ddd]e±x
		dst = append(dst, digits[0])
		if k > 1 {
			dst = append(dst, '.')
			dst = append(dst, digits[1:]...)
		}
		dst = append(dst, 'e')
		if n-1 >= 0 {
			dst = append(dst, '+')
		}
		dst = strconv.AppendInt(dst, int64(n-1), 10)
	}
	return dst
}
