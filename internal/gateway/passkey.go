package gateway

import (
	"context"
	"fmt"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/internal/passkey"
)

// EnrolPasskey records c, an approver's newly enrolled passkey, as a note
// entry (passkey.EnrolmentNote) and then lets it sign that approver's
// approvals. The entry is durable before the passkey counts, so every
// passkey approval the log holds is preceded by the enrolment that
// verify --replay checks it with; Rebuild restores the passkeys from
// those entries.
func (g *Gateway) EnrolPasskey(ctx context.Context, c passkey.Credential) error {
	if g.approvals == nil {
		return ErrNoApprovals
	}
	reg := g.registry()
	if err := reg.CheckPasskey(c); err != nil {
		return fmt.Errorf("enrol passkey: %w", err)
	}
	e := &audit.Entry{Kind: audit.KindNote, Time: g.cfg.Now().UTC(), Approver: c.Approver, EngineVersion: EngineVersion,
		Message: passkey.EnrolmentNote(c)}
	if _, err := g.cfg.Log.Append(context.WithoutCancel(ctx), e); err != nil {
		return fmt.Errorf("record passkey enrolment: %w: %v", ErrUnavailable, err)
	}
	return reg.AddPasskey(c)
}

// Note appends a note entry attributed to caller (who may be "") about
// request id (when it is a well-formed one), saying message. The console
// records its refusals with it.
func (g *Gateway) Note(ctx context.Context, caller, id, message string) error {
	e := &audit.Entry{Kind: audit.KindNote, Time: g.cfg.Now().UTC(), Approver: caller, EngineVersion: EngineVersion, Message: message}
	if approval.ValidID(id) {
		e.RequestID = id
	}
	if _, err := g.cfg.Log.Append(context.WithoutCancel(ctx), e); err != nil {
		return fmt.Errorf("record note: %w: %v", ErrUnavailable, err)
	}
	return nil
}

// restorePasskey lets the passkey a note entry e enrolled count again, at
// start. One that no longer fits the config (its approver removed, a pin
// that excludes it) does not count: fail closed, the gateway still starts.
func (g *Gateway) restorePasskey(e *audit.Entry) {
	reg := g.registry()
	if reg == nil {
		return
	}
	c, ok, err := passkey.ParseEnrolmentNote(e.Message)
	if !ok || err != nil {
		return
	}
	reg.AddPasskey(c)
}
