package httpapi

import (
	"net/http"

	"github.com/rulelock/rulelock/policy"
)

// AgentAuthenticatorSet is AgentAuthenticator over a TokenSet: it sees
// each reload.
func AgentAuthenticatorSet(set *TokenSet) func(token string, r *http.Request) (policy.Agent, bool) {
	return func(token string, r *http.Request) (policy.Agent, bool) {
		if token == "" {
			return policy.Agent{}, false
		}
		t := set.lookup(HashToken(token))
		if t == nil || t.Approver || t.Auditor || !t.presentedBy(r) {
			return policy.Agent{}, false
		}
		return t.Agent, true
	}
}

// AgentAuthenticator returns a lookup of agents by bearer token and
// request, for other front ends (the MCP proxy): a token bound to a client
// certificate authenticates only a request that presented it. Approver
// and auditor tokens never act as agents.
func AgentAuthenticator(tokens []Token) func(token string, r *http.Request) (policy.Agent, bool) {
	byHash := make(map[[32]byte]Token, len(tokens))
	for _, t := range tokens {
		if !t.Approver && !t.Auditor {
			byHash[t.SHA256] = t
		}
	}
	return func(token string, r *http.Request) (policy.Agent, bool) {
		if token == "" {
			return policy.Agent{}, false
		}
		t, ok := byHash[HashToken(token)]
		if !ok || !t.presentedBy(r) {
			return policy.Agent{}, false
		}
		return t.Agent, true
	}
}
