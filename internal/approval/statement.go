package approval

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"
)

// Size limits on what an approver submits.
const (
	MaxStatementSize = 1024 // bytes of statement text
	MaxNoteSize      = 2048 // bytes of signed note: the statement and one signature line
	MaxReasonSize    = 280  // bytes of a rejection reason
	MaxIDSize        = 128  // bytes of a request id
)

// A Verdict is what an approver decided.
type Verdict string

const (
	Approve Verdict = "approve"
	Reject  Verdict = "reject"
)

// A Statement is what an approver signs: a verdict on one parked request,
// bound to its canonical action hash, the digest of the policy that parked
// it, and its expiry.
type Statement struct {
	Request string    // request id: 1 to 128 bytes of A-Z a-z 0-9 . _ : -
	Action  [32]byte  // SHA-256 of the canonical action
	Policy  string    // policy digest: sha256:<64 lowercase hex>
	Expires time.Time // UTC, whole seconds
	Verdict Verdict
	Reason  string // rejections only; single line, in SanitizeReason form, non-empty
}

const (
	statementHeader = "rulelock approval v1"
	expiresLayout   = "2006-01-02T15:04:05Z"
)

// Marshal returns the canonical text of st. It does not check st: Sign and
// ParseStatement do.
func (st Statement) Marshal() []byte {
	var b bytes.Buffer
	b.Grow(256 + len(st.Request) + len(st.Reason))
	b.WriteString(statementHeader + "\n")
	b.WriteString("request " + st.Request + "\n")
	b.WriteString("action sha256:" + hex.EncodeToString(st.Action[:]) + "\n")
	b.WriteString("policy " + st.Policy + "\n")
	b.WriteString("expires " + st.Expires.UTC().Format(expiresLayout) + "\n")
	b.WriteString("verdict " + string(st.Verdict) + "\n")
	if st.Verdict == Reject {
		b.WriteString("reason " + st.Reason + "\n")
	}
	return b.Bytes()
}

// Check reports whether st has canonical values throughout, so that
// Marshal and ParseStatement are inverses on it.
func (st Statement) Check() error {
	switch {
	case !validID(st.Request):
		return fmt.Errorf("request id %q: want 1 to %d bytes of A-Z a-z 0-9 . _ : -", st.Request, MaxIDSize)
	case !validDigest(st.Policy):
		return fmt.Errorf("policy digest %q: want sha256:<64 lowercase hex>", st.Policy)
	case st.Expires.IsZero() || st.Expires.Location() != time.UTC || st.Expires.Nanosecond() != 0 ||
		st.Expires.Year() < 1970 || st.Expires.Year() > 9999:
		return fmt.Errorf("expiry %v: want a UTC time in whole seconds", st.Expires)
	case st.Verdict != Approve && st.Verdict != Reject:
		return fmt.Errorf("verdict %q: want approve or reject", st.Verdict)
	case st.Verdict == Approve && st.Reason != "":
		return fmt.Errorf("reason given for an approval")
	case st.Verdict == Reject && (st.Reason == "" || SanitizeReason(st.Reason) != st.Reason):
		return fmt.Errorf("reason %q: want a non-empty single line in SanitizeReason form", st.Reason)
	}
	return nil
}

// ParseStatement parses the canonical text of a statement. It accepts
// exactly what Marshal produces for a statement that passes Check: the
// lines in order, each ending in a newline, nothing else.
func ParseStatement(text []byte) (Statement, error) {
	var st Statement
	if len(text) > MaxStatementSize {
		return st, fmt.Errorf("parse statement: %d bytes, over the %d-byte limit", len(text), MaxStatementSize)
	}
	if !utf8.Valid(text) || !bytes.HasSuffix(text, []byte("\n")) {
		return st, fmt.Errorf("parse statement: want UTF-8 lines each ending in a newline")
	}
	lines := strings.Split(string(text[:len(text)-1]), "\n")
	keys := []string{"", "request", "action", "policy", "expires", "verdict", "reason"}
	if len(lines) < 6 || len(lines) > 7 {
		return st, fmt.Errorf("parse statement: %d lines, want 6 or 7", len(lines))
	}
	if lines[0] != statementHeader {
		return st, fmt.Errorf("parse statement: line 1: want %q", statementHeader)
	}
	vals := make([]string, len(lines))
	for i := 1; i < len(lines); i++ {
		v, ok := strings.CutPrefix(lines[i], keys[i]+" ")
		if !ok {
			return st, fmt.Errorf("parse statement: line %d: want %q", i+1, keys[i]+" ...")
		}
		vals[i] = v
	}
	st.Request = vals[1]
	action, ok := strings.CutPrefix(vals[2], "sha256:")
	if !ok || !validDigest(vals[2]) {
		return st, fmt.Errorf("parse statement: line 3: action %q: want sha256:<64 lowercase hex>", vals[2])
	}
	hex.Decode(st.Action[:], []byte(action))
	st.Policy = vals[3]
	t, err := time.Parse(expiresLayout, vals[4])
	if err != nil || t.Format(expiresLayout) != vals[4] {
		return st, fmt.Errorf("parse statement: line 5: expiry %q: want YYYY-MM-DDThh:mm:ssZ", vals[4])
	}
	st.Expires = t
	st.Verdict = Verdict(vals[5])
	if len(lines) == 7 {
		if st.Verdict != Reject {
			return st, fmt.Errorf("parse statement: line 7: reason given for an approval")
		}
		st.Reason = vals[6]
	} else if st.Verdict == Reject {
		return st, fmt.Errorf("parse statement: rejection without a reason line")
	}
	if err := st.Check(); err != nil {
		return Statement{}, fmt.Errorf("parse statement: %w", err)
	}
	return st, nil
}

// Sign returns st signed by signer as a C2SP signed note: the statement
// text, a blank line, and one signature line. This is what an approver
// submits.
func Sign(st Statement, signer note.Signer) ([]byte, error) {
	if err := st.Check(); err != nil {
		return nil, fmt.Errorf("sign statement: %w", err)
	}
	msg, err := note.Sign(&note.Note{Text: string(st.Marshal())}, signer)
	if err != nil {
		return nil, fmt.Errorf("sign statement: %w", err)
	}
	return msg, nil
}

// SanitizeReason turns free text into a rejection reason: every rune that
// is not printable (controls, line breaks, tabs, format characters such as
// bidirectional overrides, invalid UTF-8, spaces other than U+0020) becomes
// a space, runs of spaces collapse to one, the ends are trimmed, and the
// result is cut to MaxReasonSize bytes on a rune boundary.
func SanitizeReason(s string) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) || r == ' ' {
			space = b.Len() > 0
			continue
		}
		if space {
			if b.Len()+1+utf8.RuneLen(r) > MaxReasonSize {
				break
			}
			b.WriteByte(' ')
			space = false
		}
		if b.Len()+utf8.RuneLen(r) > MaxReasonSize {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// ValidID reports whether s is a well-formed request or approver id: 1 to
// MaxIDSize bytes of letters, digits and . _ : -
func ValidID(s string) bool { return validID(s) }

func validID(s string) bool {
	if len(s) == 0 || len(s) > MaxIDSize {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// validDigest reports whether s is sha256:<64 lowercase hex>.
func validDigest(s string) bool {
	h, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(h) != 64 {
		return false
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
