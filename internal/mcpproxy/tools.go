package mcpproxy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/rulelock/rulelock/internal/ledger"
	"github.com/rulelock/rulelock/internal/strictjson"
)

// Tool names: the spec's character set and length, for the upstream's
// names and the qualified names rulelock exposes.
var (
	toolNameRE     = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)
	upstreamNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)
)

// reservedUpstreams are names no upstream may take: they would read as
// rulelock's own.
var reservedUpstreams = map[string]bool{"rulelock": true, "mcp": true, "system": true}

// tool is one upstream tool as rulelock knows it.
type tool struct {
	Qualified string    // upstream.name, what the agent calls
	Upstream  *upstream // where it runs
	Def       *mcp.Tool // the upstream's definition as last listed
	Hash      string    // sha256:<hex> of the canonical definition
	Canonical []byte    // the canonical definition (what Hash covers)

	// Vetting (vet.go): what the agent sees, and what was found.
	Exposed  *mcp.Tool
	Findings []Finding
	Refused  bool // a finding refuses the tool: no pin exposes it

	props     map[string]bool // the input schema's properties
	required  []string
	schema    *jsonschema.Resolved // the input schema, compiled (schema.go)
	schemaErr error                // why it could not be, when it could not
}

// Ref names the definition a call used, for its decision entry.
func (t *tool) Ref() *ledger.ToolRef {
	return &ledger.ToolRef{Server: t.Upstream.cfg.Name, Name: t.Def.Name, DefinitionSHA256: t.Hash}
}

// definitionHash returns the canonical encoding of the parts of a tool's
// definition that pinning covers — name, title, description, input and
// output schemas, annotations, icons and its _meta — its SHA-256, and the
// decoded definition. A definition that is not strict JSON (keys that
// differ only in case, say) or is too large to decode is hashed as the SDK
// encodes it, and the error says why it cannot be exposed.
func definitionHash(t *mcp.Tool) ([]byte, string, map[string]any, error) {
	raw, err := json.Marshal(t)
	if err != nil {
		return nil, "", nil, err
	}
	v, err := strictjson.Decode(raw, strictjson.Limits{MaxBytes: 4 << 20, MaxDepth: 256})
	if err != nil {
		sum := sha256.Sum256(raw)
		return raw, "sha256:" + hex.EncodeToString(sum[:]), nil, err
	}
	canon, err := strictjson.Canonical(v)
	if err != nil {
		return nil, "", nil, err
	}
	sum := sha256.Sum256(canon)
	m, _ := v.(map[string]any)
	return canon, "sha256:" + hex.EncodeToString(sum[:]), m, nil
}

// newTool checks an upstream definition and returns the tool rulelock
// exposes for it.
func newTool(u *upstream, def *mcp.Tool) (*tool, error) {
	if !toolNameRE.MatchString(def.Name) {
		return nil, fmt.Errorf("upstream %q: tool name %q is not a valid MCP tool name", u.cfg.Name, def.Name)
	}
	q := u.cfg.Name + "." + def.Name
	if !toolNameRE.MatchString(q) {
		return nil, fmt.Errorf("upstream %q: qualified tool name %q is longer than 128 characters", u.cfg.Name, q)
	}
	canon, hash, decoded, err := definitionHash(def)
	if canon == nil {
		return nil, fmt.Errorf("tool %q: definition: %v", q, err)
	}
	t := &tool{Qualified: q, Upstream: u, Def: def, Hash: hash, Canonical: canon, props: map[string]bool{}}
	if err != nil {
		t.Findings = []Finding{{Severity: Refused, Problem: "not strict JSON: " + err.Error()}}
	} else {
		t.expose(decoded, len(canon))
	}
	for _, f := range t.Findings {
		t.Refused = t.Refused || f.Severity == Refused
	}
	schema, ok := asObject(def.InputSchema)
	if !ok || schema["type"] != "object" {
		return nil, fmt.Errorf("tool %q: the input schema is not of type object", q)
	}
	if props, ok := schema["properties"]; ok {
		pm, ok := props.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("tool %q: the input schema's properties are not an object", q)
		}
		for name := range pm {
			t.props[name] = true
		}
	}
	if t.props["type"] {
		// The action's "type" is the tool's name; an argument cannot take it.
		return nil, fmt.Errorf("tool %q: an argument named \"type\" is reserved by rulelock", q)
	}
	if req, ok := schema["required"].([]any); ok {
		for _, r := range req {
			if s, ok := r.(string); ok {
				t.required = append(t.required, s)
			}
		}
		sort.Strings(t.required)
	}
	t.schema, t.schemaErr = compileInputSchema(schema)
	return t, nil
}

// asObject returns a JSON schema given as any value as a decoded object.
func asObject(v any) (map[string]any, bool) {
	if m, ok := v.(map[string]any); ok {
		return m, true
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, false
	}
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return nil, false
	}
	return m, m != nil
}

// expose vets the decoded definition and keeps what the agent will see:
// the repaired definition under the qualified name, without the upstream's
// _meta (its protocol metadata stays upstream).
func (t *tool) expose(decoded map[string]any, size int) {
	clean, findings := vet(decoded, size, t.Upstream.cfg.Limits)
	t.Findings = findings
	delete(clean, "_meta")
	raw, err := json.Marshal(clean)
	d := &mcp.Tool{}
	if err == nil {
		err = json.Unmarshal(raw, d)
	}
	if err != nil {
		t.Findings = append(t.Findings, Finding{Severity: Refused, Problem: "cannot re-encode the definition: " + err.Error()})
		return
	}
	d.Name = t.Qualified
	if d.Title == "" && (d.Annotations == nil || d.Annotations.Title == "") {
		d.Title = t.Def.Name
	}
	t.Exposed = d
}

// exposed is the definition the agent sees: the vetted one, under the
// name the agent calls it by.
func (t *tool) exposed(name string) *mcp.Tool {
	d := *t.Exposed
	d.Name = name
	return &d
}

// checkArguments rejects arguments the pinned input schema does not name,
// missing required ones, and any the schema refuses (schema.go).
func (t *tool) checkArguments(args map[string]any) error {
	var extra []string
	for k := range args {
		if !t.props[k] {
			extra = append(extra, k)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return fmt.Errorf("arguments not in the input schema of %s: %q", t.Qualified, extra)
	}
	for _, r := range t.required {
		if _, ok := args[r]; !ok {
			return fmt.Errorf("missing required argument %q of %s", r, t.Qualified)
		}
	}
	return t.validate(args)
}
