package mcpproxy

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// Names. A tool's action type — what the policy and the log name — is
// always "upstream.tool": an upstream's name has no dot, so it reads one
// way. The name the agent sees joins the two with Config.NameSeparator.
// The gateway's default is "_" (fs_read_text_file), because model APIs take
// function names of letters, digits, _ and - only (OpenAI, Anthropic and
// Bedrock: ^[a-zA-Z0-9_-]{1,64}$), and agent frameworks pass MCP tool names
// to them unchanged. A separator that can also occur inside names can make
// two tools one name ("a_b"+"c" and "a"+"b_c"): such a collision is refused,
// never resolved by order.

// separatorRE is what a separator may be: one to three of _ - . (the
// characters of tool names that read as punctuation).
var separatorRE = regexp.MustCompile(`^[_.-]{1,3}$`)

// portableNameRE is what the model APIs accept as a function name.
var portableNameRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// DefaultNameSeparator is the separator of the library's zero Config: the
// action type's own form. rulelock's configuration defaults to "_".
const DefaultNameSeparator = "."

func (p *Proxy) separator() string {
	if p.cfg.NameSeparator == "" {
		return DefaultNameSeparator
	}
	return p.cfg.NameSeparator
}

// exposedName is the name the agent sees for the tool whose action type is q.
func (p *Proxy) exposedName(q string) string {
	up, name, _ := strings.Cut(q, ".")
	return up + p.separator() + name
}

// lookupExposed is lookup by the name the agent sees. The qualified name
// is derived, not searched for: an upstream's name has no ".", so the
// exposed name is the upstream's name, the separator and the tool's; at
// most one candidate is listed (checkNames refuses two tools under one
// exposed name). It runs on every tools/call: no scan of every tool.
func (p *Proxy) lookupExposed(name string) (*tool, *quarantine) {
	sep := p.separator()
	for _, u := range p.ups {
		rest, ok := strings.CutPrefix(name, u.cfg.Name+sep)
		if !ok {
			continue
		}
		q := u.cfg.Name + "." + rest
		p.mu.Lock()
		_, listed := p.tools[q]
		p.mu.Unlock()
		if listed {
			return p.lookup(q)
		}
	}
	return nil, nil
}

func checkSeparator(sep string) error {
	if sep != "" && !separatorRE.MatchString(sep) {
		return fmt.Errorf("mcp proxy: name separator %q: give one to three of \"_\", \"-\" and \".\"", sep)
	}
	return nil
}

// collision reports the tool, other than q's, that the agent would see
// under the same name as q, or "".
func (p *Proxy) collision(tools map[string]*tool, q string) string {
	name := p.exposedName(q)
	for other := range tools {
		if other != q && p.exposedName(other) == name {
			return other
		}
	}
	return ""
}

// checkNames refuses tools that the agent would see under one name, and
// warns of names the model APIs refuse.
func (p *Proxy) checkNames() error {
	for _, q := range sortedKeys(p.tools) {
		if other := p.collision(p.tools, q); other != "" {
			pair := []string{q, other}
			sort.Strings(pair)
			return fmt.Errorf("mcp proxy: tools %s and %s would both be called %q by the agent: rename an upstream or choose another name separator",
				pair[0], pair[1], p.exposedName(q))
		}
		if n := p.exposedName(q); !portableNameRE.MatchString(n) {
			p.logger.Warn("tool name is not a valid function name for OpenAI, Anthropic or Bedrock (letters, digits, _ and -, at most 64)", "tool", q, "name", n)
		}
	}
	return nil
}
