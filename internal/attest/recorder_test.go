package attest_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/attest"
	"github.com/rulelock/rulelock/internal/attest/swtpmtest"
)

// TestRecorderFailsClosed runs a recorder against a real swtpm that goes
// away, hangs and is extended behind its back. Its gate (what the gateway
// asks before each decision) is closed from the first failure, and past
// MaxGap, until an attestation succeeds again; the first failure is a note
// in the log; evidence the recorder's own check refuses is never logged;
// and the log, with a refusal in the unattested stretch, still passes
// VerifyLog, while an evaluated decision there fails it.
func TestRecorderFailsClosed(t *testing.T) {
	ctx := context.Background()
	sw := swtpmtest.Start(t)
	tp, err := attest.OpenTPM(attest.TPMOptions{Device: sw.Socket, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	dir := filepath.Join(t.TempDir(), "log")
	l, err := audit.Open(dir, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	const maxGap = 10 * time.Minute
	rec, err := attest.NewRecorder(tp, attest.RecorderOptions{Origin: origin, Engine: engine, MaxGap: maxGap,
		Checkpoint: func() []byte { return nil }, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	open := func(step string) {
		t.Helper()
		if err := rec.Attested(now); err != nil {
			t.Fatalf("%s: gate closed: %v", step, err)
		}
	}
	closed := func(step string) {
		t.Helper()
		if err := rec.Attested(now); err == nil {
			t.Fatalf("%s: gate open", step)
		} else {
			t.Logf("%s: %v", step, err)
		}
	}
	record := func(step string, wantErr bool) {
		t.Helper()
		err := rec.Record(ctx, l)
		if (err != nil) != wantErr {
			t.Fatalf("%s: Record: %v, want an error %v", step, err, wantErr)
		}
	}
	decide := func(state string) {
		t.Helper()
		action := fmt.Sprintf(`{"n":%d,"type":"transfer"}`, l.Size())
		e := &audit.Entry{Kind: audit.KindDecision, Time: now, Agent: "agent-1", RequestID: fmt.Sprintf("r-%d", l.Size()),
			Action: audit.Text(action), ActionSHA256: sha256.Sum256([]byte(action)), Decision: "allow", State: audit.Text(state)}
		if state == "" { // a refusal: gateway.Refuse writes no decision state
			e.Decision, e.Action, e.ActionSHA256 = "deny", audit.Field{}, [32]byte{}
			e.Message = "attestation_failed: refused"
		}
		if _, err := l.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}

	closed("before the first attestation")
	record("at start", false)
	open("after it")
	decide(`{"agent_roles":[]}`)
	now = now.Add(maxGap + time.Second)
	closed("past max-gap")
	now = now.Add(-maxGap)
	open("within max-gap")

	sw.Unplug()
	record("unplugged", true)
	closed("unplugged")
	record("unplugged again", true)
	if _, err := l.Append(ctx, &audit.Entry{Kind: audit.KindPolicyActivation, Time: now, BundleDigest: bundle1}); err != nil {
		t.Fatal(err)
	}
	if err := rec.Activated(ctx, l, bundle1); err == nil {
		t.Fatal("an activation attested on an unplugged TPM")
	}
	closed("activation unattested")
	now = now.Add(maxGap) // the failure stretch outlasts max-gap: only refusals in it
	decide("")
	sw.Plug()
	record("plugged in again", false) // measures bundle1, then attests
	open("plugged in again")
	decide(`{"agent_roles":[]}`)

	sw.Pause()
	record("paused", true) // the socket's deadline, not a hang
	closed("paused")
	sw.Resume()
	record("resumed", false)
	open("resumed")

	notes, atts := 0, 0
	for i := range l.Size() {
		b, _ := l.ReadEntry(i)
		e, err := audit.DecodeEntry(b)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case e.Kind == audit.KindNote && strings.HasPrefix(e.Message, attest.NoteFailed+": "):
			notes++
		case e.Kind == audit.KindAttestation:
			atts++
		}
	}
	// One note per failing stretch (unplugged, paused), not per attempt.
	if notes != 2 || atts != 3 {
		t.Errorf("%d attestation_failed notes and %d attestation entries, want 2 and 3", notes, atts)
	}
	pin, _ := tp.AttestationKey()
	pol, err := attest.ParsePolicy("test.policy", fmt.Appendf(nil, "origin %s\ntpm-ak %s\nrelease v1 %s\nmax-gap %s\n", origin, pin, engine, maxGap))
	if err != nil {
		t.Fatal(err)
	}
	verify := func() (*attest.LogReport, error) {
		snap, err := audit.OpenSnapshot(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer snap.Close()
		return attest.VerifyLog(snap, nil, pol)
	}
	rep, err := verify()
	if err != nil {
		t.Fatalf("VerifyLog: %v", err)
	}
	if rep.Decisions != 2 || rep.Refusals != 1 || rep.Attestations != 3 {
		t.Errorf("report %+v, want 2 decisions, 1 refusal, 3 attestations", rep)
	}

	// A PCR extended behind the engine's back: the quote no longer matches
	// the event log. Nothing is logged; the gate stays closed, and the
	// log as it stands still verifies.
	if err := tp.Extend(attest.DefaultBundlePCR, sha256.Sum256([]byte("rogue"))); err != nil {
		t.Fatal(err)
	}
	size := l.Size()
	if err := rec.Record(ctx, l); err == nil || !errors.Is(err, attest.ErrEvidence) {
		t.Fatalf("Record after a rogue extend: %v, want its own evidence refused", err)
	}
	closed("after a rogue extend")
	if l.Size() != size+1 { // the note only
		t.Errorf("%d entries appended after a rogue extend, want the note only", l.Size()-size)
	}
	record("after a rogue extend, again", true)
	if _, err := verify(); err != nil {
		t.Fatalf("VerifyLog after the refused evidence: %v", err)
	}

	// An evaluated decision in an unattested stretch, past max-gap, is
	// what a verifier refuses (and what the gate prevents).
	now = now.Add(maxGap + time.Minute)
	decide(`{"agent_roles":[]}`)
	if _, err := verify(); err == nil || !strings.Contains(err.Error(), "max-gap") {
		t.Fatalf("VerifyLog with a decision past max-gap: %v", err)
	}
}

// counting is an EntryReader that counts the entries read.
type counting struct {
	entries
	read int64
}

func (c *counting) ReadEntries(lo, hi int64) ([][]byte, error) {
	c.read += hi - lo
	return c.entries.ReadEntries(lo, hi)
}

// TestLastStatement: the chain continues from the last attestation
// entry, found by reading back from the log's end: the entries read are
// those after it (and at most one batch more), not the whole log.
func TestLastStatement(t *testing.T) {
	stmt := func(k int) *audit.Entry {
		return &audit.Entry{Kind: audit.KindAttestation, Time: time.Unix(int64(k), 0).UTC(), Statement: fmt.Sprintf("statement %d\n", k),
			Provider: "tpm", Evidence: []byte("e"), Collateral: []byte("c")}
	}
	note := func(k int) *audit.Entry {
		return &audit.Entry{Kind: audit.KindNote, Time: time.Unix(int64(k), 0).UTC(), Message: "n"}
	}
	build := func(n int, attestedAt ...int) entries {
		var out entries
		for k := range n {
			e := note(k)
			for _, a := range attestedAt {
				if a == k {
					e = stmt(k)
				}
			}
			b, err := e.Encode()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b)
		}
		return out
	}
	hashOf := func(k int) string {
		sum := sha256.Sum256([]byte(stmt(k).Statement))
		return fmt.Sprintf("%x", sum)
	}
	for _, tc := range []struct {
		name     string
		n        int
		attested []int
		want     string
		maxRead  int64
	}{
		{"empty", 0, nil, "", 0},
		{"none", 1000, nil, "", 1000},
		{"last entry", 100_000, []int{5, 99_999}, hashOf(99_999), 256},
		{"near the end", 100_000, []int{5, 99_000, 99_900}, hashOf(99_900), 256},
		{"two batches back", 100_000, []int{99_500}, hashOf(99_500), 512},
		{"first entry", 300, []int{0}, hashOf(0), 300},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &counting{entries: build(tc.n, tc.attested...)}
			got, err := attest.LastStatement(r)
			if err != nil || got != tc.want {
				t.Fatalf("LastStatement = %q, %v; want %q", got, err, tc.want)
			}
			if r.read > tc.maxRead {
				t.Errorf("read %d of %d entries, want at most %d", r.read, tc.n, tc.maxRead)
			}
		})
	}
}
