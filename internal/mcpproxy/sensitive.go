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

// loggableArguments is what a refusal of a call to tool name (the name the
// agent sent, in the form it sees: upstream, separator, tool) logs of its
// arguments: args, except that the values of sensitive arguments are
// replaced by the string "(sensitive)"; null when they cannot be read to
// take them out. Which arguments are sensitive errs on the side of hiding:
// those of every upstream the name could belong to, and of every upstream
// when it names none.
func (p *Proxy) loggableArguments(name string, args json.RawMessage) json.RawMessage {
	sensitive := p.sensitiveArguments(name)
	if len(sensitive) == 0 {
		return args
	}
	m, err := decodeArguments(args)
	if err != nil {
		return nil
	}
	for _, a := range sensitive {
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

// sensitiveArguments are the sensitive arguments of the upstreams whose
// tools an agent-facing name could name (its prefix is the upstream's name
// and a separator, "." or the configured one), or of all upstreams when
// none matches.
func (p *Proxy) sensitiveArguments(name string) []string {
	var matched, all []string
	found := false
	for _, u := range p.ups {
		all = append(all, u.cfg.SensitiveArguments...)
		if strings.HasPrefix(name, u.cfg.Name+".") || strings.HasPrefix(name, u.cfg.Name+p.separator()) {
			found = true
			matched = append(matched, u.cfg.SensitiveArguments...)
		}
	}
	if found {
		return matched
	}
	return all
}
