package policy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Error is a problem at a position in a policy file.
type Error struct {
	Pos Pos
	Msg string
}

func (e *Error) Error() string { return e.Pos.String() + ": " + e.Msg }

// ErrorList is a list of errors, each with its position, in source order.
type ErrorList []*Error

func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// maxFileSize caps one policy file.
const maxFileSize = 4 << 20

// Parse parses one .rules file. The error, if any, is an ErrorList whose
// entries say file:line:col: what.
func Parse(name string, src []byte) (*File, error) {
	p := &parser{file: name, src: src, line: 1, col: 1}
	switch {
	case len(src) > maxFileSize:
		return nil, ErrorList{{Pos{name, 1, 1}, fmt.Sprintf("file is larger than %d bytes", maxFileSize)}}
	case !utf8.Valid(src):
		return nil, ErrorList{{Pos{name, 1, 1}, "file is not valid UTF-8"}}
	}
	f := p.parseFile()
	if len(p.errs) > 0 {
		return nil, p.errs
	}
	return f, nil
}

type parser struct {
	file      string
	src       []byte
	off       int
	line, col int
	errs      ErrorList
	comments  []string // comments seen since the last item
}

// errBail stops parsing after the first syntax error in a declaration.
var errBail = errors.New("bail")

func (p *parser) pos() Pos { return Pos{p.file, p.line, p.col} }

func (p *parser) errorf(pos Pos, format string, args ...any) error {
	p.errs = append(p.errs, &Error{pos, fmt.Sprintf(format, args...)})
	return errBail
}

func (p *parser) peek() byte {
	if p.off < len(p.src) {
		return p.src[p.off]
	}
	return 0
}

func (p *parser) advance() {
	if p.src[p.off] == '\n' {
		p.line++
		p.col = 1
	} else {
		p.col++
	}
	p.off++
}

// skip skips blanks, newlines and comments, collecting the comments.
func (p *parser) skip() {
	for p.off < len(p.src) {
		switch c := p.peek(); {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			p.advance()
		case c == '#' || (c == '/' && p.off+1 < len(p.src) && p.src[p.off+1] == '/'):
			start := p.off
			for p.off < len(p.src) && p.peek() != '\n' {
				p.advance()
			}
			p.comments = append(p.comments, strings.TrimRight(string(p.src[start:p.off]), " \t\r"))
		default:
			return
		}
	}
}

// skipBlanks skips spaces and tabs only.
func (p *parser) skipBlanks() {
	for p.off < len(p.src) && (p.peek() == ' ' || p.peek() == '\t' || p.peek() == '\r') {
		p.advance()
	}
}

func (p *parser) takeComments() []string {
	c := p.comments
	p.comments = nil
	return c
}

func isIdentStart(c byte) bool { return c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isIdentChar(c byte) bool  { return isIdentStart(c) || '0' <= c && c <= '9' }

// ident reads an identifier.
func (p *parser) ident() (string, Pos, error) {
	p.skip()
	pos := p.pos()
	if !isIdentStart(p.peek()) {
		return "", pos, p.errorf(pos, "expected a name, found %s", p.describe())
	}
	start := p.off
	for p.off < len(p.src) && isIdentChar(p.peek()) {
		p.advance()
	}
	return string(p.src[start:p.off]), pos, nil
}

// describe says what is at the current position, for error messages.
func (p *parser) describe() string {
	if p.off >= len(p.src) {
		return "end of file"
	}
	r, _ := utf8.DecodeRune(p.src[p.off:])
	if r == '\n' {
		return "end of line"
	}
	return strconv.QuoteRune(r)
}

func (p *parser) expect(c byte) error {
	p.skip()
	if p.peek() != c {
		return p.errorf(p.pos(), "expected %q, found %s", c, p.describe())
	}
	p.advance()
	return nil
}

// str reads a double-quoted string with Go escapes.
func (p *parser) str() (string, Pos, error) {
	p.skip()
	pos := p.pos()
	if p.peek() != '"' {
		return "", pos, p.errorf(pos, "expected a quoted string, found %s", p.describe())
	}
	start := p.off
	p.advance()
	for {
		if p.off >= len(p.src) || p.peek() == '\n' {
			return "", pos, p.errorf(pos, "string not terminated")
		}
		c := p.peek()
		p.advance()
		switch c {
		case '\\':
			if p.off < len(p.src) && p.peek() != '\n' {
				p.advance()
			}
		case '"':
			s, err := strconv.Unquote(string(p.src[start:p.off]))
			if err != nil {
				return "", pos, p.errorf(pos, "invalid string: %v", err)
			}
			return s, pos, nil
		}
	}
}

// word reads a run of identifier characters and digits (numbers, durations).
func (p *parser) word() (string, Pos) {
	p.skip()
	pos := p.pos()
	start := p.off
	for p.off < len(p.src) && (isIdentChar(p.peek()) || p.peek() == '.') {
		p.advance()
	}
	return string(p.src[start:p.off]), pos
}

// endOfItem requires the rest of the line to be blank or a comment.
func (p *parser) endOfItem() error {
	p.skipBlanks()
	switch c := p.peek(); {
	case c == 0 || c == '\n' || c == '}' || c == '#':
		return nil
	case c == '/' && p.off+1 < len(p.src) && p.src[p.off+1] == '/':
		return nil
	}
	return p.errorf(p.pos(), "unexpected %s after the value (one item per line)", p.describe())
}

func (p *parser) parseFile() *File {
	f := &File{Name: p.file}
	for {
		p.skip()
		if p.off >= len(p.src) {
			f.Trailing = p.takeComments()
			return f
		}
		comments := p.takeComments()
		kw, pos, err := p.ident()
		if err == nil {
			var d Decl
			switch kw {
			case "policy":
				d, err = p.parseHeader(pos)
			case "action":
				d, err = p.parseSchema(pos)
			case "rule", "invariant":
				d, err = p.parseRule(pos, kw == "invariant")
			default:
				err = p.errorf(pos, "unknown declaration %q (want policy, action, rule or invariant)", kw)
			}
			if err == nil {
				setComments(d, comments)
				f.Decls = append(f.Decls, d)
				continue
			}
		}
		// Resynchronise at the next top-level keyword at the start of a line.
		p.recover()
		if len(p.errs) >= 10 {
			return f
		}
	}
}

func setComments(d Decl, c []string) {
	switch d := d.(type) {
	case *Header:
		d.Comments = c
	case *Schema:
		d.Comments = c
	case *Rule:
		d.Comments = c
	}
}

// recover skips to the next line that starts a declaration.
func (p *parser) recover() {
	for p.off < len(p.src) {
		p.advance()
		if p.col != 1 {
			continue
		}
		rest := p.src[p.off:]
		for _, kw := range []string{"policy ", "action ", "rule ", "invariant "} {
			if strings.HasPrefix(string(rest[:min(len(rest), len(kw))]), kw) {
				p.comments = nil
				return
			}
		}
	}
}

func (p *parser) parseHeader(pos Pos) (*Header, error) {
	h := &Header{Pos: pos}
	var err error
	if h.Name, _, err = p.str(); err != nil {
		return nil, err
	}
	if err := p.expect('{'); err != nil {
		return nil, err
	}
	seen := false
	for {
		p.skip()
		if p.peek() == '}' {
			p.advance()
			h.Tail = p.takeComments()
			break
		}
		h.Inner = append(h.Inner, p.takeComments()...)
		key, kpos, err := p.ident()
		if err != nil {
			return nil, err
		}
		if key != "default" {
			return nil, p.errorf(kpos, "unknown policy setting %q (want default)", key)
		}
		if seen {
			return nil, p.errorf(kpos, "default is set twice")
		}
		seen = true
		if err := p.expect(':'); err != nil {
			return nil, err
		}
		v, vpos, err := p.ident()
		if err != nil {
			return nil, err
		}
		switch v {
		case "allow":
			h.Default = Allow
		case "deny":
			h.Default = Deny
		default:
			return nil, p.errorf(vpos, "default must be allow or deny, not %q", v)
		}
		if err := p.endOfItem(); err != nil {
			return nil, err
		}
	}
	if !seen {
		return nil, p.errorf(pos, "policy %q does not say its default (default: deny or default: allow)", h.Name)
	}
	return h, nil
}

func (p *parser) parseSchema(pos Pos) (*Schema, error) {
	s := &Schema{Pos: pos}
	var err error
	if s.Type, _, err = p.str(); err != nil {
		return nil, err
	}
	if err := p.expect('{'); err != nil {
		return nil, err
	}
	for {
		p.skip()
		if p.peek() == '}' {
			p.advance()
			s.Tail = p.takeComments()
			return s, nil
		}
		comments := p.takeComments()
		name, fpos, err := p.ident()
		if err != nil {
			return nil, err
		}
		f := &Field{Pos: fpos, Comments: comments, Name: name}
		if p.peek() == '?' {
			p.advance()
			f.Optional = true
		}
		if err := p.expect(':'); err != nil {
			return nil, err
		}
		tname, tpos, err := p.ident()
		if err != nil {
			return nil, err
		}
		t, ok := fieldTypes[tname]
		if !ok {
			return nil, p.errorf(tpos, "unknown field type %q (want string, number, int, bool, timestamp, list, map or any)", tname)
		}
		f.Type = t
		if p.skipBlanks(); isIdentStart(p.peek()) {
			mod, mpos, _ := p.ident()
			if mod != "sensitive" {
				return nil, p.errorf(mpos, "unknown field modifier %q (want sensitive)", mod)
			}
			f.Sensitive = true
		}
		if err := p.endOfItem(); err != nil {
			return nil, err
		}
		s.Fields = append(s.Fields, f)
	}
}

func (p *parser) parseRule(pos Pos, invariant bool) (*Rule, error) {
	r := &Rule{Pos: pos, Invariant: invariant}
	var err error
	if r.Name, _, err = p.str(); err != nil {
		return nil, err
	}
	if err := p.expect('{'); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for {
		p.skip()
		if p.peek() == '}' {
			p.advance()
			r.Tail = p.takeComments()
			break
		}
		comments := p.takeComments()
		key, kpos, err := p.ident()
		if err != nil {
			return nil, err
		}
		if seen[key] {
			return nil, p.errorf(kpos, "%s is given twice", key)
		}
		seen[key] = true
		if err := p.parseRuleItem(r, key, kpos); err != nil {
			return nil, err
		}
		r.items = append(r.items, item{key: key, comments: comments})
	}
	return r, p.validateRule(r)
}

func (p *parser) parseRuleItem(r *Rule, key string, kpos Pos) error {
	var err error
	switch key {
	case "precondition", "condition", "postcondition":
		if err := p.expect(':'); err != nil {
			return err
		}
		e, err := p.expr()
		if err != nil {
			return err
		}
		switch key {
		case "precondition":
			r.Precondition = e
		case "condition":
			r.Condition = e
		default:
			r.Postcondition = e
		}
		return nil
	case "deny":
		if r.Outcome != "" {
			return p.errorf(kpos, "a rule has one outcome; this one already has %s", r.Outcome)
		}
		r.Outcome = OutcomeDeny
		if err := p.expect(':'); err != nil {
			return err
		}
		if r.Message, _, err = p.str(); err != nil {
			return err
		}
	case "allow":
		if r.Outcome != "" {
			return p.errorf(kpos, "a rule has one outcome; this one already has %s", r.Outcome)
		}
		r.Outcome = OutcomeAllow
		p.skipBlanks()
		if p.peek() == ':' {
			p.advance()
			if r.Message, _, err = p.str(); err != nil {
				return err
			}
		}
	case "require_approval":
		if r.Outcome != "" {
			return p.errorf(kpos, "a rule has one outcome; this one already has %s", r.Outcome)
		}
		r.Outcome = OutcomeRequireApproval
		if r.Approval, err = p.approval(kpos); err != nil {
			return err
		}
		r.Message = r.Approval.Message
		return nil
	case "mode":
		if err := p.expect(':'); err != nil {
			return err
		}
		v, vpos, err := p.ident()
		if err != nil {
			return err
		}
		switch v {
		case "shadow":
			r.Shadow = true
		case "enforce":
		default:
			return p.errorf(vpos, "mode must be enforce or shadow, not %q", v)
		}
	default:
		return p.errorf(kpos, "unknown rule item %q (want precondition, condition, postcondition, deny, allow, require_approval or mode)", key)
	}
	return p.endOfItem()
}

func (p *parser) validateRule(r *Rule) error {
	switch {
	case r.Outcome == "":
		return p.errorf(r.Pos, "rule %q has no outcome (deny, allow or require_approval)", r.Name)
	case r.Invariant && r.Precondition != nil:
		return p.errorf(r.Precondition.Pos, "invariant %q applies to every action and cannot have a precondition", r.Name)
	case r.Postcondition != nil && r.Outcome != OutcomeDeny:
		return p.errorf(r.Postcondition.Pos, "a postcondition rule reports a violation with deny: \"message\", not %s", r.Outcome)
	case r.Postcondition != nil && r.Condition != nil:
		return p.errorf(r.Postcondition.Pos, "rule %q has both a condition and a postcondition; write two rules", r.Name)
	case r.Outcome == OutcomeAllow && r.Condition == nil && r.Precondition == nil:
		return p.errorf(r.Pos, "allow rule %q would allow every action; give it a precondition or a condition", r.Name)
	}
	return nil
}

func (p *parser) approval(pos Pos) (*ApprovalSpec, error) {
	a := &ApprovalSpec{Pos: pos, Approvers: 1}
	if err := p.expect('{'); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for {
		p.skip()
		if p.peek() == '}' {
			p.advance()
			a.comments = append(a.comments, p.takeComments()...)
			return a, p.endOfItem()
		}
		a.comments = append(a.comments, p.takeComments()...)
		key, kpos, err := p.ident()
		if err != nil {
			return nil, err
		}
		if seen[key] {
			return nil, p.errorf(kpos, "%s is given twice", key)
		}
		seen[key] = true
		if err := p.expect(':'); err != nil {
			return nil, err
		}
		switch key {
		case "approvers":
			w, wpos := p.word()
			n, err := strconv.Atoi(w)
			if err != nil || n < 1 || n > 16 {
				return nil, p.errorf(wpos, "approvers must be a whole number from 1 to 16, not %q", w)
			}
			a.Approvers = n
		case "groups":
			if a.Groups, err = p.stringList(); err != nil {
				return nil, err
			}
		case "within":
			w, wpos := p.word()
			d, err := time.ParseDuration(w)
			if err != nil || d <= 0 {
				return nil, p.errorf(wpos, "within must be a positive duration such as 30m or 4h, not %q", w)
			}
			a.Within = d
		case "message":
			if a.Message, _, err = p.str(); err != nil {
				return nil, err
			}
		default:
			return nil, p.errorf(kpos, "unknown approval setting %q (want approvers, groups, within or message)", key)
		}
		if err := p.endOfItem(); err != nil {
			return nil, err
		}
	}
}

func (p *parser) stringList() ([]string, error) {
	if err := p.expect('['); err != nil {
		return nil, err
	}
	var out []string
	for {
		p.skip()
		if p.peek() == ']' {
			p.advance()
			return out, nil
		}
		if len(out) > 0 {
			if err := p.expect(','); err != nil {
				return nil, err
			}
			p.skip()
			if p.peek() == ']' { // trailing comma
				p.advance()
				return out, nil
			}
		}
		s, _, err := p.str()
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
}

// expr reads a CEL expression. It ends at the end of a line where its
// brackets are balanced and it does not end with an operator, or before a
// `}` that closes the enclosing block.
func (p *parser) expr() (*Expr, error) {
	p.skipBlanks()
	pos := p.pos()
	start := p.off
	depth := 0
	lastSig := byte(0) // the last non-blank byte outside comments
	lastEnd := start
	var hashComments [][2]int
	for p.off < len(p.src) {
		c := p.peek()
		switch {
		case c == '"' || c == '\'':
			if err := p.skipCELString(rawPrefix(p.src[start:p.off])); err != nil {
				return nil, err
			}
			lastSig, lastEnd = c, p.off
			continue
		case c == '#' || c == '/' && p.off+1 < len(p.src) && p.src[p.off+1] == '/':
			from := p.off
			for p.off < len(p.src) && p.peek() != '\n' {
				p.advance()
			}
			if c == '#' {
				// CEL has no # comments: blank them in the text CEL sees.
				hashComments = append(hashComments, [2]int{from - start, p.off - start})
			}
			lastEnd = p.off // a trailing comment stays with its expression
			continue
		case c == '(' || c == '[' || c == '{':
			depth++
		case c == ')' || c == ']':
			depth--
		case c == '}':
			if depth == 0 {
				return p.finishExpr(pos, start, lastEnd, hashComments)
			}
			depth--
		case c == '\n':
			if depth <= 0 && !continues(p.src[start:lastEnd], lastSig) {
				return p.finishExpr(pos, start, lastEnd, hashComments)
			}
		}
		p.advance()
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			lastSig, lastEnd = c, p.off
		}
	}
	return p.finishExpr(pos, start, lastEnd, hashComments)
}

// continues reports whether an expression ending with text continues on the next line.
func continues(text []byte, last byte) bool {
	switch last {
	case '&', '|', '+', '-', '*', '/', '%', '=', '<', '>', '!', '?', ':', ',', '.':
		return true
	}
	t := strings.TrimRight(string(text), " \t\r")
	return strings.HasSuffix(t, " in")
}

func (p *parser) finishExpr(pos Pos, start, end int, hashComments [][2]int) (*Expr, error) {
	text := strings.TrimRight(string(p.src[start:end]), " \t\r\n")
	if text == "" {
		return nil, p.errorf(pos, "expected an expression")
	}
	e := &Expr{Pos: pos, Text: text}
	if len(hashComments) > 0 {
		b := []byte(text)
		for _, r := range hashComments {
			for i := r[0]; i < r[1] && i < len(b); i++ {
				b[i] = ' '
			}
		}
		e.cel = string(b)
	}
	return e, nil
}

// rawPrefix reports whether the text before a quote ends with a raw-string
// prefix (r, R, br, rb, … not part of a longer identifier).
func rawPrefix(before []byte) bool {
	n := len(before)
	if n == 0 || (before[n-1] != 'r' && before[n-1] != 'R') {
		if n >= 2 && (before[n-1] == 'b' || before[n-1] == 'B') && (before[n-2] == 'r' || before[n-2] == 'R') {
			return n == 2 || !isIdentChar(before[n-3])
		}
		return false
	}
	if n == 1 || !isIdentChar(before[n-2]) {
		return true
	}
	return (before[n-2] == 'b' || before[n-2] == 'B') && (n == 2 || !isIdentChar(before[n-3]))
}

// skipCELString skips a CEL string literal ('…', "…", or triple-quoted);
// in a raw string a backslash is an ordinary character.
func (p *parser) skipCELString(raw bool) error {
	pos := p.pos()
	q := p.peek()
	triple := p.off+2 < len(p.src) && p.src[p.off+1] == q && p.src[p.off+2] == q
	if triple {
		p.advance()
		p.advance()
	}
	p.advance()
	for p.off < len(p.src) {
		c := p.peek()
		switch {
		case c == '\\' && !raw:
			p.advance()
		case c == '\n' && !triple:
			return p.errorf(pos, "string not terminated")
		case c == q && !triple:
			p.advance()
			return nil
		case c == q && p.off+2 < len(p.src) && p.src[p.off+1] == q && p.src[p.off+2] == q:
			p.advance()
			p.advance()
			p.advance()
			return nil
		}
		if p.off < len(p.src) {
			p.advance()
		}
	}
	return p.errorf(pos, "string not terminated")
}
