package audit

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// WitnessPolicy is a C2SP tlog-policy: the logs a verifier accepts, the
// witnesses it knows and the quorum of cosignatures a checkpoint needs.
// The format is Sigsum's, one definition a line:
//
//	# the log (optional: verify --key names it too)
//	log rulelock.example/log+8a3b45c2+AT7c...
//	witness w1 witness.example/w1+1b2c3d4e+BFk... https://w1.example/
//	witness w2 witness.example/w2+5e6f7a8b+BKx...
//	witness w3 other.example/w3+9c0d1e2f+BPq...
//	group ours 2 w1 w2
//	group everyone all ours w3
//	quorum ours
//
// A group is satisfied when k of its members are (a number, any = 1,
// all = n); members are witnesses or groups defined on earlier lines, each
// at most once; `quorum none` needs no cosignature. Witness keys are
// Ed25519 cosignature/v1 vkeys (type 0x04, ParseCosignerKey), log keys
// Ed25519 note vkeys. One public key may appear only once.
type WitnessPolicy struct {
	Logs      []note.Verifier
	Witnesses []PolicyWitness
	quorum    *policyGroup // nil: quorum none
}

// PolicyWitness is a witness of a WitnessPolicy.
type PolicyWitness struct {
	Name string
	Key  note.Verifier
	URL  string // optional: the witness's submission prefix
}

// policyGroup is a witness (witness >= 0) or a group of k of members.
type policyGroup struct {
	witness int
	k       int
	members []*policyGroup
}

// maxPolicySize bounds the policy files ParseWitnessPolicy accepts.
const maxPolicySize = 64 << 10

// ParseWitnessPolicy parses a witness policy. Errors say file:line:col.
func ParseWitnessPolicy(file string, data []byte) (*WitnessPolicy, error) {
	if len(data) > maxPolicySize {
		return nil, fmt.Errorf("%s: witness policy larger than %d bytes", file, maxPolicySize)
	}
	p := &policyParser{file: file, pol: &WitnessPolicy{}, names: map[string]*policyGroup{}, keys: map[string]string{}}
	for i, line := range strings.Split(string(data), "\n") {
		if err := p.line(i+1, line); err != nil {
			return nil, err
		}
	}
	if !p.haveQuorum {
		return nil, fmt.Errorf("%s: no quorum line (write `quorum none` to require no cosignature)", file)
	}
	return p.pol, nil
}

type policyParser struct {
	file       string
	pol        *WitnessPolicy
	names      map[string]*policyGroup
	keys       map[string]string // public key bytes -> where defined
	haveQuorum bool
}

// field is a word of a line and its column (1-based, in bytes).
type field struct {
	s   string
	col int
}

func splitFields(line string) []field {
	var fs []field
	for i := 0; i < len(line); {
		if line[i] == ' ' || line[i] == '\t' {
			i++
			continue
		}
		j := i
		for j < len(line) && line[j] != ' ' && line[j] != '\t' {
			j++
		}
		fs = append(fs, field{line[i:j], i + 1})
		i = j
	}
	return fs
}

func (p *policyParser) errorf(line, col int, format string, args ...any) error {
	return fmt.Errorf("%s:%d:%d: %s", p.file, line, col, fmt.Sprintf(format, args...))
}

func (p *policyParser) line(n int, line string) error {
	for i := 0; i < len(line); i++ {
		if c := line[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return p.errorf(n, i+1, "control character %#02x", c)
		}
	}
	fs := splitFields(line)
	if len(fs) == 0 || strings.HasPrefix(fs[0].s, "#") {
		return nil
	}
	switch fs[0].s {
	case "log":
		return p.log(n, fs)
	case "witness":
		return p.witness(n, fs)
	case "group":
		return p.group(n, fs)
	case "quorum":
		return p.quorumLine(n, fs)
	}
	return p.errorf(n, fs[0].col, "unknown keyword %q (want log, witness, group or quorum)", fs[0].s)
}

func (p *policyParser) log(n int, fs []field) error {
	if len(fs) < 2 || len(fs) > 3 {
		return p.errorf(n, fs[0].col, "want `log VKEY [URL]`")
	}
	v, err := note.NewVerifier(fs[1].s)
	if err != nil {
		return p.errorf(n, fs[1].col, "log key: %v", err)
	}
	if err := p.unique(n, fs[1], "log "+v.Name()); err != nil {
		return err
	}
	p.pol.Logs = append(p.pol.Logs, v)
	return nil
}

func (p *policyParser) witness(n int, fs []field) error {
	if len(fs) < 3 || len(fs) > 4 {
		return p.errorf(n, fs[0].col, "want `witness NAME VKEY [URL]`")
	}
	if err := p.newName(n, fs[1]); err != nil {
		return err
	}
	v, err := ParseCosignerKey(fs[2].s)
	if err != nil {
		return p.errorf(n, fs[2].col, "witness %s: %v", fs[1].s, err)
	}
	if err := p.unique(n, fs[2], "witness "+fs[1].s); err != nil {
		return err
	}
	w := PolicyWitness{Name: fs[1].s, Key: v}
	if len(fs) == 4 {
		w.URL = fs[3].s
	}
	p.names[w.Name] = &policyGroup{witness: len(p.pol.Witnesses)}
	p.pol.Witnesses = append(p.pol.Witnesses, w)
	return nil
}

func (p *policyParser) group(n int, fs []field) error {
	if len(fs) < 4 {
		return p.errorf(n, fs[0].col, "want `group NAME k|any|all MEMBER...`")
	}
	if err := p.newName(n, fs[1]); err != nil {
		return err
	}
	g := &policyGroup{witness: -1}
	seen := map[string]bool{}
	for _, m := range fs[3:] {
		member, ok := p.names[m.s]
		if !ok {
			return p.errorf(n, m.col, "group %s: %q is not a witness or group defined above", fs[1].s, m.s)
		}
		if seen[m.s] {
			return p.errorf(n, m.col, "group %s: %s listed twice", fs[1].s, m.s)
		}
		seen[m.s] = true
		g.members = append(g.members, member)
	}
	switch k := fs[2].s; k {
	case "any":
		g.k = 1
	case "all":
		g.k = len(g.members)
	default:
		v, err := strconv.Atoi(k)
		if err != nil || strconv.Itoa(v) != k || v < 1 || v > len(g.members) {
			return p.errorf(n, fs[2].col, "group %s: threshold %q, want any, all or a number from 1 to %d", fs[1].s, k, len(g.members))
		}
		g.k = v
	}
	p.names[fs[1].s] = g
	return nil
}

func (p *policyParser) quorumLine(n int, fs []field) error {
	if len(fs) != 2 {
		return p.errorf(n, fs[0].col, "want `quorum NAME`")
	}
	if p.haveQuorum {
		return p.errorf(n, fs[0].col, "a second quorum line")
	}
	p.haveQuorum = true
	if fs[1].s == "none" {
		return nil
	}
	g, ok := p.names[fs[1].s]
	if !ok {
		return p.errorf(n, fs[1].col, "quorum %q is not a witness or group defined above", fs[1].s)
	}
	p.pol.quorum = g
	return nil
}

func (p *policyParser) newName(n int, f field) error {
	switch {
	case f.s == "none":
		return p.errorf(n, f.col, "the name none is reserved")
	case p.names[f.s] != nil:
		return p.errorf(n, f.col, "%s defined twice", f.s)
	}
	return nil
}

// unique refuses a public key already defined, under any name.
func (p *policyParser) unique(n int, f field, what string) error {
	_, rest, _ := strings.Cut(f.s, "+")
	_, key64, _ := strings.Cut(rest, "+")
	raw, _ := base64.StdEncoding.DecodeString(key64)
	if len(raw) < 1 {
		return p.errorf(n, f.col, "malformed key")
	}
	k := string(raw[1:]) // the key without its type byte
	if prev, ok := p.keys[k]; ok {
		return p.errorf(n, f.col, "%s has the same public key as %s", what, prev)
	}
	p.keys[k] = fmt.Sprintf("%s (line %d)", what, n)
	return nil
}

// HasLog reports whether the policy lists key among its logs. A policy
// without log lines accepts any log.
func (p *WitnessPolicy) HasLog(key note.Verifier) bool {
	if len(p.Logs) == 0 {
		return true
	}
	for _, l := range p.Logs {
		if l.Name() == key.Name() && l.KeyHash() == key.KeyHash() {
			return true
		}
	}
	return false
}

// Witnessed returns the names of the policy's witnesses that validly
// cosigned the checkpoint note msg, and an error if a signature line with
// a witness's name and key hash does not verify (a malformed note).
func (p *WitnessPolicy) Witnessed(msg []byte) ([]string, error) {
	var names []string
	for _, w := range p.Witnesses {
		_, err := note.Open(msg, note.VerifierList(w.Key))
		var uv *note.UnverifiedNoteError
		switch {
		case err == nil:
			names = append(names, w.Name)
		case errors.As(err, &uv):
		default:
			return nil, fmt.Errorf("witness %s: %w", w.Name, err)
		}
	}
	return names, nil
}

// Check checks that the checkpoint note msg carries the cosignatures the
// quorum needs. A failure is a *VerifyError of class Unwitnessed (too few
// cosignatures) or BadSignature (a witness's signature line is invalid).
func (p *WitnessPolicy) Check(msg []byte, where string) error {
	names, err := p.Witnessed(msg)
	if err != nil {
		return &VerifyError{Class: BadSignature, Index: -1, File: where, Err: err}
	}
	if p.quorum == nil {
		return nil
	}
	ok := make([]bool, len(p.Witnesses))
	for _, n := range names {
		for i, w := range p.Witnesses {
			if w.Name == n {
				ok[i] = true
			}
		}
	}
	if !p.quorum.satisfied(ok) {
		have := "none"
		if len(names) > 0 {
			have = strings.Join(names, ", ")
		}
		return &VerifyError{Class: Unwitnessed, Index: -1, File: where, Err: fmt.Errorf("the witness quorum is not met: cosigned by %s", have)}
	}
	return nil
}

func (g *policyGroup) satisfied(ok []bool) bool {
	if g.witness >= 0 {
		return ok[g.witness]
	}
	n := 0
	for _, m := range g.members {
		if m.satisfied(ok) {
			n++
		}
	}
	return n >= g.k
}
