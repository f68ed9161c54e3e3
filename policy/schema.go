package policy

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
)

// provider adds rulelock's object types (the session and one per action
// schema) to CEL's standard types.
type provider struct {
	*types.Registry
	structs map[string]map[string]*types.FieldType
}

func newProvider() (*provider, error) {
	reg, err := types.NewRegistry()
	if err != nil {
		return nil, err
	}
	return &provider{Registry: reg, structs: scopeFields()}, nil
}

func (p *provider) FindStructType(name string) (*types.Type, bool) {
	if _, ok := p.structs[name]; ok {
		return types.NewTypeTypeWithParam(types.NewObjectType(name)), true
	}
	return p.Registry.FindStructType(name)
}

func (p *provider) FindStructFieldNames(name string) ([]string, bool) {
	fields, ok := p.structs[name]
	if !ok {
		return p.Registry.FindStructFieldNames(name)
	}
	names := make([]string, 0, len(fields))
	for n := range fields {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, true
}

func (p *provider) FindStructFieldType(name, field string) (*types.FieldType, bool) {
	if fields, ok := p.structs[name]; ok {
		ft, ok := fields[field]
		return ft, ok
	}
	return p.Registry.FindStructFieldType(name, field)
}

func (p *provider) NewValue(name string, fields map[string]ref.Val) ref.Val {
	if _, ok := p.structs[name]; ok {
		return types.NewErr("%s values cannot be constructed in an expression", name)
	}
	return p.Registry.NewValue(name, fields)
}

// schema is a compiled action schema.
type schema struct {
	decl   *Schema
	cel    *types.Type // the object type rules pinned to this action type see
	fields map[string]*Field
	// sensitive names the fields declared sensitive, sorted.
	sensitive []string
}

// Sensitive returns the names of the fields of actionType's schema that are
// declared sensitive, sorted; nil when there are none or no schema. The
// caller must not modify the slice.
func (p *Policy) Sensitive(actionType string) []string {
	if s, ok := p.schemas[actionType]; ok {
		return s.sensitive
	}
	return nil
}

func schemaTypeName(actionType string) string {
	return "rulelock.action." + strings.NewReplacer("-", "_", ":", "_").Replace(actionType)
}

func celFieldType(t FieldType) *types.Type {
	switch t {
	case TypeString:
		return types.StringType
	case TypeNumber:
		return types.DoubleType
	case TypeInt:
		return types.IntType
	case TypeBool:
		return types.BoolType
	case TypeTimestamp:
		return types.TimestampType
	case TypeList:
		return types.NewListType(types.DynType)
	case TypeMap:
		return types.NewMapType(types.StringType, types.DynType)
	}
	return types.DynType
}

// register declares the schema's object type with the provider.
func (s *schema) register(p *provider) {
	name := schemaTypeName(s.decl.Type)
	s.cel = types.NewObjectType(name)
	fields := map[string]*types.FieldType{
		"type": fieldAccess("type", types.StringType),
	}
	for _, f := range s.decl.Fields {
		fields[f.Name] = fieldAccess(f.Name, celFieldType(f.Type))
	}
	p.structs[name] = fields
}

func fieldAccess(name string, t *types.Type) *types.FieldType {
	return &types.FieldType{
		Type: t,
		IsSet: func(target any) bool {
			m, ok := target.(map[string]any)
			if !ok {
				return false
			}
			_, ok = m[name]
			return ok
		},
		GetFrom: func(target any) (any, error) {
			m, ok := target.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("no such field %q", name)
			}
			v, ok := m[name]
			if !ok {
				return nil, fmt.Errorf("no such field %q", name)
			}
			return v, nil
		},
	}
}

// bind checks an action against the schema and returns the fields as the
// rules see them: int fields as int64, timestamps as time.Time. Unknown
// fields, missing required fields and values of the wrong type are errors.
func (s *schema) bind(fields map[string]any) (map[string]any, error) {
	out := make(map[string]any, len(fields))
	for _, k := range sortedKeys(fields) {
		v := fields[k]
		if k == "type" {
			out[k] = v
			continue
		}
		f, ok := s.fields[k]
		if !ok {
			return nil, fmt.Errorf("action %q has no field %q", s.decl.Type, k)
		}
		bv, err := bindValue(f.Type, v)
		if err != nil && f.Sensitive {
			// The error must not carry the value into a reply.
			err = fmt.Errorf("want %s, got a %s that is not one (the value is sensitive)", f.Type, jsonKind(v))
		}
		if err != nil {
			return nil, fmt.Errorf("action %q field %q: %v", s.decl.Type, k, err)
		}
		out[k] = bv
	}
	for _, f := range s.decl.Fields {
		if _, ok := fields[f.Name]; !ok && !f.Optional {
			return nil, fmt.Errorf("action %q is missing required field %q", s.decl.Type, f.Name)
		}
	}
	return out, nil
}

func bindValue(t FieldType, v any) (any, error) {
	switch t {
	case TypeString:
		if s, ok := v.(string); ok {
			return s, nil
		}
	case TypeNumber:
		if f, ok := v.(float64); ok {
			return f, nil
		}
	case TypeInt:
		if f, ok := v.(float64); ok && f == math.Trunc(f) && math.Abs(f) <= 1<<53 {
			return int64(f), nil
		}
		if _, ok := v.(float64); ok {
			return nil, fmt.Errorf("%v is not a whole number in ±2^53", v)
		}
	case TypeBool:
		if b, ok := v.(bool); ok {
			return b, nil
		}
	case TypeTimestamp:
		if s, ok := v.(string); ok {
			ts, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return nil, fmt.Errorf("%q is not an RFC 3339 time", s)
			}
			return ts.UTC(), nil
		}
	case TypeList:
		if l, ok := v.([]any); ok {
			return l, nil
		}
	case TypeMap:
		if m, ok := v.(map[string]any); ok {
			return m, nil
		}
	case TypeAny:
		return v, nil
	}
	return nil, fmt.Errorf("want %s, got %s", t, jsonKind(v))
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	case []any:
		return "list"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// sortedKeys returns m's keys in order, so that errors are deterministic.
func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
