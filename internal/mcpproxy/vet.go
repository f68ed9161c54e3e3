package mcpproxy

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Vetting. An upstream's tool definition is text a language model reads
// as instructions, chosen by whoever runs the upstream. Before an agent
// sees a definition, every string in it — names, titles, descriptions,
// schema keys, enum values, defaults, examples, anywhere in inputSchema,
// outputSchema, annotations, icons and _meta — is checked:
//
//   - Characters a reader cannot see are refused: C0 and C1 controls (but
//     newline and tab), format characters (Unicode category Cf: the Tag
//     block U+E0000–E007F that spells hidden ASCII, bidi controls, zero-
//     width characters, the byte-order mark), variation selectors, other
//     default-ignorable code points (Hangul fillers, the combining grapheme
//     joiner), line and paragraph separators, private-use and unassigned
//     code points. The allowed set is letters, marks, numbers, punctuation,
//     symbols, spaces, newline and tab.
//   - Every string is at most DefinitionLimits.Text bytes, the canonical
//     definition at most DefinitionLimits.Definition bytes, and its JSON
//     nesting at most DefinitionLimits.Depth deep.
//
// Invisible characters in prose — a string-valued "description" or
// "title" outside default, const, enum and examples — are stripped from
// what the agent sees (a repair). Anywhere else they are data the upstream
// matches on (an argument name, an enum value), which cannot be repaired
// without changing the call: the tool is refused. An oversized or too deep
// definition is refused too. A refused tool is never exposed, whatever pins
// it. Visible text that reads like an injected instruction (<IMPORTANT>…)
// cannot be told apart from documentation by characters: it is flagged for
// the administrator who pins, and the default that a tool is quarantined
// until pinned is what keeps it from the agent.

// DefinitionLimits caps an upstream tool definition. The zero value means
// the defaults.
type DefinitionLimits struct {
	Text       int // bytes of any one string or key (default 4096)
	Definition int // bytes of the canonical definition (default 64 KiB)
	Depth      int // JSON nesting depth, the definition object being 1 (default 24)
}

// Default definition limits. The reference filesystem server's longest
// description is 457 bytes, its largest definition 1.3 kB, 11 deep.
const (
	DefaultMaxText       = 4096
	DefaultMaxDefinition = 64 << 10
	DefaultMaxDepth      = 24
)

func (l DefinitionLimits) withDefaults() DefinitionLimits {
	if l.Text <= 0 {
		l.Text = DefaultMaxText
	}
	if l.Definition <= 0 {
		l.Definition = DefaultMaxDefinition
	}
	if l.Depth <= 0 {
		l.Depth = DefaultMaxDepth
	}
	return l
}

// Severity says what a finding does to a tool.
type Severity string

const (
	Refused   Severity = "refused"   // the tool is never exposed
	Sanitised Severity = "sanitised" // the agent sees the text with the characters removed
	Flagged   Severity = "flagged"   // shown to whoever pins; the text is unchanged
)

// Finding is one problem in a tool definition.
type Finding struct {
	Path     string   `json:"path"` // where: inputSchema.properties.path.description
	Severity Severity `json:"severity"`
	Problem  string   `json:"problem"`
}

func (f Finding) String() string { return f.Path + ": " + string(f.Severity) + ": " + f.Problem }

// invisibleClass names the class of a character a reader cannot see, or
// returns "" for a visible one (and for newline and tab).
func invisibleClass(r rune) string {
	switch {
	case r == '\n' || r == '\t':
		return ""
	case r >= 0xE0000 && r <= 0xE007F:
		return "Unicode tag"
	case r == 0x061C || r == 0x200E || r == 0x200F || (r >= 0x202A && r <= 0x202E) || (r >= 0x2066 && r <= 0x2069):
		return "bidi control"
	case r == 0x200B || r == 0x200C || r == 0x200D || r == 0x2060 || r == 0xFEFF:
		return "zero-width"
	case unicode.Is(unicode.Variation_Selector, r):
		return "variation selector"
	case unicode.Is(unicode.Cc, r):
		return "control"
	case unicode.Is(unicode.Cf, r):
		return "format"
	case unicode.Is(unicode.Co, r):
		return "private use"
	case unicode.Is(unicode.Zl, r) || unicode.Is(unicode.Zp, r):
		return "line separator"
	case unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r):
		return "invisible"
	case !unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Zs):
		return "unassigned"
	}
	return ""
}

// invisibles describes the invisible characters of s ("" when none): how
// many of each class, and the ASCII that Tag characters spell.
func invisibles(s string) string {
	counts := map[string]int{}
	var hidden strings.Builder
	for _, r := range s {
		c := invisibleClass(r)
		if c == "" {
			continue
		}
		counts[c]++
		if r >= 0xE0020 && r <= 0xE007E {
			hidden.WriteRune(r - 0xE0000)
		}
	}
	if len(counts) == 0 {
		return ""
	}
	var parts []string
	for _, c := range sortedKeys(counts) {
		parts = append(parts, fmt.Sprintf("%d %s", counts[c], c))
	}
	msg := "invisible characters: " + strings.Join(parts, ", ")
	if hidden.Len() > 0 {
		msg += fmt.Sprintf(" (hidden text %q)", hidden.String())
	}
	return msg
}

// stripInvisible removes the characters invisibleClass names.
func stripInvisible(s string) string {
	return strings.Map(func(r rune) rune {
		if invisibleClass(r) != "" {
			return -1
		}
		return r
	}, s)
}

// injectionRE matches markup that tool-poisoning descriptions use to pose
// as instructions: <IMPORTANT>, <system>, <instructions> ...
var injectionRE = regexp.MustCompile(`(?i)<\s*/?\s*(important|system|instructions?|admin|secret|prompt|context)\b[^>]*>`)

// vet checks the decoded canonical definition def (strictjson values)
// and returns the definition with its prose repaired, and the findings.
// canonicalSize is the length of its canonical encoding.
func vet(def map[string]any, canonicalSize int, lim DefinitionLimits) (map[string]any, []Finding) {
	lim = lim.withDefaults()
	v := &vetter{lim: lim}
	if canonicalSize > lim.Definition {
		v.add("", Refused, fmt.Sprintf("the definition is %d bytes, over the limit of %d", canonicalSize, lim.Definition))
	}
	out, _ := v.walk(def, "", 1, false, "").(map[string]any)
	sort.SliceStable(v.findings, func(i, j int) bool { return v.findings[i].Path < v.findings[j].Path })
	return out, v.findings
}

type vetter struct {
	lim      DefinitionLimits
	findings []Finding
	deep     bool
}

func (v *vetter) add(path string, s Severity, problem string) {
	v.findings = append(v.findings, Finding{Path: path, Severity: s, Problem: problem})
}

// dataKeys hold values, not schema: strings under them are data.
var dataKeys = map[string]bool{"default": true, "const": true, "enum": true, "examples": true, "_meta": true}

// walk returns x with its prose repaired. data is set inside values the
// upstream or the agent may match on; key is x's member name.
func (v *vetter) walk(x any, path string, depth int, data bool, key string) any {
	if depth > v.lim.Depth && !v.deep {
		v.deep = true
		v.add(path, Refused, fmt.Sprintf("nested deeper than %d", v.lim.Depth))
	}
	switch x := x.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for _, k := range sortedKeys(x) {
			p := join(path, k)
			v.checkString(k, p, "key", false)
			out[k] = v.walk(x[k], p, depth+1, data || dataKeys[k], k)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = v.walk(e, fmt.Sprintf("%s[%d]", path, i), depth+1, data, "")
		}
		return out
	case string:
		prose := !data && (key == "description" || key == "title")
		return v.checkString(x, path, "value", prose)
	}
	return x
}

// checkString records s's problems and returns it, repaired when it is
// prose.
func (v *vetter) checkString(s, path, what string, prose bool) string {
	if len(s) > v.lim.Text {
		v.add(path, Refused, fmt.Sprintf("a %s of %d bytes, over the limit of %d", what, len(s), v.lim.Text))
	}
	if !utf8.ValidString(s) {
		v.add(path, Refused, "invalid UTF-8")
		return s
	}
	if prose && injectionRE.MatchString(s) {
		v.add(path, Flagged, fmt.Sprintf("markup that poses as an instruction: %q", injectionRE.FindString(s)))
	}
	msg := invisibles(s)
	switch {
	case msg == "":
		return s
	case prose:
		v.add(path, Sanitised, msg+": removed")
		return stripInvisible(s)
	}
	v.add(path, Refused, fmt.Sprintf("%s in a %s", msg, what))
	return s
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	if isIdent(k) {
		return path + "." + k
	}
	return fmt.Sprintf("%s[%s]", path, renderString(k))
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r == '$' || r == '-' || r < utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsDigit(r))) {
			return false
		}
	}
	return true
}

// renderString quotes s for a terminal: JSON-like, with every character
// invisibleClass names written as \u{XXXX}, and a run of more than 16 of
// one character as \u{XXXX}{×N}, so that what an administrator reads is
// all there is.
func renderString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		n := 1
		for i+n < len(rs) && rs[i+n] == r {
			n++
		}
		if n > 16 {
			// Padding that pushes text out of sight: shown as a count.
			fmt.Fprintf(&b, `\u{%X}{×%d}`, r, n)
			i += n - 1
			continue
		}
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == utf8.RuneError || invisibleClass(r) != "":
			fmt.Fprintf(&b, `\u{%X}`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// Render writes a decoded JSON value (strictjson values) indented, with
// strings quoted by renderString: safe to print, whatever the value holds.
func Render(x any) string {
	var b strings.Builder
	render(&b, x, "")
	return b.String()
}

func render(b *strings.Builder, x any, indent string) {
	switch x := x.(type) {
	case map[string]any:
		if len(x) == 0 {
			b.WriteString("{}")
			return
		}
		b.WriteString("{\n")
		keys := sortedKeys(x)
		for i, k := range keys {
			b.WriteString(indent + "  " + renderString(k) + ": ")
			render(b, x[k], indent+"  ")
			if i < len(keys)-1 {
				b.WriteByte(',')
			}
			b.WriteByte('\n')
		}
		b.WriteString(indent + "}")
	case []any:
		if len(x) == 0 {
			b.WriteString("[]")
			return
		}
		b.WriteString("[\n")
		for i, e := range x {
			b.WriteString(indent + "  ")
			render(b, e, indent+"  ")
			if i < len(x)-1 {
				b.WriteByte(',')
			}
			b.WriteByte('\n')
		}
		b.WriteString(indent + "]")
	case string:
		b.WriteString(renderString(x))
	case nil:
		b.WriteString("null")
	default:
		fmt.Fprint(b, x)
	}
}
