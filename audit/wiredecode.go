package audit

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// parseWire parses an encoded entry into w. It is a small JSON parser for
// exactly the entry's shape; it need not reject every non-canonical form,
// because DecodeEntry re-encodes the result and compares the bytes: the
// encoding is injective, so a match means w is the one value b encodes.
func parseWire(b []byte, w *wireEntry) error {
	p := &wireParser{b: b}
	return p.parse(w)
}

func (p *wireParser) parse(w *wireEntry) error {
	last := ""
	err := p.object(func(k string) error {
		// The encoding sorts members: out of order or repeated is not an
		// entry (DecodeVerifiedEntry relies on this, not on re-encoding).
		if k <= last {
			return fmt.Errorf("member %q out of order or repeated", k)
		}
		last = k
		return p.member(k, w)
	})
	if err == nil && p.i != len(p.b) {
		err = errors.New("trailing data")
	}
	if err != nil {
		return fmt.Errorf("offset %d: %w", p.i, err)
	}
	return nil
}

type wireParser struct {
	b []byte
	i int
	// With alias set, strings without escapes point into b (which must
	// then outlive them and not change), and fields come from the fields
	// slice's spare capacity: for entryChecker, which keeps nothing.
	alias   bool
	fields  []Field
	scratch []byte
	sha     Digest
}

func (p *wireParser) member(k string, w *wireEntry) error {
	var err error
	switch k {
	case "action":
		w.Action, err = p.field()
	case "action_sha256":
		if p.alias {
			w.ActionSHA256, err = &p.sha, p.digestInto(&p.sha)
		} else {
			w.ActionSHA256, err = p.digest()
		}
	case "agent":
		w.Agent, err = p.str()
	case "approver":
		w.Approver, err = p.str()
	case "attestation":
		w.Attestation, err = p.str()
	case "collateral":
		w.Collateral, err = p.bytes()
	case "evidence":
		w.Evidence, err = p.bytes()
	case "provider":
		w.Provider, err = p.str()
	case "bundle_digest":
		w.BundleDigest, err = p.str()
	case "closes":
		var n int64
		n, err = p.int()
		w.Closes = &n
	case "decision":
		w.Decision, err = p.str()
	case "engine_version":
		w.EngineVersion, err = p.str()
	case "instruction":
		w.Instruction, err = p.field()
	case "kind":
		var s string
		s, err = p.str()
		w.Kind = Kind(s)
	case "message":
		w.Message, err = p.str()
	case "postconditions":
		err = p.array(func() error {
			var v Verdict
			err := p.object(func(k string) error {
				var err error
				switch k {
				case "error":
					v.Error, err = p.str()
				case "holds":
					v.Holds, err = p.bool()
				case "message":
					v.Message, err = p.str()
				case "rule":
					v.Rule, err = p.str()
				case "shadow":
					v.Shadow, err = p.bool()
				default:
					err = fmt.Errorf("unknown member %q", k)
				}
				return err
			})
			w.Postconditions = append(w.Postconditions, v)
			return err
		})
	case "raw":
		w.Raw, err = p.field()
	case "new_key":
		w.NewKey, err = p.str()
	case "old_key":
		w.OldKey, err = p.str()
	case "reasoning":
		w.Reasoning, err = p.field()
	case "request_id":
		w.RequestID, err = p.str()
	case "result":
		w.Result, err = p.field()
	case "rules":
		err = p.array(func() error {
			var r Rule
			err := p.object(func(k string) error {
				var err error
				switch k {
				case "message":
					r.Message, err = p.str()
				case "name":
					r.Name, err = p.str()
				case "outcome":
					r.Outcome, err = p.str()
				case "shadow":
					r.Shadow, err = p.bool()
				default:
					err = fmt.Errorf("unknown member %q", k)
				}
				return err
			})
			w.Rules = append(w.Rules, r)
			return err
		})
	case "session":
		w.Session, err = p.str()
	case "signature":
		var s string
		if s, err = p.str(); err == nil {
			w.Signature, err = base64.StdEncoding.Strict().DecodeString(s)
		}
	case "signers":
		err = p.array(func() error {
			s, err := p.str()
			w.Signers = append(w.Signers, s)
			return err
		})
	case "state":
		w.State, err = p.field()
	case "status":
		w.Status, err = p.str()
	case "time":
		w.Time, err = p.str()
	case "v":
		var n int64
		n, err = p.int()
		w.V = int(n)
	default:
		err = fmt.Errorf("unknown member %q", k)
	}
	return err
}

func (p *wireParser) expect(c byte) error {
	if p.i >= len(p.b) || p.b[p.i] != c {
		return fmt.Errorf("want %q", c)
	}
	p.i++
	return nil
}

func (p *wireParser) peek(c byte) bool { return p.i < len(p.b) && p.b[p.i] == c }

// object parses {"k":v,...}, calling member after each key and colon.
func (p *wireParser) object(member func(string) error) error {
	if err := p.expect('{'); err != nil {
		return err
	}
	if p.peek('}') {
		p.i++
		return nil
	}
	for {
		k, err := p.str()
		if err != nil {
			return err
		}
		if err := p.expect(':'); err != nil {
			return err
		}
		if err := member(k); err != nil {
			return err
		}
		if p.peek(',') {
			p.i++
			continue
		}
		return p.expect('}')
	}
}

func (p *wireParser) array(elem func() error) error {
	if err := p.expect('['); err != nil {
		return err
	}
	if p.peek(']') {
		p.i++
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		if p.peek(',') {
			p.i++
			continue
		}
		return p.expect(']')
	}
}

func (p *wireParser) field() (*Field, error) {
	var f *Field
	if p.alias && len(p.fields) < cap(p.fields) {
		p.fields = p.fields[:len(p.fields)+1]
		f = &p.fields[len(p.fields)-1]
		*f = Field{}
	} else {
		f = &Field{}
	}
	if p.peek('"') {
		s, err := p.str()
		f.Text = s
		return f, err
	}
	var hasSize bool
	err := p.object(func(k string) error {
		var err error
		var d *Digest
		switch k {
		case "hmac":
			if d, err = p.digest(); err == nil {
				f.Commitment = *d
			}
		case "sha256":
			if d, err = p.digest(); err == nil {
				f.Digest = *d
			}
		case "size":
			f.Size, err = p.int()
			hasSize = true
		default:
			err = fmt.Errorf("unknown member %q", k)
		}
		return err
	})
	if err == nil && hasSize && f.Digest.IsZero() {
		err = errors.New("size without sha256")
	}
	return f, err
}

func (p *wireParser) digest() (*Digest, error) {
	d := new(Digest)
	if err := p.digestInto(d); err != nil {
		return nil, err
	}
	return d, nil
}

// digestInto parses a digest: 64 lowercase hex digits in a string.
func (p *wireParser) digestInto(d *Digest) error {
	if err := p.expect('"'); err != nil {
		return err
	}
	const n = 2 * len(Digest{})
	if len(p.b)-p.i < n+1 || p.b[p.i+n] != '"' {
		return fmt.Errorf("digest: want %d lowercase hex digits", n)
	}
	for i := range d {
		hi, ok1 := lowerHex(p.b[p.i+2*i])
		lo, ok2 := lowerHex(p.b[p.i+2*i+1])
		if !ok1 || !ok2 {
			return fmt.Errorf("digest: want %d lowercase hex digits", n)
		}
		d[i] = hi<<4 | lo
	}
	p.i += n + 1
	return nil
}

func lowerHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// int parses an integer; the canonical check (the re-encoding) rejects
// forms such as leading zeros or "-0".
func (p *wireParser) int() (int64, error) {
	neg := p.peek('-')
	if neg {
		p.i++
	}
	j := p.i
	var n uint64
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		if p.i-j >= 19 {
			return 0, errors.New("integer out of range")
		}
		n = n*10 + uint64(p.b[p.i]-'0')
		p.i++
	}
	if p.i == j {
		return 0, errors.New("want an integer")
	}
	if neg {
		if n > 1<<63 {
			return 0, errors.New("integer out of range")
		}
		return -int64(n), nil // 1<<63 wraps to math.MinInt64, as it should
	}
	if n > math.MaxInt64 {
		return 0, errors.New("integer out of range")
	}
	return int64(n), nil
}

func (p *wireParser) bool() (bool, error) {
	switch {
	case len(p.b)-p.i >= 4 && string(p.b[p.i:p.i+4]) == "true":
		p.i += 4
		return true, nil
	case len(p.b)-p.i >= 5 && string(p.b[p.i:p.i+5]) == "false":
		p.i += 5
		return false, nil
	}
	return false, errors.New("want a boolean")
}

// str parses a JSON string.
func (p *wireParser) str() (string, error) {
	if err := p.expect('"'); err != nil {
		return "", err
	}
	start := p.i
	p.plain()
	if p.peek('"') {
		var s string
		if p.alias && p.i > start {
			s = unsafe.String(&p.b[start], p.i-start)
		} else {
			s = string(p.b[start:p.i])
		}
		p.i++
		return s, nil
	}
	// Escapes: unescape into a new buffer, or with alias set onto the end
	// of scratch (strings already taken from it keep their bytes: they are
	// only appended to).
	var buf []byte
	if p.alias {
		buf = p.scratch
	}
	off := len(buf)
	buf = append(buf, p.b[start:p.i]...)
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			if !utf8.Valid(buf[off:]) {
				return "", errors.New("invalid UTF-8 in a string")
			}
			if !p.alias {
				return string(buf), nil
			}
			p.scratch = buf
			if len(buf) == off {
				return "", nil
			}
			return unsafe.String(&buf[off], len(buf)-off), nil
		case c < 0x20:
			return "", errors.New("control character in a string")
		case c != '\\':
			j := p.i
			p.plain()
			buf = append(buf, p.b[j:p.i]...)
			continue
		}
		if p.i+1 >= len(p.b) {
			break
		}
		e := p.b[p.i+1]
		p.i += 2
		switch e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, ok := p.hex4()
			if !ok {
				return "", errors.New("bad \\u escape")
			}
			if utf16.IsSurrogate(r) {
				r2, ok := rune(0), false
				if len(p.b)-p.i >= 6 && p.b[p.i] == '\\' && p.b[p.i+1] == 'u' {
					p.i += 2
					r2, ok = p.hex4()
				}
				if r = utf16.DecodeRune(r, r2); !ok || r == utf8.RuneError {
					return "", errors.New("bad surrogate pair")
				}
			}
			buf = utf8.AppendRune(buf, r)
		default:
			return "", fmt.Errorf("bad escape \\%c", e)
		}
	}
	return "", errors.New("unterminated string")
}

// plain skips string bytes that need no unescaping.
func (p *wireParser) plain() {
	for p.i < len(p.b) && p.b[p.i] != '"' && p.b[p.i] != '\\' && p.b[p.i] >= 0x20 {
		p.i++
	}
}

func (p *wireParser) hex4() (rune, bool) {
	if len(p.b)-p.i < 4 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(p.b[p.i:p.i+4]), 16, 32)
	p.i += 4
	return rune(n), err == nil
}

// bytes parses a standard base64 string (as encoding/json encodes []byte).
func (p *wireParser) bytes() ([]byte, error) {
	s, err := p.str()
	if err != nil {
		return nil, err
	}
	return base64.StdEncoding.Strict().DecodeString(s)
}
