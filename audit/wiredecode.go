package audit

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// parseWire parses an encoded entry into w. It is a small JSON parser for
// exactly the entry's shape; it need not reject every non-canonical form,
// because DecodeEntry re-encodes the result and compares the bytes: the
// encoding is injective, so a match means w is the one value b encodes.
func parseWire(b []byte, w *wireEntry) error {
	p := &wireParser{b: b}
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
}

func (p *wireParser) member(k string, w *wireEntry) error {
	var err error
	switch k {
	case "action":
		w.Action, err = p.field()
	case "action_sha256":
		w.ActionSHA256, err = p.digest()
	case "agent":
		w.Agent, err = p.str()
	case "approver":
		w.Approver, err = p.str()
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
				case "holds":
					v.Holds, err = p.bool()
				case "message":
					v.Message, err = p.str()
				case "rule":
					v.Rule, err = p.str()
				default:
					err = fmt.Errorf("unknown member %q", k)
				}
				return err
			})
			w.Postconditions = append(w.Postconditions, v)
			return err
		})
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
	if p.peek('"') {
		s, err := p.str()
		return &Field{Text: s}, err
	}
	f := &Field{}
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
	s, err := p.str()
	if err != nil {
		return nil, err
	}
	var d Digest
	if err := d.UnmarshalText([]byte(s)); err != nil {
		return nil, err
	}
	return &d, nil
}

func (p *wireParser) int() (int64, error) {
	j := p.i
	if p.peek('-') {
		p.i++
	}
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
	return strconv.ParseInt(string(p.b[j:p.i]), 10, 64)
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
	for p.i < len(p.b) && p.b[p.i] != '"' && p.b[p.i] != '\\' && p.b[p.i] >= 0x20 {
		p.i++
	}
	if p.peek('"') {
		s := string(p.b[start:p.i])
		p.i++
		return s, nil
	}
	buf := append([]byte(nil), p.b[start:p.i]...)
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			if !utf8.Valid(buf) {
				return "", errors.New("invalid UTF-8 in a string")
			}
			return string(buf), nil
		case c < 0x20:
			return "", errors.New("control character in a string")
		case c != '\\':
			buf = append(buf, c)
			p.i++
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

func (p *wireParser) hex4() (rune, bool) {
	if len(p.b)-p.i < 4 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(p.b[p.i:p.i+4]), 16, 32)
	p.i += 4
	return rune(n), err == nil
}
