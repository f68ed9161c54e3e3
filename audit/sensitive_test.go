package audit

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// sealedAction returns the canonical action {"card":<commitment>,"type":"pay"}
// and the salt that opens it.
func sealedAction(t testing.TB, card string) (string, Salt) {
	t.Helper()
	c, salt, err := Commit(rand.Reader, []byte(`"`+card+`"`))
	if err != nil {
		t.Fatal(err)
	}
	v := c.Value()[SensitiveKey].(map[string]any)
	return fmt.Sprintf(`{"card":{"%s":{"hmac":"%s","sealed":"%s"}},"type":"pay"}`, SensitiveKey, v["hmac"], v["sealed"]), salt
}

func TestCommitOpen(t *testing.T) {
	c, salt, err := Commit(rand.Reader, []byte("hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(c.Sealed, []byte("hunter2")) {
		t.Fatal("sealed value holds the plaintext")
	}
	got, err := c.Open(salt.Salt)
	if err != nil || string(got) != "hunter2" {
		t.Fatalf("Open = %q, %v; want hunter2", got, err)
	}
	other, _, _ := Commit(rand.Reader, []byte("hunter2"))
	if other.HMAC == c.HMAC {
		t.Fatal("two commitments to one value are equal: the salt is not fresh")
	}
	if _, err := other.Open(salt.Salt); err == nil {
		t.Fatal("a commitment opened with another's salt")
	}
	forged := Commitment{HMAC: other.HMAC, Sealed: c.Sealed}
	if _, err := forged.Open(salt.Salt); err == nil {
		t.Fatal("a sealed value opened against another commitment")
	}
	back, ok, err := ParseCommitment(c.Value())
	if !ok || err != nil || back.HMAC != c.HMAC || !bytes.Equal(back.Sealed, c.Sealed) {
		t.Fatalf("ParseCommitment(Value()) = %+v, %v, %v", back, ok, err)
	}
	for _, v := range []any{
		map[string]any{SensitiveKey: "x"},
		map[string]any{SensitiveKey: map[string]any{"hmac": "00", "sealed": ""}},
		map[string]any{SensitiveKey: c.Value()[SensitiveKey], "extra": true},
	} {
		if _, ok, err := ParseCommitment(v); !ok || err == nil {
			t.Errorf("ParseCommitment(%v): ok %v, err %v; want a malformed commitment", v, ok, err)
		}
	}
	if _, ok, err := ParseCommitment(map[string]any{"hmac": "x"}); ok || err != nil {
		t.Errorf("a plain object taken for a commitment")
	}
}

func TestRevealActionMember(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, Options{})
	action, salt := sealedAction(t, "4111111111111111")
	e := testEntry(1)
	e.Action, e.ActionSHA256 = Text(action), Digest{}
	e.Salts = []Salt{salt}
	r, err := l.Append(context.Background(), e)
	if err != nil {
		t.Fatal(err)
	}
	got, err := l.Reveal(r.Index, "action.card")
	if err != nil || got != `"4111111111111111"` {
		t.Fatalf("Reveal = %s, %v", got, err)
	}
	if _, err := l.Reveal(r.Index, "action.type"); !errors.Is(err, ErrNotSensitive) {
		t.Fatalf("Reveal of a plain member: %v, want ErrNotSensitive", err)
	}
	var c Commitment
	var v map[string]any
	json.Unmarshal([]byte(action), &v)
	c, _, _ = ParseCommitment(v["card"])
	if b, err := l.Unseal(c); err != nil || string(b) != `"4111111111111111"` {
		t.Fatalf("Unseal = %s, %v", b, err)
	}
	salts, err := os.ReadFile(filepath.Join(dir, saltsFile))
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(dir, saltsFile)); st.Mode().Perm() != 0o600 {
		t.Errorf("salts file mode %v, want 0600", st.Mode().Perm())
	}
	if bytes.Contains(salts, []byte("4111")) {
		t.Fatal("the salts file holds the value")
	}
	l.Close()
	// Reopened, the salts file goes on after its last line, not after the
	// zeros it was extended with.
	l = openTest(t, dir, Options{})
	action2, salt2 := sealedAction(t, "5500005555555559")
	e.Action, e.ActionSHA256, e.Salts = Text(action2), Digest{}, []Salt{salt2}
	r2, err := l.Append(context.Background(), e)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range map[int64]string{r.Index: "4111111111111111", r2.Index: "5500005555555559"} {
		if got, err := l.Reveal(i, "action.card"); err != nil || got != `"`+want+`"` {
			t.Fatalf("after reopening: Reveal(%d) = %s, %v; want %s", i, got, err, want)
		}
	}
	l.Close()
	if err := os.Remove(filepath.Join(dir, saltsFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := RevealDir(dir, r.Index, "action.card"); !errors.Is(err, ErrShredded) {
		t.Fatalf("RevealDir after shredding: %v, want ErrShredded", err)
	}
}

// BenchmarkAppendSensitive measures what sensitive values cost an append:
// an entry with N members of its action committed (Commit, and the salts
// file written and synced with the segment) against the same entry in
// plaintext.
func BenchmarkAppendSensitive(b *testing.B) {
	for _, n := range []int{0, 1, 4} {
		b.Run(fmt.Sprintf("sensitive=%d", n), func(b *testing.B) {
			l := openTest(b, b.TempDir(), Options{})
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				e := testEntry(1)
				if n > 0 {
					members := ""
					for k := range n {
						c, salt, err := Commit(rand.Reader, []byte(`"4111111111111111"`))
						if err != nil {
							b.Fatal(err)
						}
						v := c.Value()[SensitiveKey].(map[string]any)
						members += fmt.Sprintf(`"f%d":{"%s":{"hmac":"%s","sealed":"%s"}},`, k, SensitiveKey, v["hmac"], v["sealed"])
						e.Salts = append(e.Salts, salt)
					}
					e.Action, e.ActionSHA256 = Text(`{`+members+`"type":"pay"}`), Digest{}
				} else {
					e.Action, e.ActionSHA256 = Text(`{"f0":"4111111111111111","type":"pay"}`), Digest{}
				}
				if _, err := l.Append(ctx, e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCommit is the CPU cost of one sensitive value: salt, HMAC, key
// derivation and sealing.
func BenchmarkCommit(b *testing.B) {
	v := []byte(`"4111111111111111"`)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Commit(rand.Reader, v); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzParseCommitment: ParseCommitment never panics on a decoded JSON
// value, and a commitment it accepts re-encodes to the same value.
func FuzzParseCommitment(f *testing.F) {
	c, _, _ := Commit(rand.Reader, []byte(`"x"`))
	good, _ := json.Marshal(c.Value())
	f.Add(good)
	f.Add([]byte(`{"$commitment":{"hmac":"00","sealed":""}}`))
	f.Add([]byte(`{"$commitment":"x","y":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var v any
		if json.Unmarshal(b, &v) != nil {
			return
		}
		c, ok, err := ParseCommitment(v)
		if !ok || err != nil {
			return
		}
		again, ok, err := ParseCommitment(c.Value())
		if !ok || err != nil || again.HMAC != c.HMAC || !bytes.Equal(again.Sealed, c.Sealed) {
			t.Fatalf("%s: re-parsed as %+v, %v, %v", b, again, ok, err)
		}
		want, _ := json.Marshal(v)
		got, _ := json.Marshal(c.Value())
		if !bytes.Equal(got, want) {
			t.Fatalf("accepted %s, re-encodes as %s", want, got)
		}
	})
}
