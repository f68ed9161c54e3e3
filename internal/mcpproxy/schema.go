package mcpproxy

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/google/jsonschema-go/jsonschema"
)

// Arguments are validated against the tool's pinned input schema — the
// inputSchema of the definition whose hash is pinned — with the JSON Schema
// validator the MCP Go SDK itself uses (github.com/google/jsonschema-go,
// drafts 2020-12 and 07): types, required, additionalProperties, enum,
// const, minLength/maxLength, pattern (RE2), minimum/maximum and their
// exclusive forms, items, nested objects, allOf/anyOf/oneOf/not. "format"
// is an annotation and not checked. A schema that cannot be compiled (an
// unsupported draft, a remote $ref, which is never fetched, a pattern RE2
// cannot read) makes every call of the tool a refusal: no argument is
// forwarded unchecked. On top of the schema, an argument the schema's
// properties do not name is refused even where additionalProperties would
// allow it, so that every field the upstream receives is one the policy
// author could see in the definition.

// supportedDrafts are the $schema values the validator implements ("" is
// 2020-12).
var supportedDrafts = map[string]bool{
	"": true,
	"https://json-schema.org/draft/2020-12/schema": true,
	"http://json-schema.org/draft-07/schema#":      true,
	"https://json-schema.org/draft-07/schema#":     true,
}

// compileInputSchema prepares a decoded input schema for validation.
func compileInputSchema(schema map[string]any) (*jsonschema.Resolved, error) {
	raw, err := json.Marshal(schema)
	if err != nil {
		return nil, err
	}
	var s jsonschema.Schema
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, err
	}
	if !supportedDrafts[s.Schema] {
		return nil, fmt.Errorf("unsupported $schema %q (drafts 2020-12 and 07 are)", s.Schema)
	}
	// No loader: a $ref outside the schema is an error, never a fetch.
	return s.Resolve(nil)
}

// validate checks args against the tool's compiled input schema.
func (t *tool) validate(args map[string]any) error {
	if t.schemaErr != nil {
		return fmt.Errorf("the input schema of %s cannot be used to check arguments (%v): the tool cannot be called", t.Qualified, t.schemaErr)
	}
	if err := t.schema.Validate(args); err != nil {
		return fmt.Errorf("arguments do not match the input schema of %s: %s", t.Qualified, schemaFailure(err))
	}
	return nil
}

// schemaKeywords are the keywords a validation failure is reported by.
var schemaKeywords = map[string]bool{
	"type": true, "enum": true, "const": true, "multipleOf": true,
	"minimum": true, "maximum": true, "exclusiveMinimum": true, "exclusiveMaximum": true,
	"minLength": true, "maxLength": true, "pattern": true,
	"anyOf": true, "oneOf": true, "allOf": true, "not": true,
	"contains": true, "minContains": true, "maxContains": true,
	"minItems": true, "maxItems": true, "uniqueItems": true,
	"minProperties": true, "maxProperties": true, "required": true,
}

// schemaFailure says where the arguments fail the schema — the schema
// location and the keyword, "/properties/subject: maxLength" — and nothing
// of the value: the validator's own message quotes it, and a value may be
// sensitive (or 5 kB long), while the refusal's message is logged and
// sent. The arguments are in the refusal's raw bytes, where the log keeps
// what the agent sent.
func schemaFailure(err error) string {
	msg, where := err.Error(), "the arguments"
	// The message is "validating <location>: " repeated, innermost last,
	// then "<keyword>: <detail quoting the value>". Only the prefixes are
	// read, front to back, so nothing after the keyword is.
	for strings.HasPrefix(msg, "validating ") {
		loc, rest, ok := strings.Cut(msg[len("validating "):], ": ")
		if !ok {
			break
		}
		where, msg = loc, rest
	}
	if strings.HasPrefix(msg, "unexpected additional properties") {
		return where + ": additionalProperties"
	}
	if kw, _, ok := strings.Cut(msg, ":"); ok && schemaKeywords[kw] {
		return where + ": " + kw
	}
	return where + ": a constraint of the schema"
}
