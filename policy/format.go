package policy

import (
	"bytes"
	"strconv"
	"strings"
	"time"
)

// Format returns the canonical text of a parsed file: two-space indentation,
// one blank line between declarations, rule items in the order mode,
// precondition, condition, postcondition, outcome, and comments kept with
// the item they precede. Expressions are kept as written; only the
// indentation of their continuation lines changes. Format of formatted text
// is the identity.
func Format(f *File) []byte {
	var b bytes.Buffer
	for i, d := range f.Decls {
		if i > 0 {
			b.WriteByte('\n')
		}
		writeComments(&b, "", d.comments())
		switch d := d.(type) {
		case *Header:
			formatHeader(&b, d)
		case *Schema:
			formatSchema(&b, d)
		case *Rule:
			formatRule(&b, d)
		}
	}
	if len(f.Trailing) > 0 {
		if len(f.Decls) > 0 {
			b.WriteByte('\n')
		}
		writeComments(&b, "", f.Trailing)
	}
	return b.Bytes()
}

func writeComments(b *bytes.Buffer, indent string, comments []string) {
	for _, c := range comments {
		b.WriteString(indent)
		b.WriteString(c)
		b.WriteByte('\n')
	}
}

func formatHeader(b *bytes.Buffer, h *Header) {
	b.WriteString("policy " + strconv.Quote(h.Name) + " {\n")
	writeComments(b, "  ", h.Inner)
	b.WriteString("  default: " + string(h.Default) + "\n")
	writeComments(b, "  ", h.Tail)
	b.WriteString("}\n")
}

func formatSchema(b *bytes.Buffer, s *Schema) {
	b.WriteString("action " + strconv.Quote(s.Type) + " {\n")
	for _, f := range s.Fields {
		writeComments(b, "  ", f.Comments)
		b.WriteString("  " + f.Name)
		if f.Optional {
			b.WriteByte('?')
		}
		b.WriteString(": " + string(f.Type))
		if f.Sensitive {
			b.WriteString(" sensitive")
		}
		b.WriteByte('\n')
	}
	writeComments(b, "  ", s.Tail)
	b.WriteString("}\n")
}

// ruleItemOrder is the canonical order of a rule's items.
var ruleItemOrder = []string{"mode", "precondition", "condition", "postcondition", "deny", "allow", "require_approval"}

func formatRule(b *bytes.Buffer, r *Rule) {
	kw := "rule"
	if r.Invariant {
		kw = "invariant"
	}
	b.WriteString(kw + " " + strconv.Quote(r.Name) + " {\n")
	comments := map[string][]string{}
	for _, it := range r.items {
		comments[it.key] = it.comments
	}
	for _, key := range ruleItemOrder {
		c, present := comments[key]
		if !present {
			continue
		}
		writeComments(b, "  ", c)
		switch key {
		case "mode":
			mode := "enforce"
			if r.Shadow {
				mode = "shadow"
			}
			b.WriteString("  mode: " + mode + "\n")
		case "precondition":
			writeExpr(b, key, r.Precondition)
		case "condition":
			writeExpr(b, key, r.Condition)
		case "postcondition":
			writeExpr(b, key, r.Postcondition)
		case "deny":
			b.WriteString("  deny: " + strconv.Quote(r.Message) + "\n")
		case "allow":
			if r.Message == "" {
				b.WriteString("  allow\n")
			} else {
				b.WriteString("  allow: " + strconv.Quote(r.Message) + "\n")
			}
		case "require_approval":
			formatApproval(b, r.Approval)
		}
	}
	writeComments(b, "  ", r.Tail)
	b.WriteString("}\n")
}

func writeExpr(b *bytes.Buffer, key string, e *Expr) {
	b.WriteString("  " + key + ": ")
	text := e.Text
	if strings.Contains(text, `"""`) || strings.Contains(text, `'''`) {
		// Triple-quoted strings may span lines: keep the text as is.
		b.WriteString(text + "\n")
		return
	}
	for i, line := range strings.Split(text, "\n") {
		if i > 0 {
			b.WriteString("\n    ")
			line = strings.TrimLeft(line, " \t")
		}
		b.WriteString(strings.TrimRight(line, " \t\r"))
	}
	b.WriteByte('\n')
}

func formatApproval(b *bytes.Buffer, a *ApprovalSpec) {
	b.WriteString("  require_approval {\n")
	writeComments(b, "    ", a.comments)
	b.WriteString("    approvers: " + strconv.Itoa(a.Approvers) + "\n")
	if len(a.Groups) > 0 {
		q := make([]string, len(a.Groups))
		for i, g := range a.Groups {
			q[i] = strconv.Quote(g)
		}
		b.WriteString("    groups: [" + strings.Join(q, ", ") + "]\n")
	}
	if a.Within > 0 {
		b.WriteString("    within: " + formatDuration(a.Within) + "\n")
	}
	if a.Message != "" {
		b.WriteString("    message: " + strconv.Quote(a.Message) + "\n")
	}
	b.WriteString("  }\n")
}

// formatDuration writes d as hours, minutes and seconds without zero parts
// (4h, 1h30m, 90s is 1m30s), which time.ParseDuration reads back.
func formatDuration(d time.Duration) string {
	if d%time.Second != 0 {
		return d.String()
	}
	var b strings.Builder
	h, m, s := d/time.Hour, (d%time.Hour)/time.Minute, (d%time.Minute)/time.Second
	if h > 0 {
		b.WriteString(strconv.FormatInt(int64(h), 10) + "h")
	}
	if m > 0 {
		b.WriteString(strconv.FormatInt(int64(m), 10) + "m")
	}
	if s > 0 {
		b.WriteString(strconv.FormatInt(int64(s), 10) + "s")
	}
	return b.String()
}
