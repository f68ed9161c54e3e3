package gateway

import (
	"context"
	"fmt"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/strictjson"
	"github.com/rulelock/rulelock/policy"
)

// LogReader reads the log back. *audit.Log implements it.
type LogReader interface {
	Size() int64
	ReadEntry(i int64) ([]byte, error)
	Blob(d audit.Digest) ([]byte, error)
}

// Rebuild derives the gateway's state from the log: every agent's history
// within the retention window, and the requests it knows. An allowed
// decision without an outcome — the gateway stopped between deciding and
// recording what happened — gets an `unknown` outcome entry now: it is never
// executed again, and its effect, if any, still counts against limits.
// Rebuild returns how many such decisions it closed.
func (g *Gateway) Rebuild(ctx context.Context, lr LogReader) (int, error) {
	size := lr.Size()
	open := map[string]*record{}
	var order []*record
	for i := int64(0); i < size; i++ {
		raw, err := lr.ReadEntry(i)
		if err != nil {
			return 0, fmt.Errorf("rebuild: entry %d: %w", i, err)
		}
		e, err := audit.DecodeEntry(raw)
		if err != nil {
			return 0, fmt.Errorf("rebuild: entry %d: %w", i, err)
		}
		switch e.Kind {
		case audit.KindDecision:
			rec, err := g.restoreDecision(lr, audit.Receipt{Index: i, LeafHash: tlog.RecordHash(raw)}, e)
			if err != nil && e.Decision == string(policy.Deny) {
				continue // a request refused before decoding (Reject): nothing to restore
			}
			if err != nil {
				return 0, fmt.Errorf("rebuild: entry %d: %w", i, err)
			}
			order = append(order, rec)
			if rec.Decision.Decision == policy.Allow {
				open[rec.ID] = rec
			}
		case audit.KindOutcome:
			rec, ok := open[e.RequestID]
			if !ok {
				continue
			}
			delete(open, e.RequestID)
			out := Outcome{Status: e.Status}
			rec.Outcome = &out
			r := audit.Receipt{Index: i, LeafHash: tlog.RecordHash(raw)}
			rec.OutEntry = &r
			g.agent(rec.Agent).setOutcome(rec.ID, historyOutcome(e.Status))
		}
	}
	closed := 0
	for _, rec := range order {
		if _, ok := open[rec.ID]; !ok {
			continue
		}
		out := Outcome{Status: StatusUnknown, Error: "the gateway stopped after deciding and before recording the outcome; not re-executed"}
		if _, err := g.recordOutcome(ctx, rec, out); err != nil {
			return closed, err
		}
		closed++
	}
	return closed, nil
}

func (g *Gateway) restoreDecision(lr LogReader, at audit.Receipt, e *audit.Entry) (*record, error) {
	text := e.Action.Text
	if text == "" && !e.Action.Digest.IsZero() {
		b, err := lr.Blob(e.Action.Digest)
		if err != nil {
			return nil, err
		}
		text = string(b)
	}
	v, err := strictjson.Decode([]byte(text), strictjson.Limits{})
	if err != nil {
		return nil, fmt.Errorf("action: %w", err)
	}
	act, err := policy.NewAction(v)
	if err != nil {
		return nil, err
	}
	d := &policy.Decision{Decision: policy.Effect(e.Decision), Reason: e.Message, ActionHash: act.HashString(), Policy: e.BundleDigest}
	for _, r := range e.Rules {
		d.Rules = append(d.Rules, policy.FiredRule{Name: r.Name, Outcome: policy.Outcome(r.Outcome), Message: r.Message, Shadow: r.Shadow})
	}
	rec := &record{ID: e.RequestID, Agent: e.Agent, Session: e.Session, Action: act, Decision: d, Entry: at, Time: e.Time}
	st := g.agent(e.Agent)
	st.mu.Lock()
	st.history = append(st.history, policy.HistoryEntry{Action: act.Fields, Decision: e.Decision, Time: e.Time})
	st.ids = append(st.ids, e.RequestID)
	st.mu.Unlock()
	g.mu.Lock()
	g.requests[rec.ID] = rec
	g.mu.Unlock()
	return rec, nil
}
