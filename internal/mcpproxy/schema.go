package mcpproxy

import (
	"encoding/json"
	"fmt"

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

// maxSchemaError caps the validator's message, which quotes the value.
const maxSchemaError = 300

// validate checks args against the tool's compiled input schema.
func (t *tool) validate(args map[string]any) error {
	if t.schemaErr != nil {
		return fmt.Errorf("the input schema of %s cannot be used to check arguments (%v): the tool cannot be called", t.Qualified, t.schemaErr)
	}
	if err := t.schema.Validate(args); err != nil {
		msg := err.Error()
		if len(msg) > maxSchemaError {
			msg = msg[:maxSchemaError] + "…"
		}
		return fmt.Errorf("arguments do not match the input schema of %s: %s", t.Qualified, msg)
	}
	return nil
}
