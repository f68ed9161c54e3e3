package bundle

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"sort"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

const (
	trustHeader  = "rulelock trust v1"
	maxTrustSize = 64 << 10
	maxTrustKeys = 100
)

// A Trust says whose signatures a bundle needs: N verifier keys and a
// threshold M (1 ≤ M ≤ N). Key names are unique and so are the public keys,
// so M distinct keys are M distinct private keys (give each signer one key;
// a rotated key replaces the old one). Build one with ParseTrust or NewTrust.
type Trust struct {
	threshold int
	keys      []string          // verifier keys, sorted by name
	names     map[string]string // key name -> its public key (algorithm and key bytes, base64)
	verifiers note.Verifiers
}

// NewTrust returns a Trust of the given verifier keys (note format,
// name+hash+key) in any order.
func NewTrust(threshold int, vkeys ...string) (*Trust, error) {
	sorted := append([]string(nil), vkeys...)
	sort.Slice(sorted, func(i, j int) bool { return keyName(sorted[i]) < keyName(sorted[j]) })
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\nthreshold %d\n", trustHeader, threshold)
	for _, k := range sorted {
		fmt.Fprintf(&b, "key %s\n", k)
	}
	return ParseTrust(b.Bytes())
}

func keyName(vkey string) string {
	name, _, _ := strings.Cut(vkey, "+")
	return name
}

// ParseTrust parses a trust file in its canonical encoding:
//
//	rulelock trust v1
//	threshold <M>
//	key <name>+<hash>+<key>   (N lines, sorted by name, names unique, keys unique)
//
// Nothing else is accepted: no comments, blank lines or extra white space.
// One public key under two names is refused: its one private key would
// count twice towards the threshold.
func ParseTrust(text []byte) (*Trust, error) {
	if len(text) > maxTrustSize {
		return nil, errorf(ErrBadTrust, "", "%d bytes, over the %d-byte cap", len(text), maxTrustSize)
	}
	if len(text) == 0 || text[len(text)-1] != '\n' {
		return nil, errorf(ErrBadTrust, "", "does not end in a newline")
	}
	lines := strings.Split(string(text[:len(text)-1]), "\n")
	bad := func(line int, format string, args ...any) error {
		return errorf(ErrBadTrust, "", "line %d: %s", line, fmt.Sprintf(format, args...))
	}
	if lines[0] != trustHeader {
		return nil, bad(1, "want %q", trustHeader)
	}
	if len(lines) < 3 {
		return nil, bad(len(lines)+1, "want threshold M and at least one key line")
	}
	v, ok := strings.CutPrefix(lines[1], "threshold ")
	m, err := parseUint(v)
	if !ok || err != nil || m == 0 {
		return nil, bad(2, "want threshold M, a decimal integer from 1")
	}
	t := &Trust{names: map[string]string{}}
	lineOf := map[string]int{} // public key -> its line
	var list []note.Verifier
	for i, line := range lines[2:] {
		k, ok := strings.CutPrefix(line, "key ")
		if !ok {
			return nil, bad(i+3, "want key NAME+HASH+KEY")
		}
		if len(list) == maxTrustKeys {
			return nil, bad(i+3, "more than %d keys", maxTrustKeys)
		}
		ver, err := note.NewVerifier(k)
		if err != nil {
			return nil, bad(i+3, "%v", err)
		}
		if canon := verifierKey(ver, k); canon != k {
			return nil, bad(i+3, "key is not in canonical form")
		}
		if n := len(list); n > 0 && ver.Name() <= list[n-1].Name() {
			return nil, bad(i+3, "key %s: keys must be sorted by name, and names unique", ver.Name())
		}
		pub := strings.SplitN(k, "+", 3)[2]
		if first, ok := lineOf[pub]; ok {
			return nil, bad(i+3, "key %s: the same public key as line %d: one private key must not count twice", ver.Name(), first)
		}
		lineOf[pub] = i + 3
		list = append(list, ver)
		t.keys = append(t.keys, k)
		t.names[ver.Name()] = pub
	}
	if m > uint64(len(list)) {
		return nil, bad(2, "threshold %d is more than the %d keys", m, len(list))
	}
	t.threshold = int(m)
	t.verifiers = note.VerifierList(list...)
	return t, nil
}

// verifierKey returns the canonical spelling of the key k that
// note.NewVerifier parsed as v: its name, its hash as 8 lowercase hex digits
// and its key in padded standard base64 (the decoder would tolerate stray
// carriage returns and other spellings).
func verifierKey(v note.Verifier, k string) string {
	parts := strings.SplitN(k, "+", 3)
	if len(parts) != 3 {
		return ""
	}
	key, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%s+%08x+%s", v.Name(), v.KeyHash(), base64.StdEncoding.EncodeToString(key))
}

// Marshal returns t's canonical encoding, which ParseTrust accepts.
func (t *Trust) Marshal() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\nthreshold %d\n", trustHeader, t.threshold)
	for _, k := range t.keys {
		fmt.Fprintf(&b, "key %s\n", k)
	}
	return b.Bytes()
}

// Threshold returns M, the number of distinct trusted keys that must sign.
func (t *Trust) Threshold() int { return t.threshold }

// Keys returns the N trusted verifier keys, sorted by name.
func (t *Trust) Keys() []string { return append([]string(nil), t.keys...) }
