package audit

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

// vectorEntries are the entries of testdata/entries-v1.txt.
func vectorEntries() []*Entry {
	t := time.Date(2026, 11, 22, 10, 0, 0, 123456789, time.UTC)
	action := `{"amount":20000,"to":"acct-9","type":"transfer"}`
	return []*Entry{
		{Kind: KindDecision, Time: t, Agent: "agent-42", Session: "s-1", RequestID: "r-1",
			Action: Text(action), ActionSHA256: sha256.Sum256([]byte(action)),
			Instruction: Text("Pay invoice 1234 from Acme"), Reasoning: Text("The invoice is due <today> & \u2028"),
			Rules:    []Rule{{Name: "NoHighValueTransfers", Outcome: "deny", Message: "Transfers over $10,000 require human approval"}, {Name: "Audit", Outcome: "deny", Shadow: true}},
			Decision: "deny", BundleDigest: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", EngineVersion: "rulelock/0.1.0"},
		{Kind: KindApproval, Time: t, RequestID: "r-2", Approver: "alice", Signature: []byte{1, 2, 3}},
		{Kind: KindOutcome, Time: t, RequestID: "r-2", Closes: 0, Status: "ok", Result: Field{Digest: sha256.Sum256([]byte("big")), Size: 3},
			State: Field{Commitment: sha256.Sum256([]byte("c"))}, Postconditions: []Verdict{{Rule: "BalanceNonNegative", Holds: true}}},
		{Kind: KindPolicyActivation, Time: t, BundleDigest: "sha256:00", Signers: []string{"alice+1234abcd", "bob+5678ef01"}},
		{Kind: KindNote, Time: t, Message: "startup"},
	}
}

// TestEntryVectors checks the published encoding of the entries above.
func TestEntryVectors(t *testing.T) {
	var got bytes.Buffer
	got.WriteString("# rulelock audit entry encoding v1: one canonical entry per line (audit_test TestEntryVectors).\n")
	for _, e := range vectorEntries() {
		b, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		got.Write(b)
		got.WriteByte('\n')
		d, err := DecodeEntry(b)
		if err != nil {
			t.Fatalf("decode %s: %v", b, err)
		}
		if diff := cmp.Diff(e, d); diff != "" {
			t.Errorf("decode(encode(e)) differs (-want +got):\n%s", diff)
		}
	}
	path := filepath.Join("testdata", "entries-v1.txt")
	if *update {
		if err := os.WriteFile(path, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), got.String()); diff != "" {
		t.Errorf("encoding changed (-want +got):\n%s", diff)
	}
}

func TestDecodeRejects(t *testing.T) {
	good, _ := vectorEntries()[4].Encode()
	for _, in := range []string{
		``, `null`, `{}`, ` ` + string(good), string(good) + ` `, string(good) + `{}`,
		strings.Replace(string(good), `"v":1`, `"v":2`, 1),
		strings.Replace(string(good), `"kind":"note"`, `"kind":"nope"`, 1),
		strings.Replace(string(good), `"kind":"note",`, `"kind":"note","kind":"note",`, 1),
		strings.Replace(string(good), `"message":"startup",`, ``, 1) + `x`,
		strings.Replace(string(good), `{`, `{"zzz":1,`, 1),
		strings.Replace(string(good), `Z"`, `+00:00"`, 1),
		`{"v":1,"time":"2026-11-22T10:00:00Z","kind":"note"}`,
		`{"closes":0,"kind":"note","time":"2026-11-22T10:00:00Z","v":1}`,
		`{"kind":"outcome","time":"2026-11-22T10:00:00Z","v":1}`,
		`{"action":"{}","action_sha256":"` + strings.Repeat("0", 64) + `","kind":"note","time":"2026-11-22T10:00:00Z","v":1}`,
		`{"kind":"note","result":{"hmac":"` + strings.Repeat("A", 64) + `"},"time":"2026-11-22T10:00:00Z","v":1}`,
		`{"kind":"note","result":{"hmac":"` + strings.Repeat("a", 64) + `","size":1},"time":"2026-11-22T10:00:00Z","v":1}`,
		"{\"kind\":\"note\",\"message\":\"\xff\",\"time\":\"2026-11-22T10:00:00Z\",\"v\":1}",
	} {
		if _, err := DecodeEntry([]byte(in)); err == nil {
			t.Errorf("DecodeEntry(%q) succeeded, want error", in)
		}
	}
}

// FuzzDecodeEntry checks that decoding then encoding is the identity.
func FuzzDecodeEntry(f *testing.F) {
	for _, e := range vectorEntries() {
		b, _ := e.Encode()
		f.Add(b)
	}
	odd := &Entry{Kind: KindNote, Time: time.Unix(1, 2), Message: "a\"b\\c\n\t\u0001\u007fé😀\u2029/", Signers: []string{"", "\b\f"}}
	b, _ := odd.Encode()
	f.Add(b)
	reused := new(entryChecker) // carries buffers from one input to the next
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeEntry(b)
		// The verifier's checker accepts exactly what DecodeEntry accepts,
		// fresh or after earlier inputs.
		for _, c := range []*entryChecker{new(entryChecker), reused} {
			if cerr := c.check(b); (cerr == nil) != (err == nil) {
				t.Fatalf("entryChecker says %v, DecodeEntry says %v", cerr, err)
			}
		}
		if err != nil {
			return
		}
		again, err := e.Encode()
		if err != nil {
			t.Fatalf("encode of decoded entry: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("decode→encode changed\n%q\nto\n%q", b, again)
		}
		// The hand-written parser reads what encoding/json reads.
		var w1, w2 wireEntry
		if err := parseWire(b, &w1); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &w2); err != nil {
			t.Fatalf("encoding/json rejects an accepted entry: %v", err)
		}
		if diff := cmp.Diff(w2, w1); diff != "" {
			t.Fatalf("parseWire differs from encoding/json (-json +parseWire):\n%s", diff)
		}
	})
}

// FuzzReadFrame checks that no frame bytes make the reader panic and that
// a frame read back re-encodes to the same bytes.
func FuzzReadFrame(f *testing.F) {
	f.Add(appendFrame(nil, 3, [32]byte{1}, []byte(`{"kind":"note"}`)))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := readFrame(bytes.NewReader(b), 0, int64(len(b)))
		if err != nil {
			return
		}
		again := appendFrame(nil, fr.index, fr.chain, fr.payload)
		if !bytes.Equal(again, b[:len(again)]) {
			t.Fatalf("frame re-encodes differently")
		}
	})
}

func TestSensitiveAndLargeFields(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, Options{MaxInline: 64})
	e := testEntry(1)
	e.Reasoning = Sensitive("the account holder is Jane Doe")
	big := strings.Repeat("x", 1000)
	e.Result = Text(big)
	r, err := l.Append(context.Background(), e)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := l.ReadEntry(r.Index)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("Jane")) || bytes.Contains(raw, []byte(big)) {
		t.Fatalf("entry leaks a sensitive or large field: %s", raw)
	}
	got, err := DecodeEntry(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got.Result.Size != 1000 || got.Result.Text != "" {
		t.Fatalf("result stored as %+v, want by digest", got.Result)
	}
	blob, err := l.Blob(got.Result.Digest)
	if err != nil || string(blob) != big {
		t.Fatalf("blob: %v", err)
	}
	// The value is nowhere in plaintext: the side file has it sealed, the
	// salts file has the salt.
	for _, name := range []string{sideFile, saltsFile} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte("Jane")) {
			t.Fatalf("%s holds the plaintext: %s", name, b)
		}
	}
	var rec saltRecord
	b, _ := os.ReadFile(filepath.Join(dir, saltsFile))
	if err := json.Unmarshal(bytes.TrimSpace(bytes.TrimRight(b, "\x00")), &rec); err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha256.New, rec.Salt)
	mac.Write([]byte("the account holder is Jane Doe"))
	if rec.Index != r.Index || !hmac.Equal(mac.Sum(nil), got.Reasoning.Commitment[:]) || rec.HMAC != got.Reasoning.Commitment {
		t.Fatalf("salt record %+v does not open the commitment", rec)
	}
	if val, err := l.Reveal(r.Index, "reasoning"); err != nil || val != "the account holder is Jane Doe" {
		t.Fatalf("Reveal = %q, %v", val, err)
	}
	s, v := testKey(t, testOrigin)
	cp, _ := NewCheckpointer(l, s, CheckpointOptions{})
	if _, err := cp.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	// Deleting the salts (crypto-shredding) leaves the log verifiable.
	if err := os.Remove(filepath.Join(dir, saltsFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyDir(dir, v, VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := RevealDir(dir, r.Index, "reasoning"); !errors.Is(err, ErrShredded) {
		t.Fatalf("RevealDir after shredding: got %v, want ErrShredded", err)
	}
}

func TestSideFileTornTail(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, sideFile), []byte("{\"index\":0}\n{\"ind"), 0o600); err != nil {
		t.Fatal(err)
	}
	l := openTest(t, dir, Options{})
	e := testEntry(0)
	e.Instruction = Sensitive("secret")
	if _, err := l.Append(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	l.Close()
	side, _ := os.ReadFile(filepath.Join(dir, sideFile))
	if i := bytes.IndexByte(side, 0); i >= 0 {
		side = side[:i] // the zeros the file is extended with ahead of its end
	}
	lines := strings.Split(strings.TrimSuffix(string(side), "\n"), "\n")
	var rec sideRecord
	if len(lines) != 2 || json.Unmarshal([]byte(lines[1]), &rec) != nil || rec.Field != "instruction" {
		t.Fatalf("side file after a torn tail:\n%s", side)
	}
}

// benchEntry returns a ~1.3 KiB encoded decision entry, as the audit
// benchmarks in bench/ write.
func benchEntry(b *testing.B) []byte {
	e := vectorEntries()[0]
	e.Reasoning = Text(strings.Repeat("The invoice is due today. ", 26))
	enc, err := e.Encode()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(enc)))
	return enc
}

func BenchmarkDecodeEntry(b *testing.B) {
	enc := benchEntry(b)
	for b.Loop() {
		if _, err := DecodeEntry(enc); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDecodeVerifiedEntry: the decoder for already verified logs gives the
// same entries as DecodeEntry and still refuses what is not an entry.
func TestDecodeVerifiedEntry(t *testing.T) {
	for _, e := range vectorEntries() {
		b, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		strict, err := DecodeEntry(b)
		if err != nil {
			t.Fatal(err)
		}
		fast, err := DecodeVerifiedEntry(b)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(strict, fast); diff != "" {
			t.Errorf("DecodeVerifiedEntry differs from DecodeEntry (-strict +fast):\n%s", diff)
		}
	}
	good, _ := vectorEntries()[4].Encode()
	for _, in := range []string{
		``, `null`, `{}`, string(good) + `{}`,
		strings.Replace(string(good), `"v":1`, `"v":2`, 1),
		strings.Replace(string(good), `"kind":"note"`, `"kind":"nope"`, 1),
		strings.Replace(string(good), `"kind":"note",`, `"kind":"note","kind":"note",`, 1),
		strings.Replace(string(good), `{`, `{"zzz":1,`, 1),
		`{"closes":0,"kind":"note","time":"2026-11-22T10:00:00Z","v":1}`,
		`{"kind":"outcome","time":"2026-11-22T10:00:00Z","v":1}`,
		"{\"kind\":\"note\",\"message\":\"\xff\",\"time\":\"2026-11-22T10:00:00Z\",\"v\":1}",
	} {
		if _, err := DecodeVerifiedEntry([]byte(in)); err == nil {
			t.Errorf("DecodeVerifiedEntry(%q) succeeded, want error", in)
		}
	}
}

func BenchmarkCheckEntry(b *testing.B) {
	enc := benchEntry(b)
	var c entryChecker
	for b.Loop() {
		if err := c.check(enc); err != nil {
			b.Fatal(err)
		}
	}
}

func TestAttestationMembers(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	e := &Entry{Kind: KindAttestation, Time: now, Statement: "rulelock attestation v1\n...", Provider: "tpm", Evidence: []byte("attest AAAA\n"), Collateral: []byte{0, 1, 2}}
	b, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"attestation":"rulelock attestation v1\n...","collateral":"AAEC","evidence":"YXR0ZXN0IEFBQUEK","kind":"attestation","provider":"tpm","time":"2026-11-22T10:00:00Z","v":1}`
	if string(b) != want {
		t.Errorf("encoded %s, want %s", b, want)
	}
	d, err := DecodeEntry(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(e, d); diff != "" {
		t.Errorf("decode(encode(e)) differs (-want +got):\n%s", diff)
	}
	for name, e := range map[string]*Entry{
		"a statement on a note":           {Kind: KindNote, Time: now, Statement: "x"},
		"evidence on a decision":          {Kind: KindDecision, Time: now, Evidence: []byte{1}},
		"an attestation without evidence": {Kind: KindAttestation, Time: now, Statement: "x", Provider: "tpm", Collateral: []byte{1}},
		"an attestation without provider": {Kind: KindAttestation, Time: now, Statement: "x", Evidence: []byte{1}, Collateral: []byte{1}},
	} {
		if b, err := e.Encode(); err == nil {
			t.Errorf("%s: encoded %s", name, b)
		}
	}
}
