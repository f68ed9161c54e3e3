package audit

import (
	"bytes"
	"testing"
	"unicode/utf8"
)

// FuzzWireMatchesEncodingJSON checks the hand-written encoder against
// encoding/json (without HTML escaping), the definition of the encoding.
func FuzzWireMatchesEncodingJSON(f *testing.F) {
	f.Add("agent-42", "Transfers over $10,000 <b> & \u2028 \x01 \"q\" \\", `{"a":1}`, []byte{1, 2, 3}, int64(7), true)
	f.Add("", "", "", []byte(nil), int64(0), false)
	f.Fuzz(func(t *testing.T, s1, s2, s3 string, sig []byte, n int64, flag bool) {
		if !utf8.ValidString(s1) || !utf8.ValidString(s2) || !utf8.ValidString(s3) || n < 0 {
			return
		}
		d := Digest{1, 2, 3}
		w := wireEntry{
			Action: &Field{Text: s3}, ActionSHA256: &d, Agent: s1, Approver: s2, BundleDigest: s1,
			Closes: &n, Decision: s2, EngineVersion: s1, Instruction: &Field{Digest: d, Size: n},
			Kind: Kind(s2), Message: s3, Postconditions: []Verdict{{Holds: flag, Message: s1, Rule: s2}, {Rule: s3}},
			Raw: &Field{Digest: d, Size: n}, Reasoning: &Field{Commitment: d}, RequestID: s2, Rules: []Rule{{Message: s3, Name: s1, Outcome: s2, Shadow: flag}, {Name: s2}},
			Session: s1, Signature: sig, Signers: []string{s1, s2, s3}, Status: s3, Time: s1, V: 1,
			Attestation: s3, Provider: s1, Evidence: sig, Collateral: []byte(s2),
		}
		if flag {
			w.Closes, w.ActionSHA256, w.Action, w.Rules, w.Raw = nil, nil, nil, nil, nil
		}
		want, err := marshal(w)
		if err != nil {
			t.Fatal(err)
		}
		got, err := w.appendJSON(nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("hand encoder differs from encoding/json:\n got %s\nwant %s", got, want)
		}
	})
}
