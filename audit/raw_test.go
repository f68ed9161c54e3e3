package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRawField: a refusal's raw body, any bytes, is encoded by SHA-256 and
// size (the same by Encode and by Append), kept in the blob store within
// MaxRaw, and only the digest form decodes.
func TestRawField(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, Options{MaxRaw: 16})
	s, v := testKey(t, testOrigin)
	for _, body := range []string{"{\"to\": \"\xff\xfe\x00\"}", strings.Repeat("x", 17)} {
		e := &Entry{Kind: KindDecision, Time: testEntry(0).Time, Agent: "agent-42", Decision: "deny", Message: "bad_request: invalid UTF-8", Raw: Field{Text: body}}
		enc, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		r, err := l.Append(context.Background(), e)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := l.ReadEntry(r.Index)
		if !bytes.Equal(got, enc) {
			t.Errorf("Append wrote %s, Encode gives %s", got, enc)
		}
		d, err := DecodeEntry(got)
		if err != nil {
			t.Fatal(err)
		}
		if d.Raw.Digest != sha256.Sum256([]byte(body)) || d.Raw.Size != int64(len(body)) || d.Raw.Text != "" {
			t.Errorf("raw read back as %+v", d.Raw)
		}
		blob, err := l.Blob(d.Raw.Digest)
		if kept := len(body) <= 16; kept != (err == nil) || kept && !bytes.Equal(blob, []byte(body)) {
			t.Errorf("%d-byte body: blob %q, %v; want it kept only within MaxRaw", len(body), blob, err)
		}
	}
	cp, _ := NewCheckpointer(l, s, CheckpointOptions{})
	if _, err := cp.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := VerifyDir(dir, v, VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		`{"decision":"deny","kind":"decision","raw":"text","time":"2026-11-22T10:00:00Z","v":1}`,
		`{"decision":"deny","kind":"decision","raw":{"hmac":"` + strings.Repeat("ab", 32) + `"},"time":"2026-11-22T10:00:00Z","v":1}`,
	} {
		if _, err := DecodeEntry([]byte(bad)); err == nil {
			t.Errorf("DecodeEntry accepted %s", bad)
		}
	}
	if _, err := (&Entry{Kind: KindNote, Time: testEntry(0).Time, Raw: Field{Commitment: Digest{1}}}).Encode(); err == nil {
		t.Error("Encode accepted a raw commitment")
	}
}

// TestVerifyRawBlob: a refusal's raw bytes may be deleted (they are kept
// only up to MaxRaw, and may hold what an agent should not have sent), but
// raw bytes that are present must be the ones the entry names.
func TestVerifyRawBlob(t *testing.T) {
	body := "{\"to\": \"\xff\"}"
	sum := Digest(sha256.Sum256([]byte(body)))
	for _, tt := range []struct {
		name    string
		tamper  func(path string)
		wantErr bool
	}{
		{"kept", func(string) {}, false},
		{"deleted", func(p string) { os.Remove(p) }, false},
		{"rewritten", func(p string) { os.Chmod(p, 0o600); os.WriteFile(p, []byte("{\"to\": \"\xfe\"}"), 0o600) }, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openTest(t, dir, Options{})
			s, v := testKey(t, testOrigin)
			e := &Entry{Kind: KindDecision, Time: testEntry(0).Time, Agent: "agent-42", Decision: "deny", Message: "bad_request: invalid UTF-8", Raw: Field{Text: body}}
			if _, err := l.Append(context.Background(), e); err != nil {
				t.Fatal(err)
			}
			cp, _ := NewCheckpointer(l, s, CheckpointOptions{})
			if _, err := cp.Checkpoint(); err != nil {
				t.Fatal(err)
			}
			l.Close()
			tt.tamper(filepath.Join(dir, blobDir, sum.String()))
			_, err := VerifyDir(dir, v, VerifyOptions{})
			if tt.wantErr {
				wantClass(t, err, ModifiedEntry, 0)
			} else if err != nil {
				t.Fatalf("verify: %v", err)
			}
		})
	}
}
