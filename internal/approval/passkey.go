package approval

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"

	"github.com/rulelock/rulelock/internal/passkey"
)

// MaxPasskeySize is the size limit of a passkey-signed statement (a
// credential id alone may be 1023 bytes).
const MaxPasskeySize = 8192

// A PasskeyApproval is a statement signed with an approver's passkey: the
// second form Registry.Open accepts besides the Ed25519 signed note. Its
// canonical text is the statement, a blank line, and six lines (the
// binary fields in unpadded base64url):
//
//	rulelock approval v1
//	request req-42
//	...
//	verdict approve
//
//	webauthn alice@example.com
//	credential <credential id>
//	nonce <32-byte server nonce>
//	authenticator-data <authenticatorData>
//	client-data <clientDataJSON>
//	signature <signature>
//
// The WebAuthn challenge was SHA-256(statement text) || nonce (see
// internal/passkey), so the assertion signs the statement.
type PasskeyApproval struct {
	Approver  string
	Statement Statement
	Assertion passkey.Assertion
}

var passkeyKeys = []string{"credential", "nonce", "authenticator-data", "client-data", "signature"}

// Marshal returns the canonical text of p.
func (p PasskeyApproval) Marshal() []byte {
	var b bytes.Buffer
	b.Write(p.Statement.Marshal())
	b.WriteString("\nwebauthn " + p.Approver + "\n")
	a := p.Assertion
	for i, v := range [][]byte{a.Credential, a.Nonce, a.AuthenticatorData, a.ClientDataJSON, a.Signature} {
		b.WriteString(passkeyKeys[i] + " " + base64.RawURLEncoding.EncodeToString(v) + "\n")
	}
	return b.Bytes()
}

// isPasskeyForm reports whether signed claims to be a PasskeyApproval
// (its signature block starts with "webauthn "); ParsePasskeyApproval
// decides whether it is one.
func isPasskeyForm(signed []byte) bool {
	_, sig, ok := bytes.Cut(signed, []byte("\n\n"))
	return ok && bytes.HasPrefix(sig, []byte("webauthn "))
}

// ParsePasskeyApproval parses the canonical text of a PasskeyApproval: it
// accepts exactly what Marshal produces.
func ParsePasskeyApproval(signed []byte) (PasskeyApproval, error) {
	var p PasskeyApproval
	if len(signed) > MaxPasskeySize {
		return p, fmt.Errorf("%d bytes, over the %d-byte limit", len(signed), MaxPasskeySize)
	}
	text, sig, ok := bytes.Cut(signed, []byte("\n\n"))
	if !ok || !bytes.HasSuffix(sig, []byte("\n")) {
		return p, fmt.Errorf("want a statement, a blank line and the webauthn lines")
	}
	st, err := ParseStatement(append(text, '\n'))
	if err != nil {
		return p, err
	}
	lines := strings.Split(string(sig[:len(sig)-1]), "\n")
	if len(lines) != 1+len(passkeyKeys) {
		return p, fmt.Errorf("%d webauthn lines, want %d", len(lines), 1+len(passkeyKeys))
	}
	approver, ok := strings.CutPrefix(lines[0], "webauthn ")
	if !ok || !validID(approver) {
		return p, fmt.Errorf("webauthn line: want webauthn <approver id>")
	}
	vals := make([][]byte, len(passkeyKeys))
	for i, k := range passkeyKeys {
		v, ok := strings.CutPrefix(lines[1+i], k+" ")
		if !ok {
			return p, fmt.Errorf("line %q: want %s <base64url>", lines[1+i], k)
		}
		if vals[i], err = passkey.Decode(v); err != nil {
			return p, fmt.Errorf("%s: %w", k, err)
		}
	}
	p.Approver, p.Statement = approver, st
	p.Assertion = passkey.Assertion{Credential: vals[0], Nonce: vals[1], AuthenticatorData: vals[2], ClientDataJSON: vals[3], Signature: vals[4]}
	if !bytes.Equal(p.Marshal(), signed) {
		return PasskeyApproval{}, fmt.Errorf("not in canonical form")
	}
	return p, nil
}

// openPasskey is Open for a PasskeyApproval: the approver is configured,
// the credential is one of theirs, and the assertion verifies (offline:
// passkey.Verify).
func (r *Registry) openPasskey(signed []byte) (string, Statement, error) {
	p, err := ParsePasskeyApproval(signed)
	if err != nil {
		return "", Statement{}, &openError{ErrBadStatement, "passkey approval: " + err.Error()}
	}
	if r.byID[p.Approver] == nil {
		return "", Statement{}, &openError{ErrUnknownApprover, "passkey approval names " + p.Approver}
	}
	c, ok := r.credential(p.Approver, p.Assertion.Credential)
	if !ok {
		return "", Statement{}, &openError{ErrUnknownApprover, "no such passkey enrolled for " + p.Approver}
	}
	if err := passkey.Verify(c, p.Statement.Marshal(), p.Assertion); err != nil {
		return p.Approver, Statement{}, &openError{ErrBadSignature, err.Error()}
	}
	return p.Approver, p.Statement, nil
}

// AddPasskey makes an enrolled passkey count for its approver: a
// configured approver; when the config pins the approver's passkeys
// (Approver.Passkeys), one of those keys; and a credential id and key no
// other enrolled passkey has (one key must not count as two approvers).
// Adding the same credential again is a no-op.
func (r *Registry) AddPasskey(c passkey.Credential) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	known, err := r.checkPasskey(c)
	if err != nil || known {
		return err
	}
	if r.passkeys == nil {
		r.passkeys = map[string][]passkey.Credential{}
	}
	r.passkeys[c.Approver] = append(r.passkeys[c.Approver], c)
	return nil
}

// CheckPasskey reports whether AddPasskey would accept c, changing
// nothing.
func (r *Registry) CheckPasskey(c passkey.Credential) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, err := r.checkPasskey(c)
	return err
}

// checkPasskey is CheckPasskey under r.mu; known is true when c is
// already enrolled.
func (r *Registry) checkPasskey(c passkey.Credential) (known bool, err error) {
	if err := c.Check(); err != nil {
		return false, err
	}
	a := r.byID[c.Approver]
	if a == nil {
		return false, fmt.Errorf("passkey for %q: no such approver", c.Approver)
	}
	fp := c.Fingerprint()
	if len(a.Passkeys) > 0 && !slices.Contains(a.Passkeys, fp) {
		return false, fmt.Errorf("passkey %s for %q: not among the approver's pinned passkeys", fp, c.Approver)
	}
	for _, cs := range r.passkeys {
		for _, o := range cs {
			switch {
			case bytes.Equal(o.ID, c.ID) && bytes.Equal(o.PublicKey, c.PublicKey) && o.Approver == c.Approver && o.Origin == c.Origin:
				return true, nil
			case bytes.Equal(o.ID, c.ID) || bytes.Equal(o.PublicKey, c.PublicKey):
				return false, fmt.Errorf("passkey %s for %q: already enrolled for %q", fp, c.Approver, o.Approver)
			}
		}
	}
	return false, nil
}

// Passkeys returns approver's enrolled passkeys.
func (r *Registry) Passkeys(approver string) []passkey.Credential {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Clone(r.passkeys[approver])
}

// PasskeyOwner returns the enrolled passkey with credential id id.
func (r *Registry) PasskeyOwner(id []byte) (passkey.Credential, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, cs := range r.passkeys {
		for _, c := range cs {
			if bytes.Equal(c.ID, id) {
				return c, true
			}
		}
	}
	return passkey.Credential{}, false
}

func (r *Registry) credential(approver string, id []byte) (passkey.Credential, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, c := range r.passkeys[approver] {
		if bytes.Equal(c.ID, id) {
			return c, true
		}
	}
	return passkey.Credential{}, false
}

// WithoutPasskeys returns a registry of the same approvers and keys with
// no passkeys enrolled: a verifier learns them from the log it reads.
func (r *Registry) WithoutPasskeys() *Registry {
	return &Registry{byID: r.byID, verifiers: r.verifiers}
}

// IsPasskeyApproval reports whether signed is in the PasskeyApproval form
// (not whether it verifies: Open says that).
func IsPasskeyApproval(signed []byte) bool { return isPasskeyForm(signed) }

// CarryPasskeys adds to r the passkeys enrolled in from (a reload of the
// configuration keeps what approvers enrolled). One that no longer fits r
// (its approver removed, a pin that excludes it) does not count.
func (r *Registry) CarryPasskeys(from *Registry) {
	if from == nil {
		return
	}
	from.mu.RLock()
	var cs []passkey.Credential
	for _, l := range from.passkeys {
		cs = append(cs, l...)
	}
	from.mu.RUnlock()
	for _, c := range cs {
		r.AddPasskey(c)
	}
}
