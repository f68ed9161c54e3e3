package mcpproxy

import (
	"encoding/json"
	"strings"

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

// loggableArguments is what a refusal of a call to tool name logs of its
// arguments: args, except that the values of the upstream's sensitive
// arguments are replaced by the string "(sensitive)"; null when they cannot
// be read to take them out.
func (p *Proxy) loggableArguments(name string, args json.RawMessage) json.RawMessage {
	u := p.upstreamOf(name)
	if u == nil || len(u.cfg.SensitiveArguments) == 0 {
		return args
	}
	m, err := decodeArguments(args)
	if err != nil {
		return nil
	}
	for _, a := range u.cfg.SensitiveArguments {
		if _, ok := m[a]; ok {
			m[a] = "(sensitive)"
		}
	}
	b, err := strictjson.Canonical(m)
	if err != nil {
		return nil
	}
	return b
}
