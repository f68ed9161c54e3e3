package audit_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
)

// Example appends a decision, signs a checkpoint, and verifies the log and
// a receipt the way a third party does.
func Example() {
	dir, err := os.MkdirTemp("", "audit-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	skey, vkey, err := note.GenerateKey(nil, "rulelock.example.com/audit")
	if err != nil {
		log.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	verifier, _ := note.NewVerifier(vkey)

	l, err := audit.Open(dir, audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		log.Fatal(err)
	}
	r, err := l.Append(context.Background(), &audit.Entry{
		Kind:     audit.KindDecision,
		Time:     time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC),
		Agent:    "agent-42",
		Action:   audit.Text(`{"amount":20000,"to":"acct-9","type":"transfer"}`),
		Rules:    []audit.Rule{{Name: "NoHighValueTransfers", Outcome: "deny", Message: "Transfers over $10,000 require human approval"}},
		Decision: "deny",
	})
	if err != nil {
		log.Fatal(err)
	}
	cp, err := audit.NewCheckpointer(l, signer, audit.CheckpointOptions{})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := cp.Checkpoint(); err != nil {
		log.Fatal(err)
	}
	receipt, err := cp.Receipt(r.Index)
	if err != nil {
		log.Fatal(err)
	}
	if err := l.Close(); err != nil {
		log.Fatal(err)
	}

	rep, err := audit.VerifyDir(dir, verifier, audit.VerifyOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("log: %d entries, checkpoint size %d\n", rep.Entries, rep.Size)
	e, _, err := audit.VerifyReceipt(receipt, verifier)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("receipt: entry %d is a %s: %s\n", r.Index, e.Kind, e.Decision)
	// Output:
	// log: 1 entries, checkpoint size 1
	// receipt: entry 0 is a decision: deny
}
