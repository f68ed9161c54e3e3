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
	Now        func() time.Time // default time.Now
}

// A Recorder writes attestation entries for a running gateway: it holds
// the per-boot key (generated here, inside the attested environment, and
// never written anywhere) and the chain of statements.
type Recorder struct {
	p      Provider
	opts   RecorderOptions
	signer note.Signer
	vkey   string

	mu     sync.Mutex
	prev   string
	bundle string
}

// NewRecorder generates the per-boot key and, when p is a Measurer,
// measures the engine and then the key into it; when p is also a Sealer the
// key's seed is sealed to that state and the key in use is the one the
// platform unseals.
func NewRecorder(p Provider, opts RecorderOptions) (*Recorder, error) {
	if opts.Now == nil {
		opts.Now = time.Now
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
	return &Recorder{p: p, opts: opts, signer: signer, vkey: vkey, prev: opts.Prev}, nil
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
// Measurer) and appends an attestation entry naming it. An error means the
// bundle is not attested: the caller must not decide under it.
func (r *Recorder) Activated(ctx context.Context, log Appender, bundle string) error {
	if m, ok := r.p.(Measurer); ok {
		if err := m.Measure(EventBundle, bundle); err != nil {
			return err
		}
	}
	r.mu.Lock()
	r.bundle = bundle
	r.mu.Unlock()
	return r.Record(ctx, log)
}

// Record appends an attestation entry over the current state: at start,
// before any decision, and periodically.
func (r *Recorder) Record(ctx context.Context, log Appender) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := &Statement{Origin: r.opts.Origin, Engine: r.opts.Engine, Bundle: r.bundle,
		Threshold: r.opts.Threshold, Signers: sortedSigners(r.opts.Signers), Key: r.vkey, Prev: r.prev}
	if msg := r.opts.Checkpoint(); msg != nil {
		cp, err := checkpointOf(msg)
		if err != nil {
			return err
		}
		s.Size, s.Root = cp.Size, cp.Root
	}
	text, err := s.Marshal()
	if err != nil {
		return err
	}
	ev, err := r.p.Attest(sha256.Sum256(text))
	if err != nil {
		return fmt.Errorf("attest: %w", err)
	}
	if _, err := log.Append(ctx, &audit.Entry{Kind: audit.KindAttestation, Time: r.opts.Now().UTC(),
		Statement: string(text), Provider: ev.Provider, Evidence: ev.Report, Collateral: ev.Collateral}); err != nil {
		return fmt.Errorf("attest: record: %w", err)
	}
	sum := sha256.Sum256(text)
	r.prev = hex.EncodeToString(sum[:])
	return nil
}

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
// attestation entry among entries (encoded, in log order), "" when there is
// none: a restarted gateway continues the chain from it.
func LastStatement(entries func(yield func([]byte) bool)) (string, error) {
	last := ""
	var err error
	entries(func(b []byte) bool {
		var e *audit.Entry
		if e, err = audit.DecodeVerifiedEntry(b); err != nil {
			return false
		}
		if e.Kind == audit.KindAttestation {
			sum := sha256.Sum256([]byte(e.Statement))
			last = hex.EncodeToString(sum[:])
		}
		return true
	})
	return last, err
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
