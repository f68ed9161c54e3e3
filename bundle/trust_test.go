package bundle_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/rulelock/rulelock/bundle"
)

func TestParseTrust(t *testing.T) {
	alice, bob := newKey(t, "alice"), newKey(t, "bob")
	good := "rulelock trust v1\nthreshold 2\nkey " + alice.vkey + "\nkey " + bob.vkey + "\n"
	tr, err := bundle.ParseTrust([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if tr.Threshold() != 2 || len(tr.Keys()) != 2 || string(tr.Marshal()) != good {
		t.Errorf("ParseTrust: got threshold %d, keys %v, encoding %q", tr.Threshold(), tr.Keys(), tr.Marshal())
	}
	if tr2, err := bundle.NewTrust(2, bob.vkey, alice.vkey); err != nil || string(tr2.Marshal()) != good {
		t.Errorf("NewTrust: got %v", err)
	}
	line := func(old, new string) string { return strings.Replace(good, old, new, 1) }
	b64 := strings.SplitN(alice.vkey, "+", 3)[2]
	for _, tt := range []struct{ name, text string }{
		{"empty", ""},
		{"no final newline", strings.TrimSuffix(good, "\n")},
		{"another header", line("v1", "v2")},
		{"no keys", "rulelock trust v1\nthreshold 1\n"},
		{"threshold 0", line("threshold 2", "threshold 0")},
		{"threshold over N", line("threshold 2", "threshold 3")},
		{"threshold leading zero", line("threshold 2", "threshold 02")},
		{"comment", line("threshold 2\n", "threshold 2\n# the security team\n")},
		{"blank line", line("threshold 2\n", "threshold 2\n\n")},
		{"trailing space", line(alice.vkey, alice.vkey+" ")},
		{"carriage return", line(alice.vkey, alice.vkey+"\r")},
		{"uppercase hash", line(alice.vkey, strings.ToUpper(alice.vkey[:14])+alice.vkey[14:])},
		{"bad key", line(b64, "AAAA"+b64[4:])},
		{"unsorted", "rulelock trust v1\nthreshold 2\nkey " + bob.vkey + "\nkey " + alice.vkey + "\n"},
		{"duplicate key", "rulelock trust v1\nthreshold 2\nkey " + alice.vkey + "\nkey " + alice.vkey + "\n"},
		{"two keys, one name", "rulelock trust v1\nthreshold 2\nkey " + alice.vkey + "\nkey " + newKey(t, "alice").vkey + "\n"},
		{"a signing key", line("key "+alice.vkey, "key PRIVATE+KEY+"+alice.vkey)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := bundle.ParseTrust([]byte(tt.text)); !errors.Is(err, bundle.ErrBadTrust) {
				t.Errorf("ParseTrust: got %v, want bad_trust", err)
			}
		})
	}
}
