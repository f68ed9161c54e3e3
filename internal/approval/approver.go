package approval

import (
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/internal/passkey"
)

// An Approver is a human who may approve or reject parked requests.
type Approver struct {
	ID     string   // the name of the approver's note key
	Groups []string // the groups the approver belongs to, such as "treasury"
	Key    string   // verifier key, <name>+<hash>+<base64>, as rulelock keygen prints it; optional for an approver who votes with a passkey
	// Passkeys pins the approver's passkeys by their fingerprints
	// (passkey.Credential.Fingerprint): when set, only these enrolled
	// passkeys count (AddPasskey). See internal/passkey for the trust model.
	Passkeys []string
}

// A Registry is a fixed set of approvers and their keys.
type Registry struct {
	byID      map[string]*Approver
	verifiers note.Verifiers

	mu       sync.RWMutex
	passkeys map[string][]passkey.Credential // enrolled passkeys by approver (AddPasskey)
}

// NewRegistry checks the approvers and returns their registry. Each key must
// parse, each id must equal its key's name, and ids and public keys must be
// distinct: one private key under two names would count as two approvers.
// An approver without a key votes only with passkeys (AddPasskey).
func NewRegistry(approvers []Approver) (*Registry, error) {
	r := &Registry{byID: make(map[string]*Approver, len(approvers))}
	var vs []note.Verifier
	owner := map[string]string{} // public key -> approver id
	for i, a := range approvers {
		if a.Key == "" {
			if !validID(a.ID) || r.byID[a.ID] != nil {
				return nil, fmt.Errorf("approver %d (%q): invalid or duplicate id", i+1, a.ID)
			}
			a.Groups, a.Passkeys = slices.Clone(a.Groups), slices.Clone(a.Passkeys)
			r.byID[a.ID] = &a
			continue
		}
		v, err := note.NewVerifier(strings.TrimSpace(a.Key))
		pub := PublicKey(a.Key)
		switch {
		case err != nil:
			return nil, fmt.Errorf("approver %d (%q): key: %w", i+1, a.ID, err)
		case v.Name() != a.ID:
			return nil, fmt.Errorf("approver %d (%q): key is named %q, want the approver id", i+1, a.ID, v.Name())
		case r.byID[a.ID] != nil:
			return nil, fmt.Errorf("approver %d (%q): duplicate id", i+1, a.ID)
		case owner[pub] != "":
			return nil, fmt.Errorf("approver %d (%q): the same public key as approver %q: one private key must not count as two approvers", i+1, a.ID, owner[pub])
		}
		owner[pub] = a.ID
		a.Groups, a.Passkeys = slices.Clone(a.Groups), slices.Clone(a.Passkeys)
		r.byID[a.ID] = &a
		vs = append(vs, v)
	}
	r.verifiers = note.VerifierList(vs...)
	return r, nil
}

// PublicKey returns the public key of a verifier key (name+hash+key): the
// algorithm and key bytes, whatever name they go under; "" if vkey does
// not parse.
func PublicKey(vkey string) string {
	parts := strings.SplitN(strings.TrimSpace(vkey), "+", 3)
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil {
		return ""
	}
	return string(b)
}

// Approver returns the approver with the given id.
func (r *Registry) Approver(id string) (Approver, bool) {
	a, ok := r.byID[id]
	if !ok {
		return Approver{}, false
	}
	return Approver{ID: a.ID, Groups: slices.Clone(a.Groups), Key: a.Key, Passkeys: slices.Clone(a.Passkeys)}, true
}

// Open verifies a signed statement: a note of at most MaxNoteSize bytes in
// canonical form (the statement, a blank line, exactly one signature line)
// signed by a configured approver, whose text is a canonical statement.
// Or signed is a PasskeyApproval (at most MaxPasskeySize bytes) whose
// assertion verifies under one of the approver's enrolled passkeys.
// It returns the approver's id and the statement. The errors wrap
// ErrBadStatement, ErrUnknownApprover or ErrBadSignature.
func (r *Registry) Open(signed []byte) (string, Statement, error) {
	if isPasskeyForm(signed) {
		return r.openPasskey(signed)
	}
	name, text, err := r.OpenNote(signed)
	if err != nil {
		return "", Statement{}, err
	}
	st, err := ParseStatement([]byte(text))
	if err != nil {
		return name, Statement{}, &openError{ErrBadStatement, err.Error()}
	}
	return name, st, nil
}

// OpenNote verifies a signed note of at most MaxNoteSize bytes in canonical
// form (its text, a blank line, exactly one signature line) signed by a
// configured approver's key, and returns the approver's id and the text,
// which it does not interpret: the caller parses its own statement
// (approvals here, freezes in internal/freeze). The errors wrap
// ErrBadStatement, ErrUnknownApprover or ErrBadSignature.
func (r *Registry) OpenNote(signed []byte) (approver, text string, err error) {
	if len(signed) > MaxNoteSize {
		return "", "", &openError{ErrBadStatement, fmt.Sprintf("%d bytes, over the %d-byte limit", len(signed), MaxNoteSize)}
	}
	n, err := note.Open(signed, r.verifiers)
	var unverified *note.UnverifiedNoteError
	var invalid *note.InvalidSignatureError
	switch {
	case errors.As(err, &unverified):
		return "", "", &openError{ErrUnknownApprover, ""}
	case errors.As(err, &invalid):
		return "", "", &openError{ErrBadSignature, ""}
	case err != nil:
		return "", "", &openError{ErrBadStatement, err.Error()}
	case len(n.Sigs) != 1 || len(n.UnverifiedSigs) != 0:
		return "", "", &openError{ErrBadStatement, "want exactly one signature"}
	}
	sig := n.Sigs[0]
	raw, err := base64.StdEncoding.DecodeString(sig.Base64)
	if err != nil || string(signed) != n.Text+"\n— "+sig.Name+" "+base64.StdEncoding.EncodeToString(raw)+"\n" {
		return "", "", &openError{ErrBadStatement, "note is not in canonical form"}
	}
	return sig.Name, n.Text, nil
}

// openError is a refusal from Open before a request is known; the Manager
// turns it into a RefusalError.
type openError struct {
	err    *Error
	detail string
}

func (e *openError) Error() string {
	if e.detail == "" {
		return "open statement: " + e.err.text
	}
	return "open statement: " + e.err.text + ": " + e.detail
}

func (e *openError) Unwrap() error { return e.err }

// StillNeeded returns, for each of req's requirements in order, how many
// more eligible approvers it needs: its count less the accepted approvals
// whose approver is eligible for it, and never below zero. The request
// has its quorum when every number is zero. An approver in several groups
// counts toward every requirement they are eligible for.
func (r *Registry) StillNeeded(req Request) []int {
	out := make([]int, len(req.Requirements))
	for i, q := range req.Requirements {
		n := 0
		for _, v := range req.Approvals {
			if a := r.byID[v.Approver]; a != nil && a.eligible(q.Groups) {
				n++
			}
		}
		out[i] = max(0, q.Approvers-n)
	}
	return out
}

// StillWanted returns, for each of req's requirements in order, the ids
// (sorted) of the approvers who could still count toward it: eligible
// for it as StillNeeded counts them, not the requester, and without an
// accepted approval of req. A requirement StillNeeded says is met wants
// nobody.
func (r *Registry) StillWanted(req Request) [][]string {
	still := r.StillNeeded(req)
	out := make([][]string, len(req.Requirements))
	for i, q := range req.Requirements {
		if still[i] == 0 {
			continue
		}
		for id, a := range r.byID {
			if a.eligible(q.Groups) && id != req.Agent && !slices.ContainsFunc(req.Approvals, func(v Vote) bool { return v.Approver == id }) {
				out[i] = append(out[i], id)
			}
		}
		slices.Sort(out[i])
	}
	return out
}

// eligible reports whether a may count toward req's quorum.
func (a *Approver) eligible(groups []string) bool {
	if len(groups) == 0 {
		return true
	}
	for _, g := range groups {
		if slices.Contains(a.Groups, g) {
			return true
		}
	}
	return false
}
