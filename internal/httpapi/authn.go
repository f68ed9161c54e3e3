package httpapi

import (
	"net/http"

	"github.com/rulelock/rulelock/policy"
)

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
