package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rulelock/rulelock/internal/ledger"
)

// Checkpoints is what the gateway needs of the checkpointer: how long the
// oldest log entry that no signed checkpoint covers has waited, 0 when
// every entry is covered. *audit.Checkpointer implements it.
type Checkpoints interface {
	Unsigned() time.Duration
}

// DefaultMaxUnsigned is Config.MaxUnsigned's default.
const DefaultMaxUnsigned = time.Minute

// ErrUnsigned: log entries have waited longer than Config.MaxUnsigned for a
// signed checkpoint (checkpoint signing is failing or stuck). Nothing new
// is decided, approved into execution or executed until signing catches
// up; then actions are accepted again, without a restart.
var ErrUnsigned = errors.New("audit log entries unsigned for longer than max_unsigned")

// ErrWitnessConflict: a witness refused a checkpoint because it has
// cosigned a larger or a different tree of this log (a rollback or a
// fork). The checkpointer publishes nothing more, and nothing new is
// decided or executed on a log whose history a witness contradicts, until
// an operator has looked (a restart).
var ErrWitnessConflict = errors.New("a witness has cosigned a larger or a different tree of this log")

// WitnessConflictMessage tells an agent why its action was refused after
// a witness conflict.
const WitnessConflictMessage = "a witness contradicts this audit log (rollback or fork): nothing was decided or executed"

// ErrUnattested: the platform's attestation of the engine failed, is
// overdue (past the longest allowed gap after the last attestation
// entry), or has not yet covered the bundle just activated
// (Config.Attest). Nothing new is decided, approved into execution or
// executed until an attestation succeeds; then actions are accepted again,
// without a restart.
var ErrUnattested = errors.New("the engine's attestation failed or is overdue")

// UnattestedMessage tells an agent why its action was refused while
// ErrUnattested holds.
const UnattestedMessage = "the platform's attestation of this gateway failed or is overdue (attestation.max_gap): nothing was decided or executed"

// UnsignedMessage tells an agent why its action was refused past
// Config.MaxUnsigned.
const UnsignedMessage = "checkpoint signing is behind: audit log entries have waited longer than log.max_unsigned for a signed checkpoint; nothing was decided or executed"

// Ready returns nil when the gateway would decide, record and execute a new
// action now, and otherwise why not: ErrNoPolicy (no policy is active),
// ErrFrozen (an approver froze the gateway: freeze.go),
// ErrUnavailable (the audit log failed and refuses appends until it is
// reopened), ErrWitnessConflict (a witness contradicts the log),
// ErrUnsigned (signing is behind by more than MaxUnsigned) or
// ErrUnattested (the attestation failed or is overdue).
// It is the one answer to "would an action fail?": /readyz reports it and
// Submit refuses with it. A ledger at its memory budget is not in it: new
// actions are then decided (denied memory_budget) and logged, and the
// ledger only leaves its budget as decisions sweep it.
func (g *Gateway) Ready() error {
	if g.Active().None {
		return ErrNoPolicy
	}
	if f := g.frozenNow(); f != nil {
		return fmt.Errorf("%w: frozen by %s since %s: %s", ErrFrozen, f.By, f.Since.Format(time.RFC3339), f.Reason)
	}
	return g.recording()
}

// frozenNow returns the freeze in force, nil when there is none. On a
// replica that believes itself frozen it reads the log first: another
// replica may have lifted it (a failed read leaves the freeze in force).
func (g *Gateway) frozenNow() *ledger.Freeze {
	if g.frozen.Load() != nil && g.cfg.Replicas != nil {
		_ = g.Follow(context.Background())
	}
	return g.frozen.Load()
}

// recording returns nil when the log takes entries, signing is within
// MaxUnsigned and the attestation covers a decision made now.
func (g *Gateway) recording() error {
	if err := g.attested(g.cfg.Now()); err != nil {
		return err
	}
	if f, ok := g.cfg.Log.(interface{ Err() error }); ok {
		if err := f.Err(); err != nil {
			return fmt.Errorf("%w: the audit log failed: %v", ErrUnavailable, err)
		}
	}
	if g.cfg.Checkpoints == nil {
		return nil
	}
	if w, ok := g.cfg.Checkpoints.(interface{ WitnessConflict() error }); ok {
		if err := w.WitnessConflict(); err != nil {
			return fmt.Errorf("%w: %v", ErrWitnessConflict, err)
		}
	}
	limit := g.cfg.MaxUnsigned
	if limit <= 0 {
		limit = DefaultMaxUnsigned
	}
	if u := g.cfg.Checkpoints.Unsigned(); u > limit {
		return fmt.Errorf("%w: the oldest entry has waited %s for a signed checkpoint (max_unsigned %s)", ErrUnsigned, u.Round(time.Second), limit)
	}
	return nil
}

// attested returns nil when there is no attestor or it covers a decision
// made at now, and otherwise ErrUnattested with the attestor's reason.
func (g *Gateway) attested(now time.Time) error {
	if g.cfg.Attest == nil {
		return nil
	}
	if err := g.cfg.Attest.Attested(now); err != nil {
		return fmt.Errorf("%w: %v", ErrUnattested, err)
	}
	return nil
}

// Refusal returns the stable code (for the HTTP API's error and the log's
// refusal entry) and the message of an error from Ready or Submit that
// refuses every new action, logged as a refusal: "no_policy" for
// ErrNoPolicy, "checkpoint_overdue" for ErrUnsigned, "witness_conflict"
// for ErrWitnessConflict, "attestation_failed" for ErrUnattested. It
// returns "" for any
// other error, a failed log included: its refusal could not be logged.
func Refusal(err error) (code, msg string) {
	switch {
	case errors.Is(err, ErrNoPolicy):
		return "no_policy", NoPolicyMessage
	case errors.Is(err, ErrUnsigned):
		return "checkpoint_overdue", UnsignedMessage
	case errors.Is(err, ErrWitnessConflict):
		return "witness_conflict", WitnessConflictMessage
	case errors.Is(err, ErrUnattested):
		return "attestation_failed", UnattestedMessage
	case errors.Is(err, ErrFrozen):
		return string(ledger.Frozen), FrozenMessage
	}
	return "", ""
}
