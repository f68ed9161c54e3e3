package policy

import (
	"fmt"
	"time"
)

// Pos is a position in a policy file. Line and Col are 1-based; Col counts bytes.
type Pos struct {
	File string
	Line int
	Col  int
}

func (p Pos) String() string {
	if p.File == "" {
		return fmt.Sprintf("%d:%d", p.Line, p.Col)
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
}

// File is one parsed .rules file: its declarations in source order.
type File struct {
	Name  string
	Decls []Decl
	// Trailing holds comments after the last declaration.
	Trailing []string
}

// Decl is a top-level declaration: *Header, *Schema or *Rule.
type Decl interface {
	declPos() Pos
	comments() []string
}

// Header is `policy "NAME" { default: deny }`.
type Header struct {
	Pos      Pos
	Comments []string // comment lines before the declaration, without the markers
	Name     string
	Default  Effect
	Inner    []string // comments inside the block
	Tail     []string // comments before the closing brace
}

// Schema is `action "TYPE" { field: type ... }`: the shape of one action type.
type Schema struct {
	Pos      Pos
	Comments []string
	Type     string
	Fields   []*Field
	Tail     []string // comments before the closing brace
}

// Field is one field of an action schema. Optional fields are written
// `name?: type`; a sensitive one `name: type sensitive`: its value is kept
// out of the audit log (the log holds a salted commitment in its place).
type Field struct {
	Pos       Pos
	Comments  []string
	Name      string
	Optional  bool
	Type      FieldType
	Sensitive bool
}

// FieldType is the type of an action field.
type FieldType string

// The field types an action schema may use.
const (
	TypeString    FieldType = "string"
	TypeNumber    FieldType = "number"
	TypeInt       FieldType = "int"
	TypeBool      FieldType = "bool"
	TypeTimestamp FieldType = "timestamp"
	TypeList      FieldType = "list"
	TypeMap       FieldType = "map"
	TypeAny       FieldType = "any"
)

var fieldTypes = map[string]FieldType{
	"string": TypeString, "number": TypeNumber, "int": TypeInt, "bool": TypeBool,
	"timestamp": TypeTimestamp, "list": TypeList, "map": TypeMap, "any": TypeAny,
}

// Rule is a `rule` or `invariant` block.
type Rule struct {
	Pos       Pos
	Comments  []string
	Invariant bool // declared with `invariant`: applies to every action, no precondition
	Name      string

	Precondition  *Expr // nil: the rule applies to every action
	Condition     *Expr // nil: never satisfied (deny/approval fire whenever the rule applies)
	Postcondition *Expr // checked on the execution result, exposed as `result`

	Outcome  Outcome
	Message  string
	Approval *ApprovalSpec // for OutcomeRequireApproval
	Shadow   bool          // mode: shadow — evaluated and reported, never enforced

	Tail  []string // comments before the closing brace
	items []item   // the rule's items with their comments, for fmt
}

// ApprovalSpec is the body of `require_approval { ... }`.
type ApprovalSpec struct {
	Pos       Pos
	Approvers int           // distinct approvers needed (default 1)
	Groups    []string      // approvers must belong to one of these groups (empty: any approver)
	Within    time.Duration // time limit (0: the gateway's default)
	Message   string
	comments  []string // comments inside the block, for fmt
}

// Expr is a CEL expression as written in a policy file.
type Expr struct {
	Pos  Pos    // where the expression text starts
	Text string // the expression, verbatim (may span lines)
	cel  string // Text with # comments blanked, when it has any
}

// celText is the expression as CEL reads it.
func (e *Expr) celText() string {
	if e.cel != "" {
		return e.cel
	}
	return e.Text
}

// Outcome is what a rule does when it fires.
type Outcome string

// The outcomes a rule may have.
const (
	OutcomeDeny            Outcome = "deny"
	OutcomeRequireApproval Outcome = "require_approval"
	OutcomeAllow           Outcome = "allow"
)

// Effect is a decision: allow, deny or require_approval.
type Effect string

// The decisions.
const (
	Allow           Effect = "allow"
	Deny            Effect = "deny"
	RequireApproval Effect = "require_approval"
)

// item records one rule item's kind and comments, in source order, for fmt.
type item struct {
	key      string
	comments []string
}

func (h *Header) declPos() Pos       { return h.Pos }
func (s *Schema) declPos() Pos       { return s.Pos }
func (r *Rule) declPos() Pos         { return r.Pos }
func (h *Header) comments() []string { return h.Comments }
func (s *Schema) comments() []string { return s.Comments }
func (r *Rule) comments() []string   { return r.Comments }
