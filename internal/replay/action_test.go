package replay_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/replay"
)

// substituted is the log with the bytes of one entry replaced: what a
// replay reads from a log an insider rewrote (and signed again).
type substituted struct {
	*audit.Log
	index int64
	raw   []byte
}

func (s substituted) ReadEntries(lo, hi int64) ([][]byte, error) {
	out, err := s.Log.ReadEntries(lo, hi)
	if err == nil && lo <= s.index && s.index < hi {
		out[s.index-lo] = s.raw
	}
	return out, err
}

// TestVerifyActionMismatch: a decision whose stored action is not the
// canonical action its action_sha256 names is an action_mismatch finding,
// never evaluated as if it were: an action text that is not canonical (its
// hash matches the text), and an action stored as a blob whose
// action_sha256 names another action.
func TestVerifyActionMismatch(t *testing.T) {
	var r *recorded
	forge := func(t *testing.T, action string) int64 {
		var last *audit.Entry
		for i := range r.log.Size() {
			raw, _ := r.log.ReadEntry(i)
			if e, _ := audit.DecodeEntry(raw); e.Kind == audit.KindDecision {
				last = e
			}
		}
		f := *last
		f.RequestID = fmt.Sprintf("rforged%d", r.log.Size())
		f.Time = last.Time.Add(time.Minute)
		f.Action, f.ActionSHA256 = audit.Text(action), audit.Digest{}
		rc, err := r.log.Append(context.Background(), &f)
		if err != nil {
			t.Fatal(err)
		}
		return rc.Index
	}
	canonical := `{"amount":10,"memo":"` + strings.Repeat("m", 5000) + `","to":"acct-1","type":"transfer"}`
	tests := []struct {
		name string
		lr   func(t *testing.T) (int64, substituted)
	}{
		{"non-canonical text with a matching hash", func(t *testing.T) (int64, substituted) {
			i := forge(t, `{"type":"transfer","amount":10,"to":"acct-1"}`)
			return i, substituted{Log: r.log, index: -1}
		}},
		{"non-canonical number", func(t *testing.T) (int64, substituted) {
			i := forge(t, `{"amount":1E1,"to":"acct-1","type":"transfer"}`)
			return i, substituted{Log: r.log, index: -1}
		}},
		{"blob with another action_sha256", func(t *testing.T) (int64, substituted) {
			i := forge(t, canonical)
			raw, _ := r.log.ReadEntry(i)
			sum := sha256.Sum256([]byte(canonical))
			other := sha256.Sum256([]byte(`{"amount":10,"to":"acct-evil","type":"transfer"}`))
			changed := strings.Replace(string(raw), fmt.Sprintf(`"action_sha256":"%x"`, sum), fmt.Sprintf(`"action_sha256":"%x"`, other), 1)
			if changed == string(raw) {
				t.Fatalf("entry %d: no action_sha256 %x in %s", i, sum, raw)
			}
			return i, substituted{Log: r.log, index: i, raw: []byte(changed)}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r = record(t, 2, 20)
			i, lr := tt.lr(t)
			sum, err := replay.Verify(lr, replay.Options{Bundles: filepath.Join(r.data, "bundles")})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range sum.Findings {
				got = append(got, fmt.Sprintf("%d %s", f.Index, f.Class))
			}
			if want := fmt.Sprintf("%d %s", i, replay.ActionMismatch); !slicesHave(got, []string{want}) {
				t.Fatalf("findings %v, want %s among them", got, want)
			}
		})
	}
}
