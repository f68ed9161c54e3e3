package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
	"unsafe"
)

// EntryVersion is the version of the entry encoding, the "v" member of every
// encoded entry.
const EntryVersion = 1

// MaxEntrySize is the largest encoded entry. It is the limit of a C2SP
// tlog-tiles entry bundle (a uint16 length prefix).
const MaxEntrySize = 1<<16 - 1

// ErrNonCanonical is returned by DecodeEntry for input that decodes but is
// not the canonical encoding of what it decodes to.
var ErrNonCanonical = errors.New("non-canonical entry encoding")

// Kind is the kind of an entry.
type Kind string

// The kinds of entries.
const (
	KindDecision         Kind = "decision"          // a policy decision on one request
	KindApproval         Kind = "approval"          // one approver's signature on a parked request
	KindOutcome          Kind = "outcome"           // the result of executing an allowed action
	KindPolicyActivation Kind = "policy_activation" // a bundle became the active policy
	KindNote             Kind = "note"              // an operator event: startup, recovery, ...
	KindAttestation      Kind = "attestation"       // platform evidence over the engine, bundle and per-boot key (internal/attest)
)

func (k Kind) valid() bool {
	switch k {
	case KindDecision, KindApproval, KindOutcome, KindPolicyActivation, KindNote, KindKeyRotation, KindAttestation:
		return true
	}
	return false
}

// Digest is a SHA-256 digest, encoded as lowercase hex.
type Digest [sha256.Size]byte

// IsZero reports whether d is all zeros (absent).
func (d Digest) IsZero() bool { return d == Digest{} }

func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// MarshalText implements encoding.TextMarshaler.
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler; it accepts only 64
// lowercase hex digits.
func (d *Digest) UnmarshalText(b []byte) error {
	if len(b) != 2*sha256.Size {
		return fmt.Errorf("digest: want %d hex digits, have %d", 2*sha256.Size, len(b))
	}
	if _, err := hex.Decode(d[:], b); err != nil {
		return fmt.Errorf("digest: %w", err)
	}
	if !bytes.Equal(b, []byte(d.String())) {
		return fmt.Errorf("digest: not lowercase hex")
	}
	return nil
}

// Field is a possibly large or sensitive text field of an entry: the
// canonical action, the instruction, the reasoning, the result, the state.
//
// Callers of Append set Text and, for a whole field that is sensitive,
// Sensitive. Append stores a sensitive field as a salted commitment
// (HMAC-SHA-256 keyed by a random per-field salt kept in the deletable
// salts file; the value only encrypted under a key derived from the salt,
// in the side file: see Commit) and a field longer than Options.MaxInline
// by its SHA-256 digest (the content goes to the log's blob store). An entry read back from the log has
// exactly one of Text, Digest or Commitment set, or none for an absent field.
type Field struct {
	Text       string // the content, when stored inline (valid UTF-8)
	Digest     Digest // SHA-256 of the content, when stored by digest
	Size       int64  // length of the content, when stored by digest
	Commitment Digest // HMAC-SHA-256(salt, content), when stored as a commitment
	Sensitive  bool   // on Append: store as a commitment; never encoded
}

// Text returns an inline field holding s.
func Text(s string) Field { return Field{Text: s} }

// Sensitive returns a field holding s that Append stores as a commitment.
func Sensitive(s string) Field { return Field{Text: s, Sensitive: true} }

// IsZero reports whether f is absent.
func (f Field) IsZero() bool {
	return f.Text == "" && f.Digest.IsZero() && f.Commitment.IsZero()
}

type fieldRef struct {
	HMAC   *Digest `json:"hmac,omitempty"`
	SHA256 *Digest `json:"sha256,omitempty"`
	Size   *int64  `json:"size,omitempty"`
}

// MarshalJSON encodes f as a JSON string (inline), {"sha256":..,"size":..}
// or {"hmac":..}.
func (f Field) MarshalJSON() ([]byte, error) {
	n := 0
	if f.Text != "" {
		n++
	}
	if !f.Digest.IsZero() {
		n++
	}
	if !f.Commitment.IsZero() {
		n++
	}
	if n > 1 {
		return nil, errors.New("field: more than one of text, digest, commitment")
	}
	switch {
	case !f.Digest.IsZero():
		size := f.Size
		return marshal(fieldRef{SHA256: &f.Digest, Size: &size})
	case !f.Commitment.IsZero():
		return marshal(fieldRef{HMAC: &f.Commitment})
	}
	if !utf8.ValidString(f.Text) {
		return nil, errors.New("field: invalid UTF-8")
	}
	if plainASCII(f.Text) {
		b := make([]byte, 0, len(f.Text)+2)
		b = append(b, '"')
		b = append(b, f.Text...)
		return append(b, '"'), nil
	}
	return marshal(f.Text)
}

// plainASCII reports whether s encodes as a JSON string without escapes.
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// UnmarshalJSON decodes the forms MarshalJSON produces.
func (f *Field) UnmarshalJSON(b []byte) error {
	*f = Field{}
	if len(b) > 0 && b[0] == '"' {
		// The decoder has validated b; without escapes it is the text.
		if inner := b[1 : len(b)-1]; bytes.IndexByte(inner, '\\') < 0 {
			f.Text = string(inner)
			return nil
		}
		return json.Unmarshal(b, &f.Text)
	}
	var r fieldRef
	if err := strictUnmarshal(b, &r); err != nil {
		return fmt.Errorf("field: %w", err)
	}
	switch {
	case r.HMAC != nil && r.SHA256 == nil && r.Size == nil:
		f.Commitment = *r.HMAC
	case r.HMAC == nil && r.SHA256 != nil && r.Size != nil && *r.Size >= 0:
		f.Digest, f.Size = *r.SHA256, *r.Size
	default:
		return errors.New("field: want a string, {hmac} or {sha256, size}")
	}
	return nil
}

// byDigest returns f as Entry.Raw is encoded: its digest and size, computed
// from its text when it has one.
func (f Field) byDigest() (Field, error) {
	switch {
	case f.Text != "" && (!f.Digest.IsZero() || !f.Commitment.IsZero()), !f.Commitment.IsZero():
		return Field{}, errors.New("encode entry: raw is its bytes (Text) or their digest and size, nothing else")
	case f.Text != "":
		return Field{Digest: sha256.Sum256(unsafe.Slice(unsafe.StringData(f.Text), len(f.Text))), Size: int64(len(f.Text))}, nil
	}
	return Field{Digest: f.Digest, Size: f.Size}, nil
}

// Rule is one rule that matched a request.
// Members are declared in the order of their JSON names (sorted keys).
type Rule struct {
	Message string `json:"message,omitempty"`
	Name    string `json:"name"`
	Outcome string `json:"outcome"`          // deny, require_approval, allow, ...
	Shadow  bool   `json:"shadow,omitempty"` // evaluated and logged, not enforced
}

// Verdict is the verdict of one postcondition on an execution result.
// Members are declared in the order of their JSON names (sorted keys).
type Verdict struct {
	Error   string `json:"error,omitempty"` // why it failed to evaluate (then it does not hold)
	Holds   bool   `json:"holds"`
	Message string `json:"message,omitempty"`
	Rule    string `json:"rule"`
	Shadow  bool   `json:"shadow,omitempty"` // evaluated and logged, not enforced
}

// Entry is one record of the audit log. It is plain data: the gateway fills
// in the fields that apply to the kind and leaves the others zero.
type Entry struct {
	Kind Kind
	Time time.Time // encoded in UTC with nanoseconds

	Agent   string
	Session string

	// Decisions.
	RequestID     string // the request this entry is about (decision, approval, outcome)
	Action        Field  // the canonical (RFC 8785) action JSON
	ActionSHA256  Digest // SHA-256 of the canonical action; computed by Append when zero
	Instruction   Field
	Reasoning     Field
	Rules         []Rule
	Decision      string // allow, deny, require_approval, approved, rejected, ...
	BundleDigest  string
	EngineVersion string

	// Salts open the commitments (Commit) that the entry's fields hold,
	// such as sensitive members of the action: Append writes them to the
	// log's salts file, durably, before the entry. Never encoded.
	Salts []Salt

	// Outcomes.
	Closes         int64  // index of the decision entry this outcome closes
	Result         Field  // the upstream's result
	State          Field  // the resulting derived state
	Status         string // ok, error, unknown (after a crash)
	Postconditions []Verdict

	// Refusals (a request refused before it could be decoded or decided).
	// Raw is the request body exactly as received, always encoded by its
	// SHA-256 digest and size: set its Text to the bytes (any bytes, not
	// only UTF-8); Append also keeps them in the blob store when they are
	// no longer than Options.MaxRaw.
	Raw Field

	// Approvals.
	Approver  string
	Signature []byte // the approver's signature over the request digest

	// Policy activations and notes.
	Signers []string // the keys that signed the activated bundle
	Message string

	// Key rotations (see RotateKey): the log's verifier keys, name+hash+key.
	OldKey string // the key that signs the checkpoint covering this entry
	NewKey string // the key that signs every checkpoint after that one

	// Attestations (internal/attest): the statement in its canonical text,
	// and the platform's evidence over its hash with what verifying it
	// offline needs. All four are set on an attestation entry, none on
	// any other.
	Statement  string
	Provider   string // tpm, sev-snp, tdx, nitro
	Evidence   []byte
	Collateral []byte
}

// wireEntry is the encoded form. Its members are declared in the order of
// their JSON names so that encoding/json emits sorted keys.
type wireEntry struct {
	Action         *Field    `json:"action,omitempty"`
	ActionSHA256   *Digest   `json:"action_sha256,omitempty"`
	Agent          string    `json:"agent,omitempty"`
	Approver       string    `json:"approver,omitempty"`
	Attestation    string    `json:"attestation,omitempty"`
	BundleDigest   string    `json:"bundle_digest,omitempty"`
	Closes         *int64    `json:"closes,omitempty"`
	Collateral     []byte    `json:"collateral,omitempty"`
	Decision       string    `json:"decision,omitempty"`
	EngineVersion  string    `json:"engine_version,omitempty"`
	Evidence       []byte    `json:"evidence,omitempty"`
	Instruction    *Field    `json:"instruction,omitempty"`
	Kind           Kind      `json:"kind"`
	Message        string    `json:"message,omitempty"`
	NewKey         string    `json:"new_key,omitempty"`
	OldKey         string    `json:"old_key,omitempty"`
	Postconditions []Verdict `json:"postconditions,omitempty"`
	Provider       string    `json:"provider,omitempty"`
	Raw            *Field    `json:"raw,omitempty"`
	Reasoning      *Field    `json:"reasoning,omitempty"`
	RequestID      string    `json:"request_id,omitempty"`
	Result         *Field    `json:"result,omitempty"`
	Rules          []Rule    `json:"rules,omitempty"`
	Session        string    `json:"session,omitempty"`
	Signature      []byte    `json:"signature,omitempty"`
	Signers        []string  `json:"signers,omitempty"`
	State          *Field    `json:"state,omitempty"`
	Status         string    `json:"status,omitempty"`
	Time           string    `json:"time"`
	V              int       `json:"v"`
}

func optField(f Field) *Field {
	if f.IsZero() {
		return nil
	}
	f.Sensitive = false
	return &f
}

// Encode returns the canonical encoding of e: a JSON object with sorted keys,
// no insignificant white space, "v":1, absent members omitted. Encode fails
// for an entry that cannot round-trip (unknown kind, invalid UTF-8, a
// sensitive field not yet committed, an action whose digest does not match).
func (e *Entry) Encode() ([]byte, error) {
	// Room for the members' names and the short fields, and the long ones
	// with a little escaping, so that the buffer rarely grows.
	n := 512 + len(e.Message) + (len(e.Signature)+len(e.Evidence)+len(e.Collateral))*4/3 + len(e.Statement)
	for _, f := range [...]*Field{&e.Action, &e.Instruction, &e.Reasoning, &e.Result, &e.State} {
		n += len(f.Text) + len(f.Text)/8
	}
	for _, r := range e.Rules {
		n += 64 + len(r.Name) + len(r.Message)
	}
	return e.appendEncoding(make([]byte, 0, n))
}

// appendEncoding appends the canonical encoding of e to b (see Encode).
func (e *Entry) appendEncoding(b []byte) ([]byte, error) {
	start := len(b)
	if !e.Kind.valid() {
		return nil, fmt.Errorf("encode entry: unknown kind %q", e.Kind)
	}
	if e.Time.IsZero() {
		return nil, errors.New("encode entry: zero time")
	}
	for _, f := range [...]*Field{&e.Action, &e.Instruction, &e.Reasoning, &e.Result, &e.State} {
		if f.Sensitive && f.Commitment.IsZero() {
			return nil, errors.New("encode entry: sensitive field not committed (use Log.Append)")
		}
	}
	if e.Action.Text != "" {
		if sum := Digest(sha256.Sum256(unsafe.Slice(unsafe.StringData(e.Action.Text), len(e.Action.Text)))); sum != e.ActionSHA256 {
			return nil, fmt.Errorf("encode entry: %w: action_sha256 is %v, the action hashes to %v", ErrActionMismatch, e.ActionSHA256, sum)
		}
	}
	raw, rerr := e.Raw.byDigest()
	if rerr != nil {
		return nil, rerr
	}
	if err := e.checkDigests(); err != nil {
		return nil, fmt.Errorf("encode entry: %w", err)
	}
	if e.Closes != 0 && e.Kind != KindOutcome {
		return nil, fmt.Errorf("encode entry: closes set on a %s entry", e.Kind)
	}
	if e.Closes < 0 {
		return nil, errors.New("encode entry: negative closes")
	}
	if err := checkRotationKeys(e.Kind, e.OldKey, e.NewKey); err != nil {
		return nil, fmt.Errorf("encode entry: %w", err)
	}
	if err := e.checkAttestation(); err != nil {
		return nil, fmt.Errorf("encode entry: %w", err)
	}
	w := wireEntry{
		Action:         optField(e.Action),
		Agent:          e.Agent,
		Approver:       e.Approver,
		Attestation:    e.Statement,
		Collateral:     e.Collateral,
		Evidence:       e.Evidence,
		Provider:       e.Provider,
		BundleDigest:   e.BundleDigest,
		Decision:       e.Decision,
		EngineVersion:  e.EngineVersion,
		Instruction:    optField(e.Instruction),
		Kind:           e.Kind,
		Message:        e.Message,
		NewKey:         e.NewKey,
		OldKey:         e.OldKey,
		Postconditions: e.Postconditions,
		Raw:            optField(raw),
		Reasoning:      optField(e.Reasoning),
		RequestID:      e.RequestID,
		Result:         optField(e.Result),
		Rules:          e.Rules,
		Session:        e.Session,
		Signature:      e.Signature,
		Signers:        e.Signers,
		State:          optField(e.State),
		Status:         e.Status,
		Time:           e.Time.UTC().Format(time.RFC3339Nano),
		V:              EntryVersion,
	}
	if !e.ActionSHA256.IsZero() {
		w.ActionSHA256 = &e.ActionSHA256
	}
	if e.Kind == KindOutcome {
		w.Closes = &e.Closes
	}
	b, err := w.appendJSON(b)
	if err != nil {
		return nil, fmt.Errorf("encode entry: %w", err)
	}
	if len(b)-start > MaxEntrySize {
		return nil, fmt.Errorf("encode entry: %d bytes, limit %d", len(b)-start, MaxEntrySize)
	}
	return b, nil
}

// DecodeEntry decodes the canonical encoding of an entry. Any other input,
// including a different encoding of the same entry, is an error: decoding then
// encoding is the identity.
func DecodeEntry(b []byte) (*Entry, error) { return decodeEntry(b, true) }

// DecodeVerifiedEntry decodes an entry of a log whose encodings have been
// checked already (VerifyDir decodes every entry with DecodeEntry). It
// parses and checks the structure as DecodeEntry does, but does not
// re-encode the entry to prove the encoding canonical, which is about a
// third of the cost. For readers that walk a verified log again: replay.
func DecodeVerifiedEntry(b []byte) (*Entry, error) { return decodeEntry(b, false) }

func decodeEntry(b []byte, canonical bool) (*Entry, error) {
	e := new(Entry)
	var w wireEntry
	if err := decodeInto(&wireParser{b: b}, &w, e); err != nil {
		return nil, err
	}
	if !canonical {
		return e, nil
	}
	again, err := e.Encode()
	if err != nil {
		return nil, fmt.Errorf("decode entry: %w", err)
	}
	if !bytes.Equal(again, b) {
		return nil, fmt.Errorf("decode entry: %w", ErrNonCanonical)
	}
	return e, nil
}

// decodeInto parses p's bytes into w and builds e from it.
func decodeInto(p *wireParser, w *wireEntry, e *Entry) error {
	b := p.b
	if len(b) > MaxEntrySize {
		return fmt.Errorf("decode entry: %d bytes, limit %d", len(b), MaxEntrySize)
	}
	if !utf8.Valid(b) {
		return errors.New("decode entry: invalid UTF-8")
	}
	if err := p.parse(w); err != nil {
		return fmt.Errorf("decode entry: %w", err)
	}
	if w.V != EntryVersion {
		return fmt.Errorf("decode entry: version %d, want %d", w.V, EntryVersion)
	}
	if !w.Kind.valid() {
		return fmt.Errorf("decode entry: unknown kind %q", w.Kind)
	}
	t, err := time.Parse(time.RFC3339Nano, w.Time)
	if err != nil {
		return fmt.Errorf("decode entry: time: %w", err)
	}
	*e = Entry{
		Kind: w.Kind, Time: t, Agent: w.Agent, Session: w.Session, RequestID: w.RequestID,
		Rules: w.Rules, Decision: w.Decision, BundleDigest: w.BundleDigest,
		EngineVersion: w.EngineVersion, Status: w.Status, Postconditions: w.Postconditions,
		Approver: w.Approver, Signature: w.Signature, Signers: w.Signers, Message: w.Message,
		OldKey: w.OldKey, NewKey: w.NewKey,
		Statement: w.Attestation, Provider: w.Provider, Evidence: w.Evidence, Collateral: w.Collateral,
	}
	for _, p := range [...]struct {
		dst *Field
		src *Field
	}{{&e.Action, w.Action}, {&e.Instruction, w.Instruction}, {&e.Reasoning, w.Reasoning}, {&e.Result, w.Result}, {&e.State, w.State}} {
		if p.src != nil {
			*p.dst = *p.src
		}
	}
	if w.ActionSHA256 != nil {
		e.ActionSHA256 = *w.ActionSHA256
	}
	if w.Raw != nil {
		if w.Raw.Digest.IsZero() {
			return errors.New("decode entry: raw must be {sha256, size}")
		}
		e.Raw = *w.Raw
	}
	if w.Closes != nil {
		e.Closes = *w.Closes
	}
	if (w.Closes != nil) != (w.Kind == KindOutcome) {
		return errors.New("decode entry: closes must be present exactly on outcome entries")
	}
	if err := e.checkDigests(); err != nil {
		return fmt.Errorf("decode entry: %w", err)
	}
	return nil
}

// entryChecker checks that payloads are canonical entry encodings exactly
// as DecodeEntry does (the same parser, the same encoder, the same
// comparison), without keeping what it decodes: the strings it parses point
// into the payload and its buffers are reused, so checking allocates
// nothing in the common case. The verifier checks every entry with one per
// goroutine.
type entryChecker struct {
	p      wireParser
	w      wireEntry
	e      Entry
	fields [6]Field
	buf    []byte
}

func (c *entryChecker) check(b []byte) error {
	c.p = wireParser{b: b, alias: true, fields: c.fields[:0], scratch: c.p.scratch[:0]}
	c.w = wireEntry{Rules: c.w.Rules[:0], Postconditions: c.w.Postconditions[:0], Signers: c.w.Signers[:0]}
	if err := decodeInto(&c.p, &c.w, &c.e); err != nil {
		return err
	}
	var err error
	if c.buf, err = c.e.appendEncoding(c.buf[:0]); err != nil {
		return fmt.Errorf("decode entry: %w", err)
	}
	if !bytes.Equal(c.buf, b) {
		return fmt.Errorf("decode entry: %w", ErrNonCanonical)
	}
	return nil
}

// marshal is json.Marshal without HTML escaping, so that canonical action
// JSON embedded in a string keeps its bytes.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// strictUnmarshal decodes one JSON value, rejecting unknown members and
// trailing data.
func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	if _, err := dec.Token(); err == nil {
		return errors.New("trailing data")
	}
	return nil
}

// checkAttestation checks that the attestation members are all present on
// an attestation entry and absent from any other. What they hold is
// internal/attest's to check: the log only carries them.
func (e *Entry) checkAttestation() error {
	has := [...]bool{e.Statement != "", e.Provider != "", len(e.Evidence) > 0, len(e.Collateral) > 0}
	if e.Kind != KindAttestation {
		if has != [4]bool{} {
			return fmt.Errorf("attestation, provider, evidence or collateral set on a %s entry", e.Kind)
		}
		return nil
	}
	if has != [4]bool{true, true, true, true} {
		return errors.New("attestation entry: attestation, provider, evidence and collateral are all required")
	}
	return nil
}
