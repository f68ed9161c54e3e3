// Package freeze is the emergency stop's signed statements: what an
// approver signs to freeze a gateway, and to vote for lifting a freeze.
//
// A freeze statement is a C2SP signed note (golang.org/x/mod/sumdb/note,
// Ed25519, the approver's own key, as approvals are) whose text is exactly
// these lines, each ending in a newline:
//
//	rulelock freeze v1
//	id f3q5...              (the freeze's id: "f" and 26 base32 characters, chosen by the signer)
//	time 2026-12-03T03:00:00Z
//	reason agent-7 is wiring money to unknown payees
//
// An unfreeze statement names the freeze it lifts, so that it counts for
// that freeze only and cannot be replayed against a later one:
//
//	rulelock unfreeze v1
//	id f3q5...
//
// The gateway accepts a freeze statement whose time is within MaxSkew of
// its clock and whose id no earlier freeze used; it lifts a freeze when
// the configured number of distinct approvers have each signed an
// unfreeze statement for its id.
package freeze

import (
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"
)

// MaxSkew is how far a freeze statement's time may be from the gateway's
// clock.
const MaxSkew = 5 * time.Minute

// MaxReasonSize caps a freeze's reason, in bytes.
const MaxReasonSize = 280

const (
	freezeHeader   = "rulelock freeze v1"
	unfreezeHeader = "rulelock unfreeze v1"
	timeLayout     = "2006-01-02T15:04:05Z"
)

// Statement is a freeze (Lift false) or an unfreeze vote (Lift true).
type Statement struct {
	Lift   bool
	ID     string    // the freeze's id
	Time   time.Time // freeze only: when it was signed (UTC, whole seconds)
	Reason string    // freeze only: one line, non-empty
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewID returns a fresh freeze id: "f" and 26 base32 characters (128 bits).
func NewID() string {
	var b [16]byte
	rand.Read(b[:])
	return "f" + idEncoding.EncodeToString(b[:])
}

// ValidID reports whether id is a freeze id.
func ValidID(id string) bool {
	if len(id) != 27 || id[0] != 'f' {
		return false
	}
	_, err := idEncoding.DecodeString(id[1:])
	return err == nil
}

// CleanReason makes s one line of printable text within MaxReasonSize.
func CleanReason(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Zl, r) || unicode.Is(unicode.Zp, r) {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	for len(s) > MaxReasonSize {
		_, n := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-n]
	}
	return s
}

// Check reports whether st has canonical values throughout.
func (st Statement) Check() error {
	switch {
	case !ValidID(st.ID):
		return fmt.Errorf("freeze id %q: want f and 26 base32 characters", st.ID)
	case st.Lift && (st.Reason != "" || !st.Time.IsZero()):
		return fmt.Errorf("an unfreeze statement has no time or reason")
	case st.Lift:
		return nil
	case st.Reason == "" || CleanReason(st.Reason) != st.Reason:
		return fmt.Errorf("reason %q: want one non-empty line of at most %d bytes", st.Reason, MaxReasonSize)
	case st.Time.Location() != time.UTC || st.Time.Nanosecond() != 0 || st.Time.Year() < 2000 || st.Time.Year() > 9999:
		return fmt.Errorf("time %v: want a UTC time in whole seconds", st.Time)
	}
	return nil
}

// Marshal returns st's canonical text. It does not check st: Sign and
// Parse do.
func (st Statement) Marshal() []byte {
	var b bytes.Buffer
	if st.Lift {
		b.WriteString(unfreezeHeader + "\nid " + st.ID + "\n")
		return b.Bytes()
	}
	b.WriteString(freezeHeader + "\nid " + st.ID + "\n")
	b.WriteString("time " + st.Time.UTC().Format(timeLayout) + "\n")
	b.WriteString("reason " + st.Reason + "\n")
	return b.Bytes()
}

// Parse reads a statement's canonical text: exactly what Marshal produces
// for a statement that passes Check.
func Parse(text string) (Statement, error) {
	var st Statement
	if len(text) > 1024 || !utf8.ValidString(text) || !strings.HasSuffix(text, "\n") {
		return st, fmt.Errorf("parse freeze statement: want at most 1024 bytes of UTF-8 lines, each ending in a newline")
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	var keys []string
	switch lines[0] {
	case freezeHeader:
		keys = []string{"", "id", "time", "reason"}
	case unfreezeHeader:
		keys, st.Lift = []string{"", "id"}, true
	default:
		return st, fmt.Errorf("parse freeze statement: line 1: want %q or %q", freezeHeader, unfreezeHeader)
	}
	if len(lines) != len(keys) {
		return st, fmt.Errorf("parse freeze statement: %d lines, want %d", len(lines), len(keys))
	}
	vals := make([]string, len(keys))
	for i := 1; i < len(keys); i++ {
		v, ok := strings.CutPrefix(lines[i], keys[i]+" ")
		if !ok {
			return st, fmt.Errorf("parse freeze statement: line %d: want %q", i+1, keys[i]+" ...")
		}
		vals[i] = v
	}
	st.ID = vals[1]
	if !st.Lift {
		t, err := time.Parse(timeLayout, vals[2])
		if err != nil || t.Format(timeLayout) != vals[2] {
			return st, fmt.Errorf("parse freeze statement: line 3: time %q: want YYYY-MM-DDThh:mm:ssZ", vals[2])
		}
		st.Time, st.Reason = t, vals[3]
	}
	if err := st.Check(); err != nil {
		return Statement{}, fmt.Errorf("parse freeze statement: %w", err)
	}
	return st, nil
}

// Sign returns st signed by signer: the note an approver submits.
func Sign(st Statement, signer note.Signer) ([]byte, error) {
	if err := st.Check(); err != nil {
		return nil, fmt.Errorf("sign freeze statement: %w", err)
	}
	b, err := note.Sign(&note.Note{Text: string(st.Marshal())}, signer)
	if err != nil {
		return nil, fmt.Errorf("sign freeze statement: %w", err)
	}
	return b, nil
}
