package audit

import (
	"encoding/base64"
	"errors"
	"strconv"
	"unicode/utf8"
)

// appendJSON appends the canonical encoding of w: what encoding/json
// produces for it without HTML escaping (a test checks they agree), written
// out by hand because the verifier re-encodes every entry it reads.
func (w *wireEntry) appendJSON(b []byte) ([]byte, error) {
	var err error
	b = append(b, '{')
	first := true
	key := func(k string) {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '"')
		b = append(b, k...)
		b = append(b, '"', ':')
	}
	str := func(k, v string, omitEmpty bool) {
		if err != nil || omitEmpty && v == "" {
			return
		}
		key(k)
		b, err = appendString(b, v)
	}
	field := func(k string, f *Field) {
		if err != nil || f == nil {
			return
		}
		key(k)
		b, err = f.appendJSON(b)
	}
	field("action", w.Action)
	if w.ActionSHA256 != nil {
		key("action_sha256")
		b = appendHex(b, *w.ActionSHA256)
	}
	str("agent", w.Agent, true)
	str("approver", w.Approver, true)
	str("attestation", w.Attestation, true)
	str("bundle_digest", w.BundleDigest, true)
	if w.Closes != nil {
		key("closes")
		b = strconv.AppendInt(b, *w.Closes, 10)
	}
	bytes := func(k string, v []byte) {
		if err != nil || len(v) == 0 {
			return
		}
		key(k)
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, v)
		b = append(b, '"')
	}
	bytes("collateral", w.Collateral)
	str("decision", w.Decision, true)
	str("engine_version", w.EngineVersion, true)
	bytes("evidence", w.Evidence)
	field("instruction", w.Instruction)
	str("kind", string(w.Kind), false)
	str("message", w.Message, true)
	str("new_key", w.NewKey, true)
	str("old_key", w.OldKey, true)
	if len(w.Postconditions) > 0 && err == nil {
		key("postconditions")
		b = append(b, '[')
		for i, v := range w.Postconditions {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '{')
			if v.Error != "" && err == nil {
				b = append(b, `"error":`...)
				b, err = appendString(b, v.Error)
				b = append(b, ',')
			}
			b = append(b, `"holds":`...)
			b = strconv.AppendBool(b, v.Holds)
			if v.Message != "" && err == nil {
				b = append(b, `,"message":`...)
				b, err = appendString(b, v.Message)
			}
			if err == nil {
				b = append(b, `,"rule":`...)
				b, err = appendString(b, v.Rule)
			}
			if v.Shadow {
				b = append(b, `,"shadow":true`...)
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	str("provider", w.Provider, true)
	field("raw", w.Raw)
	field("reasoning", w.Reasoning)
	str("request_id", w.RequestID, true)
	field("result", w.Result)
	if len(w.Rules) > 0 && err == nil {
		key("rules")
		b = append(b, '[')
		for i, r := range w.Rules {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '{')
			if r.Message != "" && err == nil {
				b = append(b, `"message":`...)
				b, err = appendString(b, r.Message)
				b = append(b, ',')
			}
			b = append(b, `"name":`...)
			if err == nil {
				b, err = appendString(b, r.Name)
			}
			b = append(b, `,"outcome":`...)
			if err == nil {
				b, err = appendString(b, r.Outcome)
			}
			if r.Shadow {
				b = append(b, `,"shadow":true`...)
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	str("session", w.Session, true)
	if len(w.Signature) > 0 {
		key("signature")
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, w.Signature)
		b = append(b, '"')
	}
	if len(w.Signers) > 0 && err == nil {
		key("signers")
		b = append(b, '[')
		for i, s := range w.Signers {
			if i > 0 {
				b = append(b, ',')
			}
			if err == nil {
				b, err = appendString(b, s)
			}
		}
		b = append(b, ']')
	}
	field("state", w.State)
	str("status", w.Status, true)
	str("time", w.Time, false)
	key("v")
	b = strconv.AppendInt(b, int64(w.V), 10)
	b = append(b, '}')
	return b, err
}

// appendJSON appends the encoding of a field (see Field.MarshalJSON).
func (f *Field) appendJSON(b []byte) ([]byte, error) {
	switch {
	case !f.Digest.IsZero() && f.Text == "" && f.Commitment.IsZero():
		b = append(b, `{"sha256":`...)
		b = appendHex(b, f.Digest)
		b = append(b, `,"size":`...)
		b = strconv.AppendInt(b, f.Size, 10)
		return append(b, '}'), nil
	case !f.Commitment.IsZero() && f.Text == "" && f.Digest.IsZero():
		b = append(b, `{"hmac":`...)
		b = appendHex(b, f.Commitment)
		return append(b, '}'), nil
	case f.Digest.IsZero() && f.Commitment.IsZero():
		return appendString(b, f.Text)
	}
	return nil, errors.New("field: more than one of text, digest, commitment")
}

func appendHex(b []byte, d Digest) []byte {
	const hexdigits = "0123456789abcdef"
	b = append(b, '"')
	for _, c := range d {
		b = append(b, hexdigits[c>>4], hexdigits[c&15])
	}
	return append(b, '"')
}

// appendString appends s as a JSON string escaped exactly as encoding/json
// does without HTML escaping. Invalid UTF-8 is an error (encoding/json would
// silently replace it).
func appendString(b []byte, s string) ([]byte, error) {
	if !utf8.ValidString(s) {
		return nil, errors.New("invalid UTF-8 in a string")
	}
	const hexdigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexdigits[c>>4], hexdigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexdigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"'), nil
}
