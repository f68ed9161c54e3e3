package attest

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// StatementHeader is the first line of every statement.
const StatementHeader = "rulelock attestation v1"

// MaxStatementSize caps an encoded statement.
const MaxStatementSize = 32 << 10

// MaxSigners caps the signer lines of a statement.
const MaxSigners = 64

// NoBundle is the bundle line of a statement made before any bundle was
// active.
const NoBundle = "none"

// A Statement is what the engine asks the platform to vouch for. Its
// canonical encoding (Marshal) is, one item a line, each line ending in
// "\n", nothing else:
//
//	rulelock attestation v1
//	origin <the log's origin>
//	engine sha256:<64 hex: SHA-256 of the running binary>
//	bundle sha256:<64 hex: the active bundle's digest> | none
//	threshold <M, decimal, no leading zero>
//	signer <verifier key>            (N lines, N >= M, sorted, distinct)
//	key <verifier key of the per-boot checkpoint key>
//	prev <64 hex: SHA-256 of the previous attestation entry's statement> | none
//	checkpoint <tree size> <base64 root hash>
//
// Its SHA-256 (ReportData) is what goes into the platform's report-data
// field: a TPM quote's extraData, SEV-SNP and TDX REPORT_DATA (the first
// 32 of 64 bytes; the rest zero), Nitro's user_data.
type Statement struct {
	Origin    string
	Engine    string   // "sha256:" + hex
	Bundle    string   // "sha256:" + hex, or "" before any activation
	Threshold int      // M of the signer set
	Signers   []string // the bundle signers' verifier keys (N)
	Key       string   // the per-boot key's verifier key
	Prev      string   // hex SHA-256 of the previous statement, or "" for the first
	Size      int64    // the latest checkpoint's tree size (0: none yet)
	Root      [sha256.Size]byte
}

// Marshal returns the canonical encoding of s, or an error when s is not
// well formed (see Parse for the rules).
func (s *Statement) Marshal() ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	return s.encode(), nil
}

func (s *Statement) encode() []byte {
	var b bytes.Buffer
	b.WriteString(StatementHeader + "\n")
	fmt.Fprintf(&b, "origin %s\n", s.Origin)
	fmt.Fprintf(&b, "engine %s\n", s.Engine)
	bundle := s.Bundle
	if bundle == "" {
		bundle = NoBundle
	}
	fmt.Fprintf(&b, "bundle %s\n", bundle)
	fmt.Fprintf(&b, "threshold %d\n", s.Threshold)
	for _, k := range s.Signers {
		fmt.Fprintf(&b, "signer %s\n", k)
	}
	fmt.Fprintf(&b, "key %s\n", s.Key)
	prev := s.Prev
	if prev == "" {
		prev = "none"
	}
	fmt.Fprintf(&b, "prev %s\n", prev)
	fmt.Fprintf(&b, "checkpoint %d %s\n", s.Size, base64.StdEncoding.EncodeToString(s.Root[:]))
	return b.Bytes()
}

// ReportData returns the SHA-256 of s's canonical encoding.
func (s *Statement) ReportData() ([sha256.Size]byte, error) {
	b, err := s.Marshal()
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return sha256.Sum256(b), nil
}

func (s *Statement) check() error {
	switch {
	case !validName(s.Origin):
		return fmt.Errorf("statement: origin %q: not a key name", s.Origin)
	case !validDigest(s.Engine):
		return fmt.Errorf("statement: engine %q: want sha256:<64 hex>", s.Engine)
	case s.Bundle != "" && !validDigest(s.Bundle):
		return fmt.Errorf("statement: bundle %q: want sha256:<64 hex>", s.Bundle)
	case len(s.Signers) > MaxSigners:
		return fmt.Errorf("statement: %d signers, at most %d", len(s.Signers), MaxSigners)
	case s.Threshold < 1 && len(s.Signers) > 0, s.Threshold < 0, s.Threshold > len(s.Signers):
		return fmt.Errorf("statement: threshold %d of %d signers", s.Threshold, len(s.Signers))
	case s.Prev != "" && !validHex(s.Prev):
		return fmt.Errorf("statement: prev %q: want 64 lowercase hex", s.Prev)
	case s.Size < 0:
		return fmt.Errorf("statement: checkpoint size %d", s.Size)
	case s.Size == 0 && s.Root != [sha256.Size]byte{}:
		return errors.New("statement: a root without a checkpoint")
	}
	for i, k := range s.Signers {
		if _, err := note.NewVerifier(k); err != nil {
			return fmt.Errorf("statement: signer %q: %v", k, err)
		}
		if i > 0 && k <= s.Signers[i-1] {
			return errors.New("statement: signers not sorted and distinct")
		}
	}
	if _, err := note.NewVerifier(s.Key); err != nil {
		return fmt.Errorf("statement: key %q: %v", s.Key, err)
	}
	return nil
}

// ParseStatement parses a statement in its canonical encoding; anything
// else (other line order, extra spaces, a missing final newline, unsorted
// signers) is an error naming the line.
func ParseStatement(b []byte) (*Statement, error) {
	if len(b) > MaxStatementSize {
		return nil, fmt.Errorf("statement: %d bytes, at most %d", len(b), MaxStatementSize)
	}
	if len(b) == 0 || b[len(b)-1] != '\n' {
		return nil, errors.New("statement: does not end in a newline")
	}
	lines := strings.Split(string(b[:len(b)-1]), "\n")
	p := &stmtParser{lines: lines}
	if l := p.next(); l != StatementHeader {
		return nil, fmt.Errorf("statement:1: want %q", StatementHeader)
	}
	s := &Statement{Origin: p.field("origin"), Engine: p.field("engine")}
	if v := p.field("bundle"); v != NoBundle {
		s.Bundle = v
		if v == "" {
			p.fail("bundle: empty")
		}
	}
	if t := p.field("threshold"); p.err == nil {
		n, err := strconv.Atoi(t)
		if err != nil || strconv.Itoa(n) != t {
			p.fail("threshold: not a canonical decimal")
		}
		s.Threshold = n
	}
	for p.err == nil && p.i < len(lines) && strings.HasPrefix(lines[p.i], "signer ") {
		s.Signers = append(s.Signers, p.field("signer"))
	}
	s.Key = p.field("key")
	if v := p.field("prev"); v != "none" {
		s.Prev = v
		if v == "" {
			p.fail("prev: empty")
		}
	}
	if v := p.field("checkpoint"); p.err == nil {
		size, root, ok := strings.Cut(v, " ")
		n, err := strconv.ParseInt(size, 10, 64)
		r, rerr := base64.StdEncoding.DecodeString(root)
		if !ok || err != nil || strconv.FormatInt(n, 10) != size || rerr != nil || len(r) != sha256.Size {
			p.fail("checkpoint: want <size> <base64 32-byte root>")
		}
		s.Size = n
		copy(s.Root[:], r)
	}
	if p.err == nil && p.i != len(lines) {
		p.i++
		p.fail("unexpected line")
	}
	if p.err != nil {
		return nil, p.err
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	if !bytes.Equal(s.encode(), b) {
		return nil, errors.New("statement: not in canonical form")
	}
	return s, nil
}

type stmtParser struct {
	lines []string
	i     int
	err   error
}

func (p *stmtParser) next() string {
	if p.i >= len(p.lines) {
		p.i++
		return ""
	}
	p.i++
	return p.lines[p.i-1]
}

func (p *stmtParser) fail(msg string) {
	if p.err == nil {
		p.err = fmt.Errorf("statement:%d: %s", p.i, msg)
	}
}

// field reads the next line, which must be "<name> <value>".
func (p *stmtParser) field(name string) string {
	if p.err != nil {
		return ""
	}
	l := p.next()
	v, ok := strings.CutPrefix(l, name+" ")
	if !ok {
		p.fail("want " + name)
		return ""
	}
	return v
}

func validName(s string) bool {
	return s != "" && !strings.ContainsAny(s, " +\n\t") && len(s) <= 1024
}

func validDigest(s string) bool {
	h, ok := strings.CutPrefix(s, "sha256:")
	return ok && validHex(h)
}

func validHex(h string) bool {
	if len(h) != 2*sha256.Size {
		return false
	}
	_, err := hex.DecodeString(h)
	return err == nil && strings.ToLower(h) == h
}

// sortedSigners returns keys sorted and deduplicated, as a statement wants.
func sortedSigners(keys []string) []string {
	out := slices.Clone(keys)
	slices.Sort(out)
	return slices.Compact(out)
}
