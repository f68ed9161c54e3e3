package approval

import (
	"os"
	"strings"
	"testing"
)

// TestDocs keeps docs/approvals.md true: every refusal code is in its
// table, and its signed example is the published vector.
func TestDocs(t *testing.T) {
	doc, err := os.ReadFile("../../docs/approvals.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []*Error{
		ErrNotFound, ErrClosed, ErrExpired, ErrQueueFull, ErrInvalidRequest, ErrDuplicateID,
		ErrBadStatement, ErrUnknownApprover, ErrBadSignature, ErrRequestMismatch, ErrActionMismatch,
		ErrPolicyMismatch, ErrExpiryMismatch, ErrVerdictMismatch, ErrSelfApproval, ErrNotInGroup, ErrDuplicate,
	} {
		if !strings.Contains(string(doc), "| `"+e.Code()+"` |") {
			t.Errorf("docs/approvals.md does not list the code %s", e.Code())
		}
	}
	vectors, err := os.ReadFile("testdata/vectors.txtar")
	if err != nil {
		t.Fatal(err)
	}
	_, note, _ := strings.Cut(string(vectors), "-- approve.note --\n")
	note, _, _ = strings.Cut(note, "-- ")
	if !strings.Contains(string(doc), "```\n"+note+"```\n") {
		t.Errorf("docs/approvals.md does not show the signed vector:\n%s", note)
	}
}
