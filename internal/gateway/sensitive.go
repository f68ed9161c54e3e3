package gateway

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/rulelock/rulelock/audit"
	"github.com/rulelock/rulelock/internal/ledger"
	"github.com/rulelock/rulelock/internal/strictjson"
	"github.com/rulelock/rulelock/policy"
)

// Sensitive members of an action.
//
// A member the policy's schema declares sensitive (`card: string
// sensitive`), or that Config.Sensitive names for the action type (an MCP
// tool's argument), never reaches the log in plaintext. The policy
// evaluates the plaintext and the executor receives it; the log, every
// API response and every approver see the logged form: the canonical
// action with each sensitive member's value replaced by an
// audit.Commitment object. The decision's action hash, the entry's
// action_sha256 and the hash approvers sign are all the SHA-256 of the
// logged form, so `verify` checks it like any action's, and an approval
// binds the values too (the commitments bind them).

// logged is the action as the log holds it when it has sensitive members.
type logged struct {
	JSON  []byte
	Hash  [32]byte
	Names []string     // the members that are commitments, sorted (ledger.DecisionState.Sealed)
	Salts []audit.Salt // written with the first entry that holds the commitments
}

func (l *logged) hashString() string { return "sha256:" + hex.EncodeToString(l.Hash[:]) }

// sensitive names the members of actionType that are kept out of the log
// under policy p: those its schema declares and those the configuration
// adds, sorted.
func (g *Gateway) sensitive(p *policy.Policy, actionType string) []string {
	names := p.Sensitive(actionType)
	var extra []string
	if g.cfg.Sensitive != nil {
		extra = g.cfg.Sensitive(actionType)
	}
	if len(extra) == 0 {
		return names
	}
	return slices.Compact(slices.Sorted(slices.Values(append(slices.Clip(names), extra...))))
}

// seal returns the logged form of act, with a fresh salt per sensitive
// value, or nil when act has no sensitive member.
func seal(act *policy.Action, names []string) (*logged, error) {
	var fields map[string]any
	var salts []audit.Salt
	var sealed []string
	for _, name := range names {
		v, ok := act.Fields[name]
		if !ok || name == "type" {
			continue
		}
		value, err := strictjson.Canonical(v)
		if err != nil {
			return nil, fmt.Errorf("seal %s: %w", name, err)
		}
		c, salt, err := audit.Commit(rand.Reader, value)
		if err != nil {
			return nil, fmt.Errorf("seal %s: %w", name, err)
		}
		if fields == nil {
			fields = maps.Clone(act.Fields)
		}
		fields[name] = c.Value()
		salts = append(salts, salt)
		sealed = append(sealed, name)
	}
	if fields == nil {
		return nil, nil
	}
	b, err := strictjson.Canonical(fields)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return &logged{JSON: b, Hash: sha256.Sum256(b), Names: sealed, Salts: salts}, nil
}

// decisionState is the encoded ledger.DecisionState of req's decision:
// the agent's (Gateway.stateJSON), for a call through the MCP proxy the
// tool definition it was decided against, and, when the action has
// sensitive members, their names, so that the entry says which members are
// commitments and a value an agent sent that looks like one is never taken
// for one.
func (g *Gateway) decisionState(req *Request) string {
	if req.logged == nil && req.Tool == nil {
		return g.stateJSON(req.Agent)
	}
	roles := req.Agent.Roles
	if roles == nil {
		roles = []string{}
	}
	ds := ledger.DecisionState{AgentRoles: roles, Principal: req.Agent.Principal, Tool: req.Tool}
	if req.logged != nil {
		ds.Sealed = req.logged.Names
	}
	b, _ := json.Marshal(ds)
	return string(b)
}

// loggedAction is what the log and the API show of req's action: its
// logged form and hash.
func (req *Request) loggedAction() ([]byte, [32]byte) {
	if req.logged != nil {
		return req.logged.JSON, req.logged.Hash
	}
	return req.Action.JSON, req.Action.Hash
}
