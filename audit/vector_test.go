package audit

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/mod/sumdb/note"
)

// TestReceiptVector regenerates testdata/receipt-v1.txt: a log of the five
// vector entries signed with a key derived from a fixed seed, and the
// receipt for entry 2. The file is a published vector: its first line is
// the verifier key, the rest a receipt that VerifyReceipt accepts.
func TestReceiptVector(t *testing.T) {
	seed := bytes.Repeat([]byte{7}, 32)
	skey, vkey, err := note.GenerateKey(bytes.NewReader(seed), "rulelock.example.com/audit")
	if err != nil {
		t.Fatal(err)
	}
	s, _ := note.NewSigner(skey)
	l := openTest(t, t.TempDir(), Options{})
	defer l.Close()
	for _, e := range vectorEntries() {
		if _, err := l.Append(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	cp, _ := NewCheckpointer(l, s, CheckpointOptions{})
	if _, err := cp.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	r, err := cp.Receipt(2)
	if err != nil {
		t.Fatal(err)
	}
	got := "# rulelock receipt vector v1: verifier key, then the receipt for entry 2 of the entries-v1 log.\n" + vkey + "\n" + string(r)
	path := filepath.Join("testdata", "receipt-v1.txt")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("receipt vector changed (-want +got):\n%s", diff)
	}
	// The published file verifies on its own.
	_, rest, _ := strings.Cut(string(want), "\n")
	key, receipt, _ := strings.Cut(rest, "\n")
	v, err := note.NewVerifier(key)
	if err != nil {
		t.Fatal(err)
	}
	e, pr, err := VerifyReceipt([]byte(receipt), v)
	if err != nil {
		t.Fatal(err)
	}
	if pr.Index != 2 || e.Kind != KindOutcome {
		t.Fatalf("vector receipt: entry %d is a %s, want 2 and outcome", pr.Index, e.Kind)
	}
}
