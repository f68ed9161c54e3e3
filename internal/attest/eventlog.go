package attest

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// EventKind is the kind of a measured event.
type EventKind string

// The events the engine measures into the TPM.
const (
	EventEngine EventKind = "engine" // data: sha256:<hex> of the running binary; first in the identity PCR
	EventKey    EventKind = "key"    // data: the per-boot key's verifier key; second in the identity PCR
	EventBundle EventKind = "bundle" // data: sha256:<hex> of a bundle just activated; bundle PCR
)

// An Event is one measurement. Its digest, extended into the PCR, is the
// SHA-256 of the line "<kind> <data>" (no newline).
type Event struct {
	Kind EventKind
	Data string
}

// Digest returns the SHA-256 extended into the PCR for e.
func (e Event) Digest() [sha256.Size]byte {
	return sha256.Sum256([]byte(string(e.Kind) + " " + e.Data))
}

func (e Event) check() error {
	switch e.Kind {
	case EventEngine, EventBundle:
		if !validDigest(e.Data) {
			return fmt.Errorf("event %s %q: want sha256:<64 hex>", e.Kind, e.Data)
		}
	case EventKey:
		if _, err := note.NewVerifier(e.Data); err != nil {
			return fmt.Errorf("event key %q: %v", e.Data, err)
		}
	default:
		return fmt.Errorf("event: unknown kind %q", e.Kind)
	}
	return nil
}

// An EventLog is what was extended into the two PCRs since the provider
// opened the TPM: their values then (Start) and the events after.
type EventLog struct {
	PCRs   [2]uint // identity, bundle
	Start  [2][sha256.Size]byte
	Events []Event
}

func (l *EventLog) pcrOf(k EventKind) uint {
	if k == EventBundle {
		return l.PCRs[1]
	}
	return l.PCRs[0]
}

// Replay returns the identity and bundle PCR values that the log implies.
func (l *EventLog) Replay() [2][sha256.Size]byte {
	v := l.Start
	for _, e := range l.Events {
		i := 0
		if e.Kind == EventBundle {
			i = 1
		}
		d := e.Digest()
		v[i] = sha256.Sum256(append(v[i][:], d[:]...))
	}
	return v
}

// tpmCollateral is the TPM evidence's collateral, in text:
//
//	rulelock tpm collateral v1
//	ak <base64 TPMT_PUBLIC of the attestation key>
//	pcrs <identity PCR> <bundle PCR>
//	start <hex identity value> <hex bundle value>
//	event <kind> <data>      (any number, in the order extended)
type tpmCollateral struct {
	AK  []byte
	Log EventLog
}

const tpmCollateralHeader = "rulelock tpm collateral v1"

func (c *tpmCollateral) marshal() []byte {
	var b strings.Builder
	b.WriteString(tpmCollateralHeader + "\n")
	fmt.Fprintf(&b, "ak %s\n", base64.StdEncoding.EncodeToString(c.AK))
	fmt.Fprintf(&b, "pcrs %d %d\n", c.Log.PCRs[0], c.Log.PCRs[1])
	fmt.Fprintf(&b, "start %s %s\n", hexDigest(c.Log.Start[0]), hexDigest(c.Log.Start[1]))
	for _, e := range c.Log.Events {
		fmt.Fprintf(&b, "event %s %s\n", e.Kind, e.Data)
	}
	return []byte(b.String())
}

// maxEvents caps a parsed event log.
const maxEvents = 4096

func parseTPMCollateral(b []byte) (*tpmCollateral, error) {
	lines, err := textLines(b, "collateral")
	if err != nil {
		return nil, err
	}
	if len(lines) < 4 || lines[0] != tpmCollateralHeader {
		return nil, errors.New("collateral: not a rulelock tpm collateral v1")
	}
	c := &tpmCollateral{}
	ak, ok := strings.CutPrefix(lines[1], "ak ")
	if c.AK, err = base64.StdEncoding.DecodeString(ak); !ok || err != nil {
		return nil, errors.New("collateral:2: want ak <base64>")
	}
	var p0, p1 string
	if p0, p1, ok = cutTwo(lines[2], "pcrs "); !ok {
		return nil, errors.New("collateral:3: want pcrs <n> <n>")
	}
	for i, s := range []string{p0, p1} {
		n, err := strconv.ParseUint(s, 10, 8)
		if err != nil || n > 23 || strconv.FormatUint(n, 10) != s {
			return nil, errors.New("collateral:3: want pcrs <n> <n>, 0..23")
		}
		c.Log.PCRs[i] = uint(n)
	}
	if c.Log.PCRs[0] == c.Log.PCRs[1] {
		return nil, errors.New("collateral:3: the same PCR twice")
	}
	if p0, p1, ok = cutTwo(lines[3], "start "); !ok {
		return nil, errors.New("collateral:4: want start <hex> <hex>")
	}
	for i, s := range []string{p0, p1} {
		if !validHex(s) {
			return nil, errors.New("collateral:4: want start <hex> <hex>")
		}
		hex.Decode(c.Log.Start[i][:], []byte(s))
	}
	if len(lines)-4 > maxEvents {
		return nil, fmt.Errorf("collateral: more than %d events", maxEvents)
	}
	for i, l := range lines[4:] {
		kind, data, ok := cutTwo(l, "event ")
		e := Event{Kind: EventKind(kind), Data: data}
		if !ok {
			return nil, fmt.Errorf("collateral:%d: want event <kind> <data>", i+5)
		}
		if err := e.check(); err != nil {
			return nil, fmt.Errorf("collateral:%d: %v", i+5, err)
		}
		c.Log.Events = append(c.Log.Events, e)
	}
	if string(c.marshal()) != string(b) {
		return nil, errors.New("collateral: not in canonical form")
	}
	return c, nil
}

// tpmQuote is the TPM evidence's report:
//
//	attest <base64 TPMS_ATTEST, the bytes the attestation key signed>
//	signature <base64 TPMT_SIGNATURE>
type tpmQuote struct {
	Attest    []byte
	Signature []byte
}

func (q *tpmQuote) marshal() []byte {
	return []byte("attest " + base64.StdEncoding.EncodeToString(q.Attest) + "\n" +
		"signature " + base64.StdEncoding.EncodeToString(q.Signature) + "\n")
}

func parseTPMQuote(b []byte) (*tpmQuote, error) {
	lines, err := textLines(b, "quote")
	if err != nil {
		return nil, err
	}
	if len(lines) != 2 {
		return nil, errors.New("quote: want two lines, attest and signature")
	}
	a, ok1 := strings.CutPrefix(lines[0], "attest ")
	s, ok2 := strings.CutPrefix(lines[1], "signature ")
	q := &tpmQuote{}
	var e1, e2 error
	q.Attest, e1 = base64.StdEncoding.DecodeString(a)
	q.Signature, e2 = base64.StdEncoding.DecodeString(s)
	if !ok1 || !ok2 || e1 != nil || e2 != nil {
		return nil, errors.New("quote: want attest <base64> and signature <base64>")
	}
	if string(q.marshal()) != string(b) {
		return nil, errors.New("quote: not in canonical form")
	}
	return q, nil
}

// maxEvidence caps each part of parsed evidence.
const maxEvidence = 1 << 20

func textLines(b []byte, what string) ([]string, error) {
	if len(b) > maxEvidence {
		return nil, fmt.Errorf("%s: %d bytes, at most %d", what, len(b), maxEvidence)
	}
	if len(b) == 0 || b[len(b)-1] != '\n' {
		return nil, fmt.Errorf("%s: does not end in a newline", what)
	}
	return strings.Split(string(b[:len(b)-1]), "\n"), nil
}

// cutTwo cuts prefix off l and splits the rest at its only space.
func cutTwo(l, prefix string) (string, string, bool) {
	rest, ok := strings.CutPrefix(l, prefix)
	if !ok {
		return "", "", false
	}
	a, b, ok := strings.Cut(rest, " ")
	if !ok || a == "" || b == "" || strings.Contains(b, " ") {
		return "", "", false
	}
	return a, b, true
}
