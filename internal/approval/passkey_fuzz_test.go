package approval

import (
	"bytes"
	"testing"
	"time"

	"github.com/rulelock/rulelock/internal/passkey/passkeytest"
)

// FuzzParsePasskeyApproval: whatever parses is canonical (Marshal gives
// the input back), and Open never panics on it.
func FuzzParsePasskeyApproval(f *testing.F) {
	a := passkeytest.New("alice", testOrigin)
	r := newRequest("req-1")
	r.Expires = t0.Add(time.Hour)
	f.Add(passkeyApproval(a, r, Approve, ""))
	f.Add(passkeyApproval(a, r, Reject, "not on the vendor list"))
	f.Add([]byte("rulelock approval v1\n\nwebauthn x\n"))
	reg := testRegistry(f)
	reg.AddPasskey(a.Credential)
	f.Fuzz(func(t *testing.T, b []byte) {
		reg.Open(b)
		p, err := ParsePasskeyApproval(b)
		if err != nil {
			return
		}
		if got := p.Marshal(); !bytes.Equal(got, b) {
			t.Fatalf("Marshal(Parse(%q)) = %q", b, got)
		}
	})
}
