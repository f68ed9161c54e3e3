package gateway

import (
	"errors"

	"github.com/rulelock/rulelock/internal/approval"
	"github.com/rulelock/rulelock/policy"
)

// A reload of the configuration (cmd/rulelock: SIGHUP, rulelock reload)
// replaces who may act. The gateway's part is the approvers and the
// principals; the tokens are the API's (httpapi.TokenSet).

// registry returns the approvers in force, nil when none are configured.
func (g *Gateway) registry() *approval.Registry { return g.approvers.Load() }

// Approvers returns the approver registry in force (it changes with a
// reload), nil when none are configured.
func (g *Gateway) Approvers() *approval.Registry { return g.registry() }

// principals returns Config.Principals as the last reload set it.
func (g *Gateway) principals() func(string) (policy.Agent, bool) {
	if p := g.principalFn.Load(); p != nil {
		return *p
	}
	return nil
}

// ErrReloadApprovers: a reload cannot add the first approvers or remove
// the last: the gateway's approval queue exists from its start or not at
// all. It needs a restart.
var ErrReloadApprovers = errors.New("adding the first approvers or removing the last needs a restart")

// SetApprovers replaces the approvers. Their enrolled passkeys carry over
// (those that still fit the new configuration). An approval already given
// by an approver who is no longer configured no longer counts towards a
// quorum, and the removed approver's key verifies nothing more.
func (g *Gateway) SetApprovers(reg *approval.Registry) error {
	old := g.registry()
	if (old == nil) != (reg == nil) || g.approvals == nil && reg != nil {
		return ErrReloadApprovers
	}
	if reg == nil {
		return nil
	}
	reg.CarryPasskeys(old)
	g.approvals.m.SetRegistry(reg)
	g.approvers.Store(reg)
	return nil
}

// SetPrincipals replaces Config.Principals: a parked request whose agent
// was removed, or lost a role, is denied principal_revoked (logged) when
// its quorum is met.
func (g *Gateway) SetPrincipals(p func(string) (policy.Agent, bool)) {
	if p == nil {
		g.principalFn.Store(nil)
		return
	}
	g.principalFn.Store(&p)
}
