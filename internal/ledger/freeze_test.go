package ledger_test

import (
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/ledger"
)

// TestFreezeFold: the emergency stop's notes fold into the freeze in force:
// votes by distinct approvers for that freeze only, a second freeze while
// frozen changes nothing, the unfreeze of that freeze lifts it, and other
// notes are not freeze notes.
func TestFreezeFold(t *testing.T) {
	l := ledger.New(ledger.Options{})
	at := time.Date(2026, 12, 3, 3, 0, 0, 0, time.UTC)
	note := func(who, msg string) {
		l.Apply(&audit.Entry{Kind: audit.KindNote, Time: at, Approver: who, Message: msg}, nil)
	}
	note("", "startup: 0 allowed actions without an outcome recorded as unknown")
	note("alice", "approval_refused approve frozen: x")
	if l.Freeze() != nil {
		t.Fatal("frozen by notes that are not freezes")
	}
	note("alice", "freeze f1: agent-7: wires money")
	note("bob", "freeze f2: again")
	note("bob", "unfreeze_vote f2")
	note("bob", "unfreeze_vote f1")
	note("bob", "unfreeze_vote f1")
	note("", "unfreeze f2")
	f := l.Freeze()
	if f == nil || f.ID != "f1" || f.Reason != "agent-7: wires money" || f.By != "alice" || !f.Since.Equal(at) || len(f.Votes) != 1 || f.Votes[0] != "bob" {
		t.Fatalf("got %+v", f)
	}
	if !l.FreezeUsed("f1") || !l.FreezeUsed("f2") || l.FreezeUsed("f3") {
		t.Error("FreezeUsed does not know the log's freeze ids")
	}
	note("", "unfreeze f1")
	if l.Freeze() != nil {
		t.Error("still frozen after the unfreeze")
	}
	for _, msg := range []string{"freeze", "freeze : x", "unfreeze", "unfreeze a b", "freezes f1: x"} {
		if n, ok := ledger.ParseFreezeNote(&audit.Entry{Kind: audit.KindNote, Message: msg}); ok {
			t.Errorf("ParseFreezeNote(%q) = %+v", msg, n)
		}
	}
	if _, ok := ledger.ParseFreezeNote(&audit.Entry{Kind: audit.KindDecision, Message: "freeze f1: x"}); ok {
		t.Error("a decision entry read as a freeze note")
	}
}
