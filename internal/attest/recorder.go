package attest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/rulelock/rulelock/audit"
)

// Appender is where a Recorder writes attestation entries: the audit log.
type Appender interface {
	Append(ctx context.Context, e *audit.Entry) (audit.Receipt, error)
}

// Measurer is a provider that the engine measures its events into (the
// TPM); confidential VMs measure the image themselves and need none.
type Measurer interface {
	Measure(kind EventKind, data string) error
}

// Sealer is a provider that can seal a secret to the measured state.
type Sealer interface {
	Seal(secret []byte) (SealedKey, error)
	Unseal(SealedKey) ([]byte, error)
}

// RecorderOptions configure NewRecorder.
type RecorderOptions struct {
	Origin    string   // the log's origin; the per-boot key is named Origin + "/boot"
	Engine    string   // sha256:<hex> of the running binary (EngineDigest)
	Signers   []string // the bundle signers' verifier keys
	Threshold int      // M of Signers
	// Prev is the hex SHA-256 of the last attestation entry's statement
	// already in the log (LastStatement), "" when there is none.
	Prev string
	// Checkpoint returns the latest signed checkpoint note, nil when none
	// (audit.Checkpointer.Latest).
	Checkpoint func() []byte
	// MaxGap is the longest a decision may follow the last attestation
	// entry (Attested): at most the verifier policy's max-gap. Default
	// DefaultMaxGap.
	MaxGap time.Duration
	Now    func() time.Time // default time.Now
}

// DefaultMaxGap is RecorderOptions.MaxGap's default.
const DefaultMaxGap = 2 * time.Hour

// A Recorder writes attestation entries for a running gateway: it holds
// the per-boot key (generated here, inside the attested environment, and
// never written anywhere) and the chain of statements, and it says whether
// a decision made now is covered by an attestation (Attested).
//
// Its gate is closed from the moment an attestation fails, or a bundle is
// activated, until the next attestation entry is logged; and past MaxGap
// after the last one, whatever the reason (a platform that hangs). A
// failure closes it at once, even within MaxGap: evidence the platform
// refuses to give now says nothing good of the state it attested before.
type Recorder struct {
	p      Provider
	opts   RecorderOptions
	signer note.Signer
	vkey   string

	gate   atomic.Pointer[gate]
	failed chan struct{} // signalled on each failure (Failed)

	mu       sync.Mutex // one attestation at a time
	prev     string
	bundle   string
	measured bool // bundle's event is measured (or needs none)
	failing  bool // the last attestation failed (its failure is noted)
}

// gate is what Attested reads: the time of the last attestation entry,
// or why no decision is covered.
type gate struct {
	last time.Time
	err  error
}

// NewRecorder generates the per-boot key and, when p is a Measurer,
// measures the engine and then the key into it; when p is also a Sealer the
// key's seed is sealed to that state and the key in use is the one the
// platform unseals. Its gate is closed until the first Record.
func NewRecorder(p Provider, opts RecorderOptions) (*Recorder, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxGap <= 0 {
		opts.MaxGap = DefaultMaxGap
	}
	if opts.Checkpoint == nil {
		return nil, errors.New("attest: a recorder needs the latest checkpoint")
	}
	seed := make([]byte, ed25519.SeedSize)
	if _, err := io.ReadFull(rand.Reader, seed); err != nil {
		return nil, err
	}
	vkey, err := note.NewEd25519VerifierKey(opts.Origin+"/boot", ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey))
	if err != nil {
		return nil, fmt.Errorf("attest: per-boot key: %w", err)
	}
	if m, ok := p.(Measurer); ok {
		if err := m.Measure(EventEngine, opts.Engine); err != nil {
			return nil, err
		}
		if err := m.Measure(EventKey, vkey); err != nil {
			return nil, err
		}
	}
	if s, ok := p.(Sealer); ok {
		sealed, err := s.Seal(seed)
		if err != nil {
			return nil, err
		}
		if seed, err = s.Unseal(sealed); err != nil {
			return nil, err
		}
	}
	signer, err := newSigner(opts.Origin+"/boot", seed, vkey)
	if err != nil {
		return nil, err
	}
	r := &Recorder{p: p, opts: opts, signer: signer, vkey: vkey, prev: opts.Prev, measured: true, failed: make(chan struct{}, 1)}
	r.gate.Store(&gate{err: errors.New("not attested yet")})
	return r, nil
}

// newSigner returns a note signer for an Ed25519 seed, checked against the
// verifier key it must match.
func newSigner(name string, seed []byte, vkey string) (note.Signer, error) {
	priv := ed25519.NewKeyFromSeed(seed)
	skey := "PRIVATE+KEY+" + name + "+" + vkeyHash(vkey) + "+" + encodeKey(priv.Seed())
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, fmt.Errorf("attest: per-boot key: %w", err)
	}
	return s, nil
}

// Signer returns the per-boot key: add it to the checkpointer's Cosigners.
func (r *Recorder) Signer() note.Signer { return r.signer }

// Key returns the per-boot key's verifier key.
func (r *Recorder) Key() string { return r.vkey }

// Activated measures a bundle just activated (when the provider is a
// Measurer) and appends an attestation entry naming it. Until that entry
// is logged Attested refuses; on an error a later Record (the retry)
// measures and attests the bundle.
func (r *Recorder) Activated(ctx context.Context, log Appender, bundle string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, measures := r.p.(Measurer)
	r.bundle, r.measured = bundle, !measures
	r.gate.Store(&gate{err: fmt.Errorf("bundle %s is activated and not yet attested", bundle)})
	return r.record(ctx, log)
}

// Record appends an attestation entry over the current state: at start,
// before any decision, periodically, and to retry after a failure. An
// error closes the gate (Attested) until a Record succeeds; the first
// failure after a success is also logged as a note entry
// ("attestation_failed: ..."), when the log takes it.
func (r *Recorder) Record(ctx context.Context, log Appender) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.record(ctx, log)
}

// NoteFailed is the first word of the message of the note entry that
// records an attestation failure.
const NoteFailed = "attestation_failed"

func (r *Recorder) record(ctx context.Context, log Appender) error {
	t, err := r.attest(ctx, log)
	if err != nil {
		err = fmt.Errorf("attest: %w", err)
		if !r.failing {
			// The first failure of a stretch: a note, so the log itself
			// says why the refusals that follow were made. Best effort:
			// the gate is closed either way.
			log.Append(ctx, &audit.Entry{Kind: audit.KindNote, Time: r.opts.Now().UTC(), Message: NoteFailed + ": " + err.Error()})
		}
		r.failing = true
		r.gate.Store(&gate{err: err})
		select {
		case r.failed <- struct{}{}:
		default:
		}
		return err
	}
	r.failing = false
	r.gate.Store(&gate{last: t})
	return nil
}

// attest measures a pending bundle, asks the platform for evidence over
// the current statement, checks it as a verifier will (when the provider
// is a Checker) and appends the attestation entry. It returns the entry's
// time.
func (r *Recorder) attest(ctx context.Context, log Appender) (time.Time, error) {
	if !r.measured {
		if err := r.p.(Measurer).Measure(EventBundle, r.bundle); err != nil {
			return time.Time{}, err
		}
		r.measured = true
	}
	s := &Statement{Origin: r.opts.Origin, Engine: r.opts.Engine, Bundle: r.bundle,
		Threshold: r.opts.Threshold, Signers: sortedSigners(r.opts.Signers), Key: r.vkey, Prev: r.prev}
	if msg := r.opts.Checkpoint(); msg != nil {
		cp, err := checkpointOf(msg)
		if err != nil {
			return time.Time{}, err
		}
		s.Size, s.Root = cp.Size, cp.Root
	}
	text, err := s.Marshal()
	if err != nil {
		return time.Time{}, err
	}
	sum := sha256.Sum256(text)
	ev, err := r.p.Attest(sum)
	if err != nil {
		return time.Time{}, err
	}
	if c, ok := r.p.(Checker); ok {
		// Evidence a verifier would refuse (a PCR extended behind the
		// engine's back, a reset TPM) is not logged: it would make the
		// whole log unverifiable, and the gate stays closed.
		if err := c.Check(ev, s); err != nil {
			return time.Time{}, fmt.Errorf("own evidence refused: %w", err)
		}
	}
	now := r.opts.Now().UTC()
	if _, err := log.Append(ctx, &audit.Entry{Kind: audit.KindAttestation, Time: now,
		Statement: string(text), Provider: ev.Provider, Evidence: ev.Report, Collateral: ev.Collateral}); err != nil {
		return time.Time{}, fmt.Errorf("record: %w", err)
	}
	r.prev = hex.EncodeToString(sum[:])
	return now, nil
}

// Checker is a provider that checks its own evidence as a verifier would,
// with itself as the only root (TPM.Check).
type Checker interface {
	Check(ev Evidence, stmt *Statement) error
}

// Attested returns nil when a decision made at now is covered: the last
// attestation entry attested the state in force, nothing failed since, and
// now is at most MaxGap after that entry's time (the time a verifier
// measures the gap from). It is cheap: one atomic load.
func (r *Recorder) Attested(now time.Time) error {
	g := r.gate.Load()
	if g.err != nil {
		return g.err
	}
	if gap := now.Sub(g.last); gap > r.opts.MaxGap {
		return fmt.Errorf("the last attestation entry is %s old, over attestation.max_gap %s", gap.Round(time.Millisecond), r.opts.MaxGap)
	}
	return nil
}

// Last returns the time of the last attestation entry while the gate is
// open, and why it is closed otherwise.
func (r *Recorder) Last() (time.Time, error) {
	g := r.gate.Load()
	return g.last, g.err
}

// Failed is signalled (without blocking, at most one pending) each time an
// attestation fails: a retry loop wakes on it.
func (r *Recorder) Failed() <-chan struct{} { return r.failed }

// checkpointOf reads a signed checkpoint note's body without verifying it
// (it is the log's own latest).
func checkpointOf(msg []byte) (audit.Checkpoint, error) {
	_, err := note.Open(msg, note.VerifierList())
	var uv *note.UnverifiedNoteError
	if !errors.As(err, &uv) {
		return audit.Checkpoint{}, fmt.Errorf("attest: latest checkpoint: %v", err)
	}
	return audit.ParseCheckpoint([]byte(uv.Note.Text))
}

// EngineDigest returns sha256:<hex> of the running binary.
func EngineDigest() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("attest: engine digest: %w", err)
	}
	f, err := os.Open(exe)
	if err != nil {
		return "", fmt.Errorf("attest: engine digest: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("attest: engine digest: %w", err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// LastStatement returns the hex SHA-256 of the statement of the last
// attestation entry in the log r, "" when there is none: a restarted
// gateway continues the chain from it. It reads the log backwards from its
// end and stops at that entry, so its cost is the entries after the last
// attestation entry (with attestation on, at most an interval's worth), not
// the log's size; only a log that has none is read whole.
func LastStatement(r EntryReader) (string, error) {
	const batch = 256
	for hi := r.Size(); hi > 0; hi -= batch {
		lo := max(hi-batch, 0)
		bs, err := r.ReadEntries(lo, hi)
		if err != nil {
			return "", err
		}
		for j := len(bs) - 1; j >= 0; j-- {
			e, err := audit.DecodeVerifiedEntry(bs[j])
			if err != nil {
				return "", fmt.Errorf("entry %d: %w", lo+int64(j), err)
			}
			if e.Kind == audit.KindAttestation {
				sum := sha256.Sum256([]byte(e.Statement))
				return hex.EncodeToString(sum[:]), nil
			}
		}
	}
	return "", nil
}

// vkeyHash returns the hash part of a verifier key name+hash+key.
func vkeyHash(vkey string) string {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return ""
	}
	return parts[1]
}

// encodeKey encodes an Ed25519 seed as note's private key data.
func encodeKey(seed []byte) string {
	return base64.StdEncoding.EncodeToString(append([]byte{1}, seed...))
}
