package mcpproxy

import (
	"strings"
	"testing"
)

// TestSchemaFailureQuotesNoValue: the reason a schema refusal gives names
// the schema location and keyword and never the value, which the
// validator's own message quotes.
func TestSchemaFailureQuotesNoValue(t *testing.T) {
	schema := map[string]any{"type": "object", "properties": map[string]any{
		"ssn":  map[string]any{"type": "string", "pattern": "^[0-9]{3}$", "maxLength": 3},
		"n":    map[string]any{"type": "integer", "maximum": 5},
		"tags": map[string]any{"type": "array", "items": map[string]any{"enum": []any{"a", "b"}}},
		"any":  map[string]any{"anyOf": []any{map[string]any{"type": "integer"}, map[string]any{"maxLength": 1}}},
	}, "required": []any{"ssn"}, "additionalProperties": false}
	rs, err := compileInputSchema(schema)
	if err != nil {
		t.Fatal(err)
	}
	const secret = "validating /x: 123-45-6789"
	for _, c := range []struct {
		args map[string]any
		want string
	}{
		{map[string]any{"ssn": secret}, "/properties/ssn: "},
		{map[string]any{"ssn": "123", "n": 77.0}, "/properties/n: maximum"},
		{map[string]any{"ssn": "123", "n": secret}, "/properties/n: type"},
		{map[string]any{"ssn": "123", "tags": []any{secret}}, "/properties/tags/items: enum"},
		{map[string]any{"ssn": "123", "any": secret}, "/properties/any: anyOf"},
		{map[string]any{"ssn": "123", secret: 1.0}, ": additionalProperties"},
		{map[string]any{"n": 1.0}, ": required"},
	} {
		args, want := c.args, c.want
		err := rs.Validate(args)
		if err == nil {
			t.Fatalf("%v: valid", args)
		}
		got := schemaFailure(err)
		if !strings.Contains(got, want) || strings.Contains(got, "123-45") || strings.Contains(got, "77") {
			t.Errorf("%v: %q, want it to name %q and no value (validator: %v)", args, got, want, err)
		}
	}
}
