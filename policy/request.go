package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/rulelock/rulelock/internal/strictjson"
)

// Request is what a policy evaluates: one action with its context, in the
// shape of the request envelope (DESIGN.md §2).
type Request struct {
	Action      Action
	Agent       Agent
	Session     Session
	Instruction string
	Reasoning   string
	Now         time.Time // everything time-dependent comes from here
	// State answers the stateful helpers (session.count, global.total, ...);
	// nil scans Session.History for every scope (HistoryState).
	State State
}

// Action is an action in canonical form. Build one with NewAction.
type Action struct {
	Type   string         // the "type" field, matched exactly
	Fields map[string]any // the decoded action, "type" included (strictjson value types)
	JSON   []byte         // the RFC 8785 canonical encoding of Fields
	Hash   [32]byte       // SHA-256 of JSON: the action hash the log and approvals use
	hash   string         // Hash as "sha256:<hex>", computed once
}

// HashString is the action hash as "sha256:<hex>".
func (a *Action) HashString() string {
	if a.hash == "" {
		return "sha256:" + hex.EncodeToString(a.Hash[:])
	}
	return a.hash
}

// Agent is the authenticated agent. It comes from authentication, never from
// the action.
type Agent struct {
	ID    string
	Roles []string
	// Principal is who stands behind the agent (the team or person several
	// agents act for), from the configuration; "" when the agent stands alone.
	Principal string
}

// PrincipalID is the key of the agent's principal scope: Principal, or the
// agent's own id when it has none.
func (a *Agent) PrincipalID() string {
	if a.Principal != "" {
		return a.Principal
	}
	return a.ID
}

// Session is the agent's session: its id and the earlier actions in it.
type Session struct {
	ID      string
	History []HistoryEntry
}

// HistoryEntry is one earlier action of the session with what became of it.
type HistoryEntry struct {
	Action   map[string]any // the canonical action, "type" included
	Type     string         // Action["type"], kept apart for the session helpers (empty: looked up)
	Decision string         // allow, deny, require_approval, approved, rejected, expired
	Outcome  string         // success, failure, unknown, or "" while pending
	Time     time.Time
}

// allowed reports whether the entry's action was let through.
func (h *HistoryEntry) allowed() bool { return h.Decision == "allow" || h.Decision == "approved" }

// Errors of request decoding.
var (
	ErrBadRequest = errors.New("bad request")
)

// MaxTypeLen caps the length of an action type.
const MaxTypeLen = 128

// NewAction checks an action decoded by strictjson and computes its canonical
// form and hash. The type must be 1 to 128 characters from [A-Za-z0-9_.:-]:
// look-alikes (other cases are other types, but spaces, zero-width and
// non-ASCII letters are errors) never reach the rules.
func NewAction(v any) (Action, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return Action{}, fmt.Errorf("%w: action must be a JSON object", ErrBadRequest)
	}
	t, ok := m["type"].(string)
	if !ok {
		return Action{}, fmt.Errorf("%w: action.type must be a string", ErrBadRequest)
	}
	if err := checkTypeName(t); err != nil {
		return Action{}, err
	}
	canon, err := strictjson.Canonical(m)
	if err != nil {
		return Action{}, fmt.Errorf("%w: action: %v", ErrBadRequest, err)
	}
	a := Action{Type: t, Fields: m, JSON: canon, Hash: sha256.Sum256(canon)}
	a.hash = "sha256:" + hex.EncodeToString(a.Hash[:])
	return a, nil
}

func checkTypeName(t string) error {
	if t == "" || len(t) > MaxTypeLen {
		return fmt.Errorf("%w: action.type must be 1 to %d characters", ErrBadRequest, MaxTypeLen)
	}
	for i, r := range t {
		if r >= utf8.RuneSelf || !(isIdentChar(byte(r)) || r == '.' || r == ':' || r == '-') {
			return fmt.Errorf("%w: action.type %q: character %U at byte %d is not allowed (want A-Z a-z 0-9 _ . : -)", ErrBadRequest, t, r, i)
		}
	}
	return nil
}

// DecodeRequest reads a request envelope (DESIGN.md §2) strictly:
//
//	{"action": {"type": "transfer", ...}, "agent": {"id": "...", "roles": [...], "principal": "..."},
//	 "session": {"id": "...", "history": [{"action": {...}, "decision": "allow",
//	 "outcome": "success", "time": "..."}]}, "instruction": "...", "reasoning": "...",
//	 "now": "2026-11-22T10:00:00Z"}
//
// Unknown fields, wrong types and a missing action or now are errors.
func DecodeRequest(data []byte) (*Request, error) {
	v, err := strictjson.Decode(data, strictjson.Limits{})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	env, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: the request must be a JSON object", ErrBadRequest)
	}
	d := decoder{}
	r := &Request{}
	for _, k := range sortedKeys(env) {
		v := env[k]
		switch k {
		case "action":
			r.Action, err = NewAction(v)
			d.fail(err)
		case "agent":
			r.Agent = d.agent(v)
		case "session":
			r.Session = d.session(v)
		case "instruction":
			r.Instruction = d.str(v, "instruction")
		case "reasoning":
			r.Reasoning = d.str(v, "reasoning")
		case "now":
			r.Now = d.time(v, "now")
		default:
			d.failf("unknown field %q", k)
		}
	}
	if d.err == nil && r.Action.Fields == nil {
		d.failf("action is required")
	}
	if d.err == nil && r.Now.IsZero() {
		d.failf("now is required (RFC 3339, e.g. \"2026-11-22T10:00:00Z\")")
	}
	if d.err != nil {
		return nil, d.err
	}
	return r, nil
}

// decoder keeps the first error of a series of field conversions.
type decoder struct{ err error }

func (d *decoder) fail(err error) {
	if d.err == nil && err != nil {
		d.err = err
	}
}

func (d *decoder) failf(format string, args ...any) {
	d.fail(fmt.Errorf("%w: "+format, append([]any{ErrBadRequest}, args...)...))
}

func (d *decoder) str(v any, what string) string {
	s, ok := v.(string)
	if !ok {
		d.failf("%s must be a string", what)
	}
	return s
}

func (d *decoder) time(v any, what string) time.Time {
	s := d.str(v, what)
	if d.err != nil {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		d.failf("%s: %q is not an RFC 3339 time", what, s)
	}
	return t.UTC()
}

func (d *decoder) object(v any, what string) map[string]any {
	m, ok := v.(map[string]any)
	if !ok {
		d.failf("%s must be a JSON object", what)
	}
	return m
}

func (d *decoder) agent(v any) Agent {
	var a Agent
	m := d.object(v, "agent")
	for _, k := range sortedKeys(m) {
		v := m[k]
		switch k {
		case "id":
			a.ID = d.str(v, "agent.id")
		case "principal":
			a.Principal = d.str(v, "agent.principal")
		case "roles":
			l, ok := v.([]any)
			if !ok {
				d.failf("agent.roles must be a list of strings")
			}
			for _, r := range l {
				a.Roles = append(a.Roles, d.str(r, "agent.roles[]"))
			}
		default:
			d.failf("unknown field agent.%s", k)
		}
	}
	return a
}

func (d *decoder) session(v any) Session {
	var s Session
	m := d.object(v, "session")
	for _, k := range sortedKeys(m) {
		v := m[k]
		switch k {
		case "id":
			s.ID = d.str(v, "session.id")
		case "history":
			l, ok := v.([]any)
			if !ok {
				d.failf("session.history must be a list")
			}
			for _, h := range l {
				s.History = append(s.History, d.history(h))
			}
		default:
			d.failf("unknown field session.%s", k)
		}
	}
	return s
}

func (d *decoder) history(v any) HistoryEntry {
	var h HistoryEntry
	m := d.object(v, "session.history[]")
	for _, k := range sortedKeys(m) {
		v := m[k]
		switch k {
		case "action":
			a, err := NewAction(v)
			d.fail(err)
			h.Action, h.Type = a.Fields, a.Type
		case "decision":
			h.Decision = d.str(v, "session.history[].decision")
		case "outcome":
			h.Outcome = d.str(v, "session.history[].outcome")
		case "time":
			h.Time = d.time(v, "session.history[].time")
		default:
			d.failf("unknown field session.history[].%s", k)
		}
	}
	if d.err == nil && h.Action == nil {
		d.failf("session.history[].action is required")
	}
	if d.err == nil && h.Time.IsZero() {
		d.failf("session.history[].time is required")
	}
	return h
}
