package gateway

import (
	"fmt"
	"time"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/strictjson"
	"github.com/rulelock/rulelock/policy"
)

// ReplayOptions are the gateway settings a replay must share with the
// gateway that wrote the log (zero: the gateway's defaults).
type ReplayOptions struct {
	Retention  time.Duration
	MaxHistory int
}

// Replayed is one recorded decision with the request as the gateway
// evaluated it: the recorded action, agent (id and roles), session,
// instruction and reasoning, now = the entry's time, and the agent's history
// derived from the entries before it, exactly as the gateway derives it.
type Replayed struct {
	Index   int64
	Entry   *audit.Entry
	Request *policy.Request
	// HistoryLimit is set when the gateway denied without evaluating
	// because the agent's history was full.
	HistoryLimit bool
}

// Replay walks the log in order and calls fn for every decision that was
// evaluated (not for requests refused before decoding, and not for the
// re-evaluation of an approved request, which fn sees as Entry.Decision
// "approved" only if wantApproved).
func Replay(lr LogReader, opts ReplayOptions, wantApproved bool, fn func(*Replayed) error) error {
	if opts.Retention <= 0 {
		opts.Retention = 7 * 24 * time.Hour
	}
	if opts.MaxHistory <= 0 {
		opts.MaxHistory = 1000
	}
	agents := map[string]*agentState{}
	for i := int64(0); i < lr.Size(); i++ {
		raw, err := lr.ReadEntry(i)
		if err != nil {
			return fmt.Errorf("replay: entry %d: %w", i, err)
		}
		e, err := audit.DecodeEntry(raw)
		if err != nil {
			return fmt.Errorf("replay: entry %d: %w", i, err)
		}
		switch e.Kind {
		case audit.KindOutcome:
			if st := agents[e.Agent]; st != nil {
				st.setOutcome(e.RequestID, historyOutcome(e.Status))
			}
			continue
		case audit.KindDecision:
		default:
			continue
		}
		text := e.Action.Text
		if text == "" && !e.Action.Digest.IsZero() {
			b, err := lr.Blob(e.Action.Digest)
			if err != nil {
				return fmt.Errorf("replay: entry %d: action: %w", i, err)
			}
			text = string(b)
		}
		v, err := strictjson.Decode([]byte(text), strictjson.Limits{})
		if err != nil {
			continue // refused before decoding: nothing was evaluated
		}
		act, err := policy.NewAction(v)
		if err != nil {
			continue
		}
		ds, err := decodeDecisionState(e.State)
		if err != nil {
			return fmt.Errorf("replay: entry %d: state: %w", i, err)
		}
		st := agents[e.Agent]
		if st == nil {
			st = &agentState{}
			agents[e.Agent] = st
		}
		st.prune(e.Time.Add(-opts.Retention))
		r := &Replayed{Index: i, Entry: e, HistoryLimit: len(st.history) >= opts.MaxHistory, Request: &policy.Request{
			Action:      act,
			Agent:       policy.Agent{ID: e.Agent, Roles: ds.AgentRoles},
			Session:     policy.Session{ID: e.Session, History: append([]policy.HistoryEntry(nil), st.history...)},
			Instruction: e.Instruction.Text,
			Reasoning:   e.Reasoning.Text,
			Now:         e.Time,
		}}
		if e.Decision != "approved" || wantApproved {
			if err := fn(r); err != nil {
				return err
			}
		}
		st.history = append(st.history, policy.HistoryEntry{Action: act.Fields, Decision: e.Decision, Time: e.Time})
		st.ids = append(st.ids, e.RequestID)
	}
	return nil
}
