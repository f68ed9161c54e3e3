package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/freeze"
	"github.com/rulelock/rulelock/internal/ledger"
)

// The emergency stop.
//
// An approver freezes the gateway with a signed freeze statement
// (internal/freeze). From the moment its note entry is durable:
//
//   - every new action is refused, code frozen (Ready fails with
//     ErrFrozen): the HTTP API and the MCP proxy log the refusal as they
//     log every refusal, and nothing reaches an upstream. A decision that
//     passed Ready just before the freeze is denied frozen (a gateway
//     reason, which verify --replay accepts inside a freeze only);
//   - parked requests stay parked: approvals are refused (logged, code
//     frozen), rejections are accepted, expiry runs;
//   - an action allowed (or approved) before the freeze and not yet
//     executed is not executed: its outcome is recorded as error,
//     heldMessage. It is not executed at the unfreeze either: hours later,
//     on a state nobody approved, an action the operators stopped must not
//     run by itself (fail closed). The agent asks again after the unfreeze.
//
// The freeze is in the log, and the state is the ledger's fold of it, so it
// survives a restart. Lifting it takes Config.UnfreezeQuorum distinct
// approvers (default 2), each signing an unfreeze statement that names the
// freeze's id; each vote is a note entry, and the last one is followed by
// the unfreeze note listing the voters.

// ErrFrozen: the gateway is frozen; nothing new is decided or executed.
var ErrFrozen = errors.New("the gateway is frozen")

// FrozenMessage tells an agent why its action was refused during a freeze.
const FrozenMessage = "the gateway is frozen (emergency stop): nothing was decided or executed"

// heldMessage is the outcome of an allowed action a freeze stopped before
// its execution.
const heldMessage = "frozen: the gateway was frozen after this action was allowed and before it was executed; not executed, and it will not be"

// FreezeCodes are the codes of FreezeError.
var FreezeCodes = []string{"bad_statement", "unknown_approver", "bad_signature", "stale", "reused", "already_frozen", "not_frozen", "wrong_freeze", "duplicate_vote"}

// FreezeError is a refused freeze or unfreeze statement; the refusal is
// logged (a note, "freeze_refused <code>: <reason>").
type FreezeError struct {
	Code string // one of FreezeCodes
	Err  error
}

func (e *FreezeError) Error() string { return e.Err.Error() }

// NoteFreezeRefused opens the message of the note of a refused freeze or
// unfreeze statement.
const NoteFreezeRefused = "freeze_refused"

// FreezeState is the freeze in force (nil when none) and what lifting it
// takes.
type FreezeState struct {
	Freeze *ledger.Freeze `json:"freeze"`
	// UnfreezeQuorum is how many distinct approvers must sign for lifting it.
	UnfreezeQuorum int `json:"unfreeze_quorum"`
}

// Frozen returns the freeze in force, nil when there is none.
func (g *Gateway) Frozen() FreezeState {
	return FreezeState{Freeze: g.frozen.Load(), UnfreezeQuorum: g.cfg.UnfreezeQuorum}
}

// Freeze freezes the gateway on a signed freeze statement submitted by
// caller (an authenticated approver; the signer is who froze it).
func (g *Gateway) Freeze(ctx context.Context, caller string, signed []byte) (FreezeState, error) {
	who, st, err := g.openFreeze(signed, false)
	if err == nil {
		// With replicas: no decision anywhere while the freeze is
		// recorded, and the log read up to it (holdFreeze).
		h, herr := g.holdFreeze(ctx)
		if herr != nil {
			return g.Frozen(), fmt.Errorf("freeze: %w", herr)
		}
		defer release(h)
		g.stateMu.Lock()
		defer g.stateMu.Unlock()
		err = g.checkFreeze(st)
	}
	if err != nil {
		return g.Frozen(), g.refusedFreeze(ctx, caller, signed, err)
	}
	e := &audit.Entry{Kind: audit.KindNote, Time: g.cfg.Now().UTC(), Approver: who, EngineVersion: EngineVersion,
		Message: fmt.Sprintf("%s %s: %s", ledger.NoteFreeze, st.ID, st.Reason), Raw: audit.Field{Text: string(signed)}}
	if err := g.appendFreezeNote(ctx, e); err != nil {
		return g.Frozen(), err
	}
	return g.Frozen(), nil
}

// checkFreeze checks a freeze statement against the state; stateMu is held.
func (g *Gateway) checkFreeze(st freeze.Statement) error {
	now := g.cfg.Now()
	switch {
	case g.frozen.Load() != nil:
		return &FreezeError{"already_frozen", fmt.Errorf("the gateway is already frozen (%s)", g.frozen.Load().ID)}
	case g.ledger.FreezeUsed(st.ID):
		return &FreezeError{"reused", fmt.Errorf("freeze %s is already in the log: sign a new statement", st.ID)}
	case st.Time.Before(now.Add(-freeze.MaxSkew)) || st.Time.After(now.Add(freeze.MaxSkew)):
		return &FreezeError{"stale", fmt.Errorf("the statement was signed at %s, more than %s from the gateway's clock", st.Time.Format("2006-01-02T15:04:05Z"), freeze.MaxSkew)}
	}
	return nil
}

// Unfreeze counts a signed unfreeze statement submitted by caller; the vote
// that reaches Config.UnfreezeQuorum distinct approvers lifts the freeze.
func (g *Gateway) Unfreeze(ctx context.Context, caller string, signed []byte) (FreezeState, error) {
	who, st, err := g.openFreeze(signed, true)
	if err != nil {
		return g.Frozen(), g.refusedFreeze(ctx, caller, signed, err)
	}
	// With replicas: the votes on every replica counted in one order.
	h, err := g.holdFreeze(ctx)
	if err != nil {
		return g.Frozen(), fmt.Errorf("unfreeze: %w", err)
	}
	defer release(h)
	g.stateMu.Lock()
	defer g.stateMu.Unlock()
	f := g.frozen.Load()
	switch {
	case f == nil:
		err = &FreezeError{"not_frozen", errors.New("the gateway is not frozen")}
	case f.ID != st.ID:
		err = &FreezeError{"wrong_freeze", fmt.Errorf("the statement lifts freeze %s; the freeze in force is %s", st.ID, f.ID)}
	case slices.Contains(f.Votes, who):
		err = &FreezeError{"duplicate_vote", fmt.Errorf("%s has already signed for lifting freeze %s: the same approver twice is not two", who, f.ID)}
	}
	if err != nil {
		return g.Frozen(), g.refusedFreeze(ctx, caller, signed, err)
	}
	e := &audit.Entry{Kind: audit.KindNote, Time: g.cfg.Now().UTC(), Approver: who, EngineVersion: EngineVersion,
		Message: fmt.Sprintf("%s %s", ledger.NoteUnfreezeVote, f.ID), Raw: audit.Field{Text: string(signed)}}
	if err := g.appendFreezeNote(ctx, e); err != nil {
		return g.Frozen(), err
	}
	if f = g.frozen.Load(); len(f.Votes) < g.cfg.UnfreezeQuorum {
		return g.Frozen(), nil
	}
	e = &audit.Entry{Kind: audit.KindNote, Time: g.cfg.Now().UTC(), EngineVersion: EngineVersion, Signers: f.Votes,
		Message: fmt.Sprintf("%s %s", ledger.NoteUnfreeze, f.ID)}
	if err := g.appendFreezeNote(ctx, e); err != nil {
		return g.Frozen(), err
	}
	return g.Frozen(), nil
}

// appendFreezeNote appends e durably and folds it; stateMu is held, so the
// note follows every decision queued before it.
func (g *Gateway) appendFreezeNote(ctx context.Context, e *audit.Entry) error {
	if _, err := g.cfg.Log.Append(context.WithoutCancel(ctx), e); err != nil {
		return fmt.Errorf("record %s: %w: %v", e.Message, ErrUnavailable, err)
	}
	g.ledger.Apply(e, nil)
	g.frozen.Store(g.ledger.Freeze())
	return nil
}

// openFreeze verifies a signed freeze (lift false) or unfreeze statement.
func (g *Gateway) openFreeze(signed []byte, lift bool) (string, freeze.Statement, error) {
	reg := g.registry()
	if reg == nil {
		return "", freeze.Statement{}, ErrNoApprovals
	}
	who, text, err := reg.OpenNote(signed)
	if err != nil {
		code := approval.Code(err)
		if code == "" {
			code = "bad_statement"
		}
		return "", freeze.Statement{}, &FreezeError{code, err}
	}
	st, err := freeze.Parse(text)
	switch {
	case err != nil:
		return who, st, &FreezeError{"bad_statement", err}
	case st.Lift && !lift:
		return who, st, &FreezeError{"bad_statement", errors.New("an unfreeze statement, submitted as a freeze")}
	case !st.Lift && lift:
		return who, st, &FreezeError{"bad_statement", errors.New("a freeze statement, submitted as an unfreeze")}
	}
	return who, st, nil
}

// refusedFreeze logs a refused statement (a *FreezeError) and returns err,
// or ErrUnavailable when the log did not take the note.
func (g *Gateway) refusedFreeze(ctx context.Context, caller string, signed []byte, err error) error {
	var fe *FreezeError
	if !errors.As(err, &fe) {
		return err
	}
	e := &audit.Entry{Kind: audit.KindNote, Time: g.cfg.Now().UTC(), Approver: caller, EngineVersion: EngineVersion,
		Message: fmt.Sprintf("%s %s: %v", NoteFreezeRefused, fe.Code, fe.Err)}
	if len(signed) > 0 {
		e.Raw = audit.Field{Text: string(signed)}
	}
	if _, lerr := g.cfg.Log.Append(context.WithoutCancel(ctx), e); lerr != nil {
		return fmt.Errorf("record refused freeze: %w: %v", ErrUnavailable, lerr)
	}
	return err
}
