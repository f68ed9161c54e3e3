package httpapi_test

import (
	"bytes"
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/gateway"
	"github.com/rulelock/rulelock/internal/httpapi"
	"github.com/rulelock/rulelock/policy"
)

// TestRefusalRecordsRawBytes: the refusal entry of a body that could not
// be decoded holds the SHA-256 and size of exactly the bytes sent, the
// bytes themselves are in the blob store under that digest, and the log
// verifies.
func TestRefusalRecordsRawBytes(t *testing.T) {
	dir := t.TempDir()
	l, err := audit.Open(dir, audit.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	skey, vkey, err := note.GenerateKey(nil, "test.rulelock/log")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	verifier, _ := note.NewVerifier(vkey)
	cp, err := audit.NewCheckpointer(l, signer, audit.CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.FromSources([]policy.Source{{Name: "p.rules", Data: []byte(rules)}}, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{Policy: p, Log: l})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(httpapi.New(httpapi.Config{
		Gateway: gw,
		Tokens:  []httpapi.Token{{SHA256: httpapi.HashToken("token-a"), Agent: policy.Agent{ID: "agent-a"}}},
		Log:     &httpapi.AuditLog{Log: l, Checkpointer: cp},
		Ready:   func() bool { return true },
		MaxBody: 1024,
	}))
	defer srv.Close()
	e := &env{url: srv.URL, log: l}

	for _, body := range []string{
		"{\"action\": {\"type\": \"transfer\", \"to\": \"acct-\xff\xfe\", \"amount\": 5}}", // not UTF-8
		`{"action": {"type": "transfer", "amount": 5,`,                                     // malformed
		`{"action": {"type": "transfer", "amount": 5, "amount": 6}}`,                       // duplicate key
		`{"action": {"type": "transfer", "amount": 1e400}}`,                                // lossy number
		strings.Repeat("[", 200) + strings.Repeat("]", 200),                                // too deep
	} {
		r := e.do(t, "POST", "/v1/actions", "token-a", "application/json", body)
		if r.status != http.StatusBadRequest {
			t.Fatalf("%q: got %d %s, want 400", body, r.status, r.raw)
		}
		idx := int64(r.body["receipt"].(map[string]any)["index"].(float64))
		b, err := l.ReadEntry(idx)
		if err != nil {
			t.Fatal(err)
		}
		ent, err := audit.DecodeEntry(b)
		if err != nil {
			t.Fatal(err)
		}
		if want := audit.Digest(sha256.Sum256([]byte(body))); ent.Raw.Digest != want || ent.Raw.Size != int64(len(body)) {
			t.Errorf("%q: raw %v (%d bytes), want %v (%d bytes)", body, ent.Raw.Digest, ent.Raw.Size, want, len(body))
		}
		if got, err := l.Blob(ent.Raw.Digest); err != nil || !bytes.Equal(got, []byte(body)) {
			t.Errorf("%q: blob %q, %v; want the bytes sent", body, got, err)
		}
		if ent.Decision != "deny" || !strings.HasPrefix(ent.Message, "bad_request: ") {
			t.Errorf("%q: entry %s", body, b)
		}
	}
	if _, err := cp.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.VerifyDir(dir, verifier, audit.VerifyOptions{}); err != nil {
		t.Fatalf("verify: %v", err)
	}
}
