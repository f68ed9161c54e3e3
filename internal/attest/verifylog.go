package attest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
)

// EntryReader reads a log's entries: *audit.Snapshot.
type EntryReader interface {
	Size() int64
	ReadEntries(lo, hi int64) ([][]byte, error)
}

// A Segment is a run of the log under one attested state: one engine, one
// bundle, one per-boot key, from the attestation entry First to Last (the
// entry before the next segment, or the log's last entry).
type Segment struct {
	First, Last  int64
	Provider     string
	Engine       string
	Release      string // the policy's name for Engine
	Bundle       string // "" before any activation
	Key          string // the per-boot key's verifier key
	Platform     string // the platform's root that vouched: the TPM attestation key's pin
	Attestations int    // attestation entries in the segment
	Decisions    int
}

// LogReport is what VerifyLog found.
type LogReport struct {
	Attestations int
	Decisions    int
	// Refusals are decision entries of requests refused before any
	// evaluation (no decision state: gateway.Refuse), which need no
	// attestation: nothing was evaluated or executed for them. A gateway
	// whose attestation failed logs every request it refuses this way.
	Refusals    int
	Checkpoints int // checkpoints that covered decisions, each signed by the attested key
	Segments    []Segment
}

// LogError is the first way a log failed its attestation policy.
type LogError struct {
	Index int64 // the entry, or -1 for a checkpoint
	Err   error
}

func (e *LogError) Error() string {
	if e.Index < 0 {
		return e.Err.Error()
	}
	return fmt.Sprintf("entry %d: %v", e.Index, e.Err)
}

func (e *LogError) Unwrap() error { return e.Err }

// VerifyLog checks a log, whose integrity audit.VerifyDir verified, against
// an attestation policy:
//   - every attestation entry verifies offline (VerifyTPM) against the
//     policy's roots, names an engine of an allowed release, the policy's
//     signer set and threshold, the previous attestation entry (prev), a
//     checkpoint the log issued, and the bundle activated last;
//   - within one boot (one per-boot key) the TPM was not reset and its
//     clock did not run back;
//   - every bundle activation was signed by threshold of the policy's
//     signers, and is followed by an attestation entry naming it before
//     any decision;
//   - every decision follows an attestation entry, by at most MaxGap, and
//     was made under the attested bundle (a refusal, a decision entry
//     without decision state, needs neither: nothing was evaluated);
//   - every checkpoint covering decisions carries the signature of the
//     per-boot key attested last before its tree size.
func VerifyLog(r EntryReader, checkpoints [][]byte, pol *Policy) (*LogReport, error) {
	v := &logVerifier{pol: pol, roots: TPMRoots{AttestationKeys: pol.AttestationKeys}, rep: &LogReport{}}
	for _, msg := range checkpoints {
		cp, err := checkpointOf(msg)
		if err != nil {
			return nil, &LogError{Index: -1, Err: err}
		}
		v.cps = append(v.cps, cp)
	}
	n := r.Size()
	const batch = 1024
	for lo := int64(0); lo < n; lo += batch {
		bs, err := r.ReadEntries(lo, min(lo+batch, n))
		if err != nil {
			return nil, err
		}
		for j, b := range bs {
			i := lo + int64(j)
			e, err := audit.DecodeEntry(b)
			if err == nil {
				err = v.entry(i, e)
			}
			if err != nil {
				return nil, &LogError{Index: i, Err: err}
			}
		}
	}
	if v.seg != nil {
		v.seg.Last = n - 1
		v.rep.Segments = append(v.rep.Segments, *v.seg)
	}
	if err := v.checkpoints(checkpoints); err != nil {
		return nil, &LogError{Index: -1, Err: err}
	}
	return v.rep, nil
}

type attested struct {
	index int64
	time  time.Time
	stmt  *Statement
	key   note.Verifier
	tpm   *TPMMeasurement
}

type logVerifier struct {
	pol   *Policy
	roots TPMRoots
	cps   []audit.Checkpoint
	rep   *LogReport

	prev       string      // hash of the last statement
	last       *attested   // the last attestation entry
	keys       []*attested // every attestation entry, in order
	active     string      // the bundle activated last
	unattested bool        // an activation not yet followed by an attestation
	decisions  []int64
	seg        *Segment
}

func (v *logVerifier) entry(i int64, e *audit.Entry) error {
	switch e.Kind {
	case audit.KindAttestation:
		return v.attestation(i, e)
	case audit.KindPolicyActivation:
		return v.activation(e)
	case audit.KindDecision:
		return v.decision(i, e)
	}
	return nil
}

func (v *logVerifier) attestation(i int64, e *audit.Entry) error {
	s, err := ParseStatement([]byte(e.Statement))
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(e.Statement))
	switch {
	case s.Origin != v.pol.Origin:
		return fmt.Errorf("attestation for origin %s, the policy's is %s", s.Origin, v.pol.Origin)
	case s.Prev != v.prev:
		return fmt.Errorf("attestation names the previous statement %q, the log's previous attestation entry has %q (an attestation entry was removed or reordered)", s.Prev, v.prev)
	case v.pol.Releases[s.Engine] == "":
		return fmt.Errorf("engine %s is no release the policy allows", s.Engine)
	case len(v.pol.Signers) > 0 && (s.Threshold != v.pol.Threshold || !slices.Equal(s.Signers, v.pol.Signers)):
		return fmt.Errorf("attested signer set (%d of %d) is not the policy's (%d of %d)", s.Threshold, len(s.Signers), v.pol.Threshold, len(v.pol.Signers))
	case s.Bundle != "" && s.Bundle != v.active:
		return fmt.Errorf("attested bundle %s, the log activated %q last", s.Bundle, v.active)
	}
	if err := v.checkpointKnown(i, s); err != nil {
		return err
	}
	ev := Evidence{Provider: e.Provider, Report: e.Evidence, Collateral: e.Collateral}
	var platform string
	var m *TPMMeasurement
	switch e.Provider {
	case "tpm":
		if m, err = VerifyTPM(ev, s, v.roots); err != nil {
			return err
		}
		platform = "tpm ak " + m.AttestationKey
	case "sev-snp":
		if len(v.pol.SNP.Measurements) == 0 {
			return fmt.Errorf("%w: sev-snp evidence, and the policy pins no snp-measurement", ErrEvidence)
		}
		sm, err := VerifySNP(ev, reportData64(sum), v.pol.SNP)
		if err != nil {
			return err
		}
		platform = "sev-snp measurement " + sm.Measurement
	case "tdx":
		if len(v.pol.TDX.MrTDs) == 0 {
			return fmt.Errorf("%w: tdx evidence, and the policy pins no tdx-mrtd", ErrEvidence)
		}
		tm, err := VerifyTDX(ev, reportData64(sum), v.pol.TDX)
		if err != nil {
			return err
		}
		platform = "tdx mrtd " + tm.MrTD
	case "nitro":
		if len(v.pol.Nitro.PCR0s) == 0 {
			return fmt.Errorf("%w: nitro evidence, and the policy pins no nitro-pcr0", ErrEvidence)
		}
		doc, err := VerifyNitro(ev, sum, v.pol.Nitro)
		if err != nil {
			return err
		}
		platform = "nitro pcr0 " + hex.EncodeToString(doc.PCRs[0])
	default:
		return fmt.Errorf("%w: provider %q is not verifiable by this verifier", ErrEvidence, e.Provider)
	}
	key, err := note.NewVerifier(s.Key)
	if err != nil {
		return err
	}
	a := &attested{index: i, time: e.Time, stmt: s, key: key, tpm: m}
	if l := v.last; l != nil && l.stmt.Key == s.Key && l.tpm != nil && m != nil {
		if m.ResetCount != l.tpm.ResetCount || m.Clock < l.tpm.Clock {
			return fmt.Errorf("%w: the TPM was reset or its clock ran back within one boot's key", ErrEvidence)
		}
	}
	v.prev, v.last, v.unattested = hex.EncodeToString(sum[:]), a, false
	v.keys = append(v.keys, a)
	v.rep.Attestations++
	if g := v.seg; g == nil || g.Key != s.Key || g.Bundle != s.Bundle || g.Engine != s.Engine {
		if g != nil {
			g.Last = i - 1
			v.rep.Segments = append(v.rep.Segments, *g)
		}
		v.seg = &Segment{First: i, Provider: e.Provider, Engine: s.Engine, Release: v.pol.Releases[s.Engine],
			Bundle: s.Bundle, Key: s.Key, Platform: platform}
	}
	v.seg.Attestations++
	return nil
}

// checkpointKnown checks that a statement's checkpoint is one the log
// issued over entries before it (the freshness the statement claims).
func (v *logVerifier) checkpointKnown(i int64, s *Statement) error {
	if s.Size == 0 {
		return nil
	}
	for _, c := range v.cps {
		if c.Size == s.Size && c.Root == s.Root && c.Size <= i {
			return nil
		}
	}
	return fmt.Errorf("attested checkpoint %d is not one of the log's checkpoints over earlier entries", s.Size)
}

func (v *logVerifier) activation(e *audit.Entry) error {
	if len(v.pol.Signers) > 0 {
		names := v.pol.signerNames()
		n := 0
		for _, s := range e.Signers {
			if slices.Contains(names, s) {
				n++
			}
		}
		if n < v.pol.Threshold {
			return fmt.Errorf("bundle %s activated with the signatures of %v: %d of the policy's signers, it wants %d", e.BundleDigest, e.Signers, n, v.pol.Threshold)
		}
	}
	v.active, v.unattested = e.BundleDigest, true
	return nil
}

func (v *logVerifier) decision(i int64, e *audit.Entry) error {
	if e.State.IsZero() && e.Decision == "deny" {
		// A refusal: no policy evaluated it, nothing executed it, and the
		// ledger folds it to nothing. It may fall in an unattested stretch
		// (that is when the gateway refuses everything).
		v.rep.Refusals++
		return nil
	}
	switch l := v.last; {
	case l == nil:
		return errors.New("a decision before any attestation entry")
	case v.unattested:
		return fmt.Errorf("a decision after the activation of %s and before an attestation entry naming it", v.active)
	case e.BundleDigest != "" && e.BundleDigest != l.stmt.Bundle:
		return fmt.Errorf("decided under bundle %s, the attested bundle is %q", e.BundleDigest, l.stmt.Bundle)
	case e.Time.Sub(l.time) > v.pol.MaxGap:
		return fmt.Errorf("decided %s after the last attestation entry (%d), over the policy's max-gap %s", e.Time.Sub(l.time), l.index, v.pol.MaxGap)
	}
	v.decisions = append(v.decisions, i)
	v.rep.Decisions++
	v.seg.Decisions++
	return nil
}

// checkpoints checks that each checkpoint covering decisions is signed by
// the per-boot key attested last before its tree size.
func (v *logVerifier) checkpoints(msgs [][]byte) error {
	var from int64
	for k, c := range v.cps {
		lo, _ := slices.BinarySearch(v.decisions, from)
		hi, _ := slices.BinarySearch(v.decisions, c.Size)
		if c.Size <= from || lo == hi {
			from = max(from, c.Size)
			continue
		}
		var key *attested
		for _, a := range v.keys {
			if a.index < c.Size {
				key = a
			}
		}
		if key == nil {
			return fmt.Errorf("checkpoint %d covers decisions and no attestation precedes it", c.Size)
		}
		if _, err := note.Open(msgs[k], note.VerifierList(key.key)); err != nil {
			return fmt.Errorf("checkpoint %d covers decisions %d..%d and carries no signature of the attested key %s (attested in entry %d)",
				c.Size, v.decisions[lo], v.decisions[hi-1], key.stmt.Key, key.index)
		}
		v.rep.Checkpoints++
		from = c.Size
	}
	// Decisions after the latest checkpoint are not yet signed: the log's
	// own verification reports them as uncovered.
	return nil
}

// reportData64 is a statement's hash as the 64-byte REPORT_DATA of SEV-SNP
// and TDX carry it: in the first 32 bytes, zeros after.
func reportData64(sum ReportData) [64]byte {
	var rd [64]byte
	copy(rd[:], sum[:])
	return rd
}
