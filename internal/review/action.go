package review

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// A Field is one leaf of an action: its path from the root and its value,
// both already escaped for display.
//
// Paths join object keys with "." and array indexes as "[i]"; a key that
// is not made only of ASCII letters, digits, "_" and "-" is quoted, so
// that {"a.b":1} (path "a.b" quoted) and {"a":{"b":1}} (path a.b) differ.
// Values are JSON-shaped: strings quoted with their quotes and
// backslashes escaped, numbers exactly as in the canonical JSON (never
// through a float), true, false, null, and {} or [] for empty containers.
type Field struct {
	Path  string
	Value string
}

// errAction is wrapped by every error Fields returns.
var errAction = errors.New("action is not canonical JSON")

// Fields flattens a JSON object into its leaves, one per Field, keys in
// byte order at every level. It fails on anything but exactly one JSON
// object: trailing data, duplicate keys and invalid UTF-8 are errors, as
// they are when the gateway reads a request, so a malformed action is
// never shown as if it were well formed.
func Fields(action []byte) ([]Field, error) {
	if !json.Valid(action) {
		return nil, fmt.Errorf("%w: invalid JSON", errAction)
	}
	if !utf8Valid(action) {
		return nil, fmt.Errorf("%w: invalid UTF-8", errAction)
	}
	d := json.NewDecoder(bytes.NewReader(action))
	d.UseNumber()
	v, err := decode(d)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errAction, err)
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data", errAction)
	}
	if _, ok := v.(object); !ok {
		return nil, fmt.Errorf("%w: not an object", errAction)
	}
	var out []Field
	flatten("", v, &out)
	return out, nil
}

type member struct {
	key string
	val any
}

type object []member

// decode reads one JSON value: an object (keys sorted), []any, string,
// json.Number, bool or nil.
func decode(d *json.Decoder) (any, error) {
	t, err := d.Token()
	if err != nil {
		return nil, err
	}
	switch t := t.(type) {
	case json.Delim:
		switch t {
		case '{':
			var o object
			seen := map[string]bool{}
			for d.More() {
				k, err := d.Token()
				if err != nil {
					return nil, err
				}
				key := k.(string)
				if seen[key] {
					return nil, fmt.Errorf("duplicate key %q", Escape(key))
				}
				seen[key] = true
				v, err := decode(d)
				if err != nil {
					return nil, err
				}
				o = append(o, member{key, v})
			}
			if _, err := d.Token(); err != nil {
				return nil, err
			}
			slices.SortFunc(o, func(a, b member) int { return strings.Compare(a.key, b.key) })
			return o, nil
		case '[':
			a := []any{}
			for d.More() {
				v, err := decode(d)
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
			if _, err := d.Token(); err != nil {
				return nil, err
			}
			return a, nil
		}
		return nil, fmt.Errorf("unexpected %v", t)
	default:
		return t, nil
	}
}

func flatten(path string, v any, out *[]Field) {
	switch v := v.(type) {
	case object:
		if len(v) == 0 && path != "" {
			*out = append(*out, Field{path, "{}"})
		}
		for _, m := range v {
			p := pathKey(m.key)
			if path != "" {
				p = path + "." + p
			}
			flatten(p, m.val, out)
		}
	case []any:
		if len(v) == 0 {
			*out = append(*out, Field{path, "[]"})
		}
		for i, e := range v {
			flatten(fmt.Sprintf("%s[%d]", path, i), e, out)
		}
	default:
		*out = append(*out, Field{path, Scalar(v)})
	}
}

// Scalar renders a JSON scalar as Fields does.
func Scalar(v any) string {
	switch v := v.(type) {
	case string:
		return Quote(v)
	case json.Number:
		return string(v) // exactly as in the JSON text
	case bool:
		return fmt.Sprint(v)
	case nil:
		return "null"
	}
	panic(fmt.Sprintf("review: unexpected JSON value %T", v))
}

// Quote returns s escaped and in double quotes, with any double quote in
// s escaped as \".
func Quote(s string) string {
	return `"` + strings.ReplaceAll(Escape(s), `"`, `\"`) + `"`
}

func pathKey(k string) string {
	if k == "" {
		return `""`
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return Quote(k)
		}
	}
	return k
}
