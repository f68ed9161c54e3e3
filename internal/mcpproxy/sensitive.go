package mcpproxy

import (
	"encoding/json"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/rulelock/rulelock/internal/strictjson"
)

// Sensitive returns the arguments of the tool actionType names that are
// kept out of the log (Upstream.SensitiveArguments); give it to the
// gateway as Config.Sensitive.
func (p *Proxy) Sensitive(actionType string) []string {
	if u := p.upstreamOf(actionType); u != nil {
		return u.cfg.SensitiveArguments
	}
	return nil
}

// upstreamOf is the upstream whose tools' qualified names name starts
// with, or nil.
func (p *Proxy) upstreamOf(name string) *upstream {
	prefix, _, ok := strings.Cut(name, ".")
	if !ok {
		return nil
	}
	for _, u := range p.ups {
		if u.cfg.Name == prefix {
			return u
		}
	}
	return nil
}

// loggable is what a refusal of a call logs of its parameters: all of
// them, except the values of the upstream's sensitive arguments, replaced
// by the string "(sensitive)"; nil when the arguments cannot be read to
// take them out.
func (p *Proxy) loggable(params *mcp.CallToolParamsRaw) []byte {
	if params == nil {
		return nil
	}
	u := p.upstreamOf(params.Name)
	if u == nil || len(u.cfg.SensitiveArguments) == 0 {
		raw, _ := json.Marshal(params)
		return raw
	}
	args, err := decodeArguments(params.Arguments)
	if err != nil {
		return nil
	}
	for _, name := range u.cfg.SensitiveArguments {
		if _, ok := args[name]; ok {
			args[name] = "(sensitive)"
		}
	}
	b, err := strictjson.Canonical(args)
	if err != nil {
		return nil
	}
	c := *params
	c.Arguments = b
	raw, _ := json.Marshal(&c)
	return raw
}
